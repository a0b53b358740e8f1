"""Geometry of volume-scale prediction: boxes, the network's footprint, and the block grid.

All coordinates are voxels in data order ``(z, y, x)``; a 2-D network acts on single
z-slices (its footprint has depth 1 in z). A network evaluated on an input patch
``patch`` yields ``out`` outputs per axis spaced ``strides`` apart; the first is
centred ``offsets`` voxels into the patch. ``border = patch - (out - 1) * strides - 1``
input voxels around the outputs are context: an output tile ``[a, b)`` needs the input
``[a - offsets, b + border - offsets)`` (see :mod:`elektronn2.neuromancer.dense`).

Exact tiling evaluates the patches of every output shift ``s < strides`` at bases spaced
a multiple of the net's ``phase`` apart: the least common multiple of the strides inside
the net (max-fragment-pooled layers aside). A plain strided net has phase = strides, but a
U-Net pools inside and has output stride 1: its outputs depend on where patches start
modulo the phase, so patches, and blocks, start on that grid. Every output voxel then
gets the same value whatever the block layout.

Values here are small immutable dataclasses whose operations return new values.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..errors import ShapeError

DATA_AXES = ('z', 'y', 'x')


def _ints(values: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class Box:
    """The half-open box ``[lo, hi)`` (one entry per axis, data order)."""
    lo: tuple[int, ...]
    hi: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, 'lo', _ints(self.lo))
        object.__setattr__(self, 'hi', _ints(self.hi))
        if len(self.lo) != len(self.hi) or any(b < a for a, b in zip(self.lo, self.hi)):
            raise ShapeError(f"Box lo={self.lo}, hi={self.hi}: needs one lo and one hi per "
                             f"axis with hi >= lo")

    @classmethod
    def from_shape(cls, shape: Sequence[int], lo: Sequence[int] | None = None) -> Box:
        lo = (0,) * len(shape) if lo is None else _ints(lo)
        return cls(lo, tuple(a + s for a, s in zip(lo, shape)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.lo, self.hi))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def grow(self, before: Sequence[int], after: Sequence[int]) -> Box:
        """The box extended by ``before`` below lo and ``after`` above hi."""
        return Box(tuple(lo - n for lo, n in zip(self.lo, before)),
                   tuple(hi + n for hi, n in zip(self.hi, after)))

    def contains(self, other: Box) -> bool:
        return all(a <= c and d <= b for a, b, c, d in zip(self.lo, self.hi, other.lo, other.hi))

    def slices_in(self, outer: Box) -> tuple[slice, ...]:
        """Index of this box within an array covering ``outer``."""
        if not outer.contains(self):
            raise ShapeError(f"{self} does not lie inside {outer}")
        return tuple(slice(lo - o, hi - o) for lo, hi, o in zip(self.lo, self.hi, outer.lo))

    def __str__(self) -> str:
        return f"[{', '.join(f'{lo}:{hi}' for lo, hi in zip(self.lo, self.hi))})"


@dataclass(frozen=True)
class NetGeometry:
    """Where one evaluation of a network reads and writes, in data order (z, y, x).

    Args:
        net_tags: the network's spatial axis tags in its own order, e.g. ('z', 'x', 'y').
        patch, out, strides: input patch, outputs per evaluation, output spacing.
        offsets: patch coordinate of the first output's centre (integers).
        n_channels: input channels; n_classes: output features.
        exact: whether tiling reproduces one evaluation on the whole image (only valid
            convolutions, no padding inside the net); otherwise windows must be blended.
        phase: grid that patch starts keep (see the module docstring).
    """
    net_tags: tuple[str, ...]
    patch: tuple[int, int, int]
    out: tuple[int, int, int]
    strides: tuple[int, int, int]
    offsets: tuple[int, int, int]
    n_channels: int
    n_classes: int
    exact: bool
    phase: tuple[int, int, int] = (1, 1, 1)

    def __post_init__(self):
        if sorted(self.net_tags) not in (['x', 'y'], ['x', 'y', 'z']):
            raise ShapeError(f"Network spatial axes {self.net_tags}: volume prediction needs "
                             f"3-D tags z,x,y (any order) or 2-D tags x,y / y,x")
        if any(b < 0 for b in self.border) or any(o < 0 or o > b for o, b in
                                                   zip(self.offsets, self.border)):
            raise ShapeError(f"Inconsistent network geometry: patch {self.patch}, out {self.out}, "
                             f"strides {self.strides}, offsets {self.offsets} (z,y,x)")
        short = [a for a, o, s, q in zip(DATA_AXES, self.out, self.strides, self.phase) if o * s < q]
        if short:
            raise ShapeError(f"The net's outputs per patch {self.out} (z,y,x, stride "
                             f"{self.strides}) span less than its internal stride {self.phase} "
                             f"along {short}: tiles could not keep the pooling phase; load it "
                             f"with a larger imposed_patch_size")

    @classmethod
    def from_node(cls, node) -> NetGeometry:
        """Geometry of a prediction node tagged 'b,f' + the spatial axes of its single input."""
        inputs = node.input_nodes
        if len(inputs) != 1:
            raise ShapeError(f"Volume prediction of {node.name!r} needs exactly one input node, "
                             f"it depends on {[n.name for n in inputs]}")
        in_sh, out_sh = inputs[0].shape, node.shape
        tags = in_sh.spatial_tags
        if out_sh.tags[:2] != ('b', 'f') or out_sh.spatial_tags != tags or out_sh.mfp_pools:
            raise ShapeError(f"Volume prediction needs an output tagged 'b,f,{','.join(tags)}' "
                             f"without MFP fragments; {node.name!r} has {out_sh.tags}")
        if not out_sh.fov_all_centered:
            raise ShapeError(f"{node.name!r} has half-voxel offsets {out_sh.offsets} (even fields "
                             f"of view): outputs do not sit on input voxels")
        if None in in_sh.spatial_shape:
            raise ShapeError(f"Input {inputs[0].name!r} has unknown spatial sizes {in_sh.spatial_shape}")

        def data_order(values, fill):
            by_tag = dict(zip(tags, values))
            return tuple(int(by_tag.get(t, fill)) for t in DATA_AXES)
        return cls(net_tags=tags, patch=data_order(in_sh.spatial_shape, 1),
                   out=data_order(out_sh.spatial_shape, 1), strides=data_order(out_sh.strides, 1),
                   offsets=data_order(out_sh.offsets, 0), n_channels=int(in_sh['f']),
                   n_classes=int(out_sh['f']), exact=is_exact(node),
                   phase=data_order(internal_phase(node), 1))

    @property
    def planar(self) -> bool:
        """True for 2-D networks (applied slice by slice)."""
        return len(self.net_tags) == 2

    @property
    def border(self) -> tuple[int, int, int]:
        """Input voxels around the outputs of one patch, per axis."""
        return tuple(p - (o - 1) * s - 1 for p, o, s in zip(self.patch, self.out, self.strides))

    @property
    def fov(self) -> tuple[int, int, int]:
        """Input voxels one output voxel depends on, per axis (its field of view)."""
        return tuple(b + 1 for b in self.border)

    def check_volume(self, zyx: Sequence[int], name: str) -> None:
        """Raise a ShapeError naming the axis where a volume of spatial shape ``zyx`` is
        smaller than the field of view (mirroring would invent most of the context)."""
        short = [(a, n, f) for a, n, f in zip(DATA_AXES, zyx, self.fov) if n < f]
        if short:
            axis, size, needed = short[0]
            hint = " (a 2-D (y, x) volume into a 3-D network)" if axis == 'z' and size == 1 else ''
            raise ShapeError(f"{name} has spatial shape {tuple(zyx)} (z,y,x){hint}: axis "
                             f"{axis!r} has {size} voxel(s), the network's field of view "
                             f"needs at least {needed} (fov {self.fov}, z,y,x); there are no "
                             f"valid output voxels", axis=axis)

    @property
    def context(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(before, after): input voxels an output tile needs beyond itself."""
        return self.offsets, tuple(b - o for b, o in zip(self.border, self.offsets))

    def patch_bases(self, tile: Sequence[int]) -> list[list[int]]:
        """Per axis, the starts (relative to the tile) of the patch placements covering an
        output tile: multiples of the phase, ``out * strides`` rounded down to it apart.
        Each placement is evaluated at every shift ``s < strides``; the last may overhang."""
        bases = []
        for t, o, s, q in zip(tile, self.out, self.strides, self.phase):
            step = o * s // q * q
            axis = [0]
            while axis[-1] + o * s < t:
                axis.append(axis[-1] + step)
            bases.append(axis)
        return bases

    def tile_extent(self, tile: Sequence[int]) -> tuple[int, int, int]:
        """Output voxels that tiling computes for ``tile`` (>= tile: the overhang)."""
        return tuple(b[-1] + o * s for b, o, s in
                     zip(self.patch_bases(tile), self.out, self.strides))

    def evaluations(self, tile: Sequence[int]) -> int:
        """Network evaluations (patches) that tiling needs for an output tile."""
        return int(np.prod([len(b) * s for b, s in zip(self.patch_bases(tile), self.strides)]))

    def net_sizes(self, zyx: Sequence[int]) -> tuple[int, ...]:
        """Per-axis sizes in data order -> in the network's tag order."""
        return tuple(int(zyx[DATA_AXES.index(t)]) for t in self.net_tags)

    def to_net(self, array: np.ndarray) -> np.ndarray:
        """(..., c, z, y, x) -> (..., c, [z,] *spatial in the network's order).

        A 2-D network keeps z in front of its axes (neuromancer's slice-by-slice layout).
        """
        lead = array.ndim - 3
        axes = [DATA_AXES.index(t) for t in (('z',) + self.net_tags if self.planar else self.net_tags)]
        return array.transpose(list(range(lead)) + [lead + a for a in axes])

    def from_net(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_net`."""
        lead = array.ndim - 3
        tags = ('z',) + self.net_tags if self.planar else self.net_tags
        axes = [tags.index(t) for t in DATA_AXES]
        return array.transpose(list(range(lead)) + [lead + a for a in axes])


def internal_phase(node) -> tuple[int, ...]:
    """Per spatial axis of ``node`` (its tag order), the least common multiple of the strides
    of all nodes it depends on, except max-fragment-pooled ones (whose fragments keep
    every phase)."""
    from ..neuromancer.node import topological_order
    tags = node.shape.spatial_tags
    phase = [1] * len(tags)
    for n in topological_order([node]):
        if n.shape.spatial_tags == tags and not n.shape.mfp_pools:
            phase = [math.lcm(p, s) for p, s in zip(phase, n.shape.strides)]
    return tuple(phase)


def is_exact(node) -> bool:
    """Whether the net sees no padding: valid convolutions, no Pad, non-overlapping UpConv."""
    from ..neuromancer.node import topological_order
    return not any(n.sees_padding for n in topological_order([node]))


@dataclass(frozen=True)
class Block:
    """One unit of work: compute ``compute`` (a full block), write ``write`` (inside it).

    ``index`` is the block's position in the grid; ``write`` is in output-volume
    coordinates and covers exactly one chunk of the output array.
    """
    index: tuple[int, ...]
    compute: Box
    write: Box

    @property
    def name(self) -> str:
        return '_'.join(str(i) for i in self.index)


@dataclass(frozen=True)
class BlockGrid:
    """Where the blocks are: ``region`` (output voxels, volume coordinates) in tiles of
    ``block_shape``, aligned to ``region.lo``.

    Every block computes a full ``block_shape`` tile from its start (overhanging the
    region's end where the region does not divide) and writes only its part of the region.
    """
    region: Box
    block_shape: tuple[int, int, int]

    def __post_init__(self):
        object.__setattr__(self, 'block_shape', _ints(self.block_shape))
        if len(self.block_shape) != len(self.region.lo) or min(self.block_shape) < 1:
            raise ShapeError(f"block shape {self.block_shape} must have one positive size per "
                             f"axis of the region {self.region} (z, y, x)")

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.region.shape, self.block_shape))

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def __iter__(self) -> Iterator[Block]:
        for index in itertools.product(*(range(c) for c in self.counts)):
            yield self.block(index)

    def block(self, index: Sequence[int]) -> Block:
        starts = [lo + i * b for lo, i, b in zip(self.region.lo, index, self.block_shape)]
        write = Box(starts, [min(s + b, hi) for s, b, hi in
                             zip(starts, self.block_shape, self.region.hi)])
        return Block(tuple(int(i) for i in index), Box.from_shape(self.block_shape, starts), write)
