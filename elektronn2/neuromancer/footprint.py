"""A network's footprint: where one evaluation reads its input and where its outputs lie.

This is the one home of that geometry; training batches (:mod:`elektronn2.data`),
:func:`~elektronn2.neuromancer.dense.predict_dense` and blockwise prediction
(:mod:`elektronn2.inference`) all read it from :class:`Footprint`.

Axis convention: a footprint keeps every size in data order ``(z, y, x)``, the order
volumes are stored in. Networks name their spatial axes by tags in their own order
(``'z,x,y'``, ``'x,y'``, ``'y,x'``); :meth:`Footprint.to_net` and
:meth:`Footprint.from_net` convert arrays at the boundary. A 2-D network acts on single
z-slices: its footprint has depth 1 in z.

A network evaluated on an input patch ``patch`` gives ``out`` outputs per axis spaced
``strides`` apart; the first is centred ``offsets`` voxels into the patch (x.5 for an even
field of view). ``border = patch - (out - 1) * strides - 1`` input voxels around the
outputs are context, so an output tile ``[a, b)`` needs the input
``[a - offsets, b + border - offsets)``.

Tiling (exact dense prediction) evaluates the patches of every output shift
``s < strides`` at bases spaced a multiple of the net's ``phase`` apart: the least common
multiple of the strides inside the net, max-fragment-pooled layers aside (their fragments
keep every phase). A plain strided net has phase = strides; a U-Net pools inside and has
output stride 1, but its outputs depend on where patches start modulo the phase, so
patches, and prediction blocks, start on that grid.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Sequence, TypeVar

import numpy as np

from ..errors import ShapeError
from .traversal import topological_order

if TYPE_CHECKING:
    from .node import Node

logger = logging.getLogger('elektronn2')

DATA_AXES = ('z', 'y', 'x')
T = TypeVar('T')


def to_unit_float(raw: np.ndarray, source_dtype: np.dtype | None = None) -> np.ndarray:
    """The network input of raw data: float32; integer data scaled to [0, 1] by the maximum
    of its dtype (``source_dtype`` when ``raw`` was already converted, e.g. by warping),
    booleans 0/1, floats unchanged. Training batches and prediction both use this."""
    raw = np.asarray(raw)
    kind = np.dtype(source_dtype if source_dtype is not None else raw.dtype)
    image = raw.astype(np.float32, copy=False)
    if kind.kind in 'iu':
        image = image / np.float32(np.iinfo(kind).max)
    return image


def _zyx(values: Iterable[T]) -> tuple[T, T, T]:
    """Three per-axis values in data order as a (z, y, x) triple."""
    z, y, x = values
    return z, y, x


def _checked_tags(tags: Sequence[str]) -> tuple[str, ...]:
    if not tags or len(set(tags)) != len(tags) or not set(tags) <= set(DATA_AXES):
        raise ShapeError(f"Spatial axes {tuple(tags)} are not supported for volumes: use tags "
                         f"z,x,y (any order), x,y / y,x, or one of them")
    return tuple(tags)


def internal_phase(node: Node) -> tuple[int, ...]:
    """Per spatial axis of ``node`` (its tag order), the least common multiple of the strides
    of all nodes it depends on, except max-fragment-pooled ones."""
    tags = node.shape.spatial_tags
    phase = [1] * len(tags)
    for n in topological_order([node]):
        if n.shape.spatial_tags == tags and not n.shape.mfp_pools:
            phase = [math.lcm(p, s) for p, s in zip(phase, n.shape.strides)]
    return tuple(phase)


def is_exact(node: Node) -> bool:
    """Whether the net sees no padding (valid convolutions, no Pad, non-overlapping UpConv):
    tiling then reproduces one evaluation on the whole image."""
    return not any(n.sees_padding for n in topological_order([node]))


@dataclass(frozen=True)
class Footprint:
    """Input patch and output grid of one evaluation of a network, in data order (z, y, x).

    Args:
        net_tags: the network's spatial tags in its own order, e.g. ``('z', 'x', 'y')``.
        patch, out, strides: input patch, outputs per evaluation, output spacing.
        offsets: patch coordinate of the first output's centre (x.5 for even fields of view).
        phase: grid that patch starts keep when tiling (module docstring).
        n_channels: input channels; n_outputs: output features (e.g. class probabilities).
        exact: whether tiling reproduces one evaluation on the whole image; otherwise
            (the net pads inside) windows must be blended.
    """
    net_tags: tuple[str, ...]
    patch: tuple[int, int, int]
    out: tuple[int, int, int]
    strides: tuple[int, int, int]
    offsets: tuple[float, float, float]
    phase: tuple[int, int, int] = (1, 1, 1)
    n_channels: int = 1
    n_outputs: int = 1
    exact: bool = True

    def __post_init__(self):
        _checked_tags(self.net_tags)
        first = np.asarray(self.offsets, float)
        last = first + (np.asarray(self.out) - 1) * np.asarray(self.strides)
        if np.any(first < 0) or np.any(last > np.asarray(self.patch) - 1):
            raise ShapeError(f"The output grid (offsets {self.offsets}, strides {self.strides}, "
                             f"size {self.out}, z,y,x) does not lie inside the input patch "
                             f"{self.patch}; the network's output geometry is inconsistent")

    @classmethod
    def between(cls, input_node: Node, output_node: Node) -> Footprint:
        """Patch size from ``input_node``, output grid from ``output_node`` (e.g. a training
        target); offsets may be x.5."""
        inp, out = input_node.shape, output_node.shape
        if inp.spatial_tags != out.spatial_tags:
            raise ShapeError(f"Node {output_node.name!r} has spatial axes {out.spatial_tags}, "
                             f"input node {input_node.name!r} has {inp.spatial_tags}; they "
                             f"must be the same, in the same order")
        for node, sh in ((input_node, inp), (output_node, out)):
            if None in sh.spatial_shape:
                raise ShapeError(f"Node {node.name!r} has unknown spatial sizes "
                                 f"{sh.spatial_shape}; patches need a fixed size")
        tags = _checked_tags(inp.spatial_tags)

        def data_order(values, fill):
            by_tag = dict(zip(tags, values))
            return tuple(by_tag.get(t, fill) for t in DATA_AXES)
        return cls(net_tags=tags, patch=data_order(map(int, inp.spatial_shape), 1),
                   out=data_order(map(int, out.spatial_shape), 1),
                   strides=data_order(map(int, out.strides), 1),
                   offsets=data_order(map(float, out.offsets), 0.0),
                   phase=data_order(internal_phase(output_node), 1),
                   n_channels=int(inp['f']) if 'f' in inp.tags else 1,
                   n_outputs=int(out['f']) if 'f' in out.tags else 1,
                   exact=is_exact(output_node))

    @classmethod
    def of(cls, node: Node) -> Footprint:
        """Footprint of a prediction node tagged 'b,f' + the spatial axes of its single
        input, whose patches can keep the phase. Outputs sit on input voxels: a half-voxel
        offset (an even field of view) is rounded up (ELEKTRONN2's ``fov // 2``; training
        targets are sampled at the same voxel)."""
        inputs = node.input_nodes
        if len(inputs) != 1:
            raise ShapeError(f"Dense prediction with {node.name!r} needs exactly one input "
                             f"node, it depends on {[n.name for n in inputs]}")
        in_sh, out_sh = inputs[0].shape, node.shape
        tags = in_sh.spatial_tags
        if out_sh.mfp_pools:
            raise ShapeError(f"{node.name!r} still has max-fragment-pooling fragments on its "
                             f"batch axis: predict from a FragmentsToDense node after it")
        if out_sh.tags[:2] != ('b', 'f') or out_sh.spatial_tags != tags:
            raise ShapeError(f"Dense prediction needs an output tagged 'b,f,{','.join(tags)}'; "
                             f"{node.name!r} has {','.join(out_sh.tags)}")
        footprint = cls.between(inputs[0], node)
        if not out_sh.fov_all_centered:  # even fields of view: ELEKTRONN2's fov // 2
            footprint = replace(footprint, offsets=_zyx(
                float(math.floor(o + 0.5)) for o in footprint.offsets))
            logger.info("%r has half-voxel offsets %s (even fields of view): each output is "
                        "placed on the input voxel after its centre, as ELEKTRONN2 did", node.name,
                        out_sh.offsets)
        short = [a for a, o, s, q in zip(DATA_AXES, footprint.out, footprint.strides,
                                         footprint.phase) if o * s < q]
        if short:
            raise ShapeError(f"The net's outputs per patch {footprint.out} (z,y,x, stride "
                             f"{footprint.strides}) span less than its internal stride "
                             f"{footprint.phase} along {short}: tiles could not keep the pooling "
                             f"phase; use a larger patch (imposed_patch_size)")
        return footprint

    # --- sizes -------------------------------------------------------------------------------
    @property
    def planar(self) -> bool:
        """True for 2-D (and 1-D) networks, applied slice by slice (line by line)."""
        return len(self.net_tags) < 3

    @property
    def border(self) -> tuple[int, int, int]:
        """Input voxels around the outputs of one patch, per axis."""
        return _zyx(p - (o - 1) * s - 1 for p, o, s in zip(self.patch, self.out, self.strides))

    @property
    def fov(self) -> tuple[int, int, int]:
        """Input voxels one output voxel depends on, per axis (its field of view)."""
        return _zyx(b + 1 for b in self.border)

    @property
    def context(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(before, after): input voxels an output tile needs beyond itself."""
        before = tuple(int(o) for o in self.offsets)
        return before, tuple(b - o for b, o in zip(self.border, before))

    def dense(self) -> Footprint:
        """The same output region sampled at every input voxel (stride 1)."""
        extent = (np.asarray(self.out) - 1) * np.asarray(self.strides) + 1
        return replace(self, out=_zyx(int(e) for e in extent), strides=(1, 1, 1))

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

    # --- tiling ------------------------------------------------------------------------------
    def patch_bases(self, tile: Sequence[int]) -> list[list[int]]:
        """Per axis, the starts (relative to the tile) of the patch placements covering an
        output tile: multiples of the phase, ``out * strides`` rounded down to it apart.
        Each placement is evaluated at every shift ``s < strides``; the last may overhang."""
        bases = []
        for t, o, s, q in zip(tile, self.out, self.strides, self.phase):
            step = o * s // q * q
            if step < 1:
                raise ShapeError(f"outputs per patch {self.out} x strides {self.strides} span "
                                 f"less than the internal stride {self.phase} (z,y,x)")
            axis = [0]
            while axis[-1] + o * s < t:
                axis.append(axis[-1] + step)
            bases.append(axis)
        return bases

    def patch_starts(self, tile: Sequence[int]) -> list[tuple[int, ...]]:
        """Every patch start (relative to the tile) that tiling evaluates: bases x shifts."""
        shifts = itertools.product(*(range(s) for s in self.strides))
        return [tuple(b + s for b, s in zip(base, shift)) for shift in shifts
                for base in itertools.product(*self.patch_bases(tile))]

    def tile_extent(self, tile: Sequence[int]) -> tuple[int, ...]:
        """Output voxels that tiling computes for ``tile`` (>= tile: the overhang)."""
        return tuple(b[-1] + o * s for b, o, s in
                     zip(self.patch_bases(tile), self.out, self.strides))

    def evaluations(self, tile: Sequence[int]) -> int:
        """Network evaluations (patches) that tiling needs for an output tile."""
        return int(np.prod([len(b) * s for b, s in zip(self.patch_bases(tile), self.strides)]))

    # --- axis order --------------------------------------------------------------------------
    def net_order(self, zyx_values: Sequence) -> tuple:
        """Per-axis values in data order -> in the network's spatial tag order."""
        return tuple(zyx_values[DATA_AXES.index(t)] for t in self.net_tags)

    @property
    def _missing(self) -> tuple[str, ...]:
        """Data axes the network does not have (size 1 in its patches), in data order."""
        return tuple(a for a in DATA_AXES if a not in self.net_tags)

    def _volume_tags(self) -> tuple[str, ...]:
        return self._missing + self.net_tags

    def to_net(self, array: np.ndarray) -> np.ndarray:
        """(..., c, z, y, x) volume -> (..., c, [z,] *spatial in the network's order); a 2-D
        network keeps z in front of its axes (a stack of slices), a 1-D one both others."""
        lead = array.ndim - 3
        axes = [DATA_AXES.index(t) for t in self._volume_tags()]
        return array.transpose(list(range(lead)) + [lead + a for a in axes])

    def from_net(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_net`."""
        lead = array.ndim - 3
        tags = self._volume_tags()
        return array.transpose(list(range(lead)) + [lead + tags.index(t) for t in DATA_AXES])

    def patch_to_net(self, array: np.ndarray) -> np.ndarray:
        """(..., c, z, y, x) patch -> the network's input layout (a 2-D net's single slice)."""
        net = self.to_net(array)
        lead = net.ndim - len(DATA_AXES)
        return net.reshape(net.shape[:lead] + net.shape[lead + len(self._missing):])

    def patch_from_net(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`patch_to_net`: (..., c, *spatial) -> (..., c, z, y, x)."""
        lead = array.ndim - len(self.net_tags)
        return self.from_net(array.reshape(array.shape[:lead] + (1,) * len(self._missing)
                                           + array.shape[lead:]))

