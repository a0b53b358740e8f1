"""Overlapping windows of a 'same'-padded chain net from one evaluation of their union.

Blending (:mod:`.blending`) evaluates every window on its own, so a voxel covered by k
windows is computed k times (2.4 times on average for overlap 0.25 in 3-D). For a chain
of 'same' convolutions without pooling, followed or interleaved by position-wise nodes
(softmax, 1 x 1 x 1 convolutions), a window's activations differ from those of one
evaluation on the windows' union only near the window's faces, where its own zero padding
enters: after layers 1..l, within ``D_l`` voxels of a face, ``D_l`` the filters' reach
towards that face summed over those layers. So :class:`WindowReuse` evaluates the union
once, keeping every layer, and per window recomputes, layer by layer, only these shells
(from the window's previous layer; a face on the union's own boundary needs none, the
padding there is the same). The window outputs equal those of separate evaluations up
to float rounding (the same operations, summed in another order by the kernels).

Per layer and face, the shell of ``D_l`` voxels is computed by the layer's own node from
a slab of the previous layer, the filter's reach thicker, zero-padded only at the
window's faces (a valid convolution of that): exactly the shell, nothing discarded.
A slab's shape depends only on its layer, axis and side, so the windows are taken layer
by layer, up to :data:`WINDOWS_PER_PASS` at a time, and each layer's slabs of one axis
and side are evaluated as one batch (one call instead of one per window).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..neuromancer.classification import Softmax
from ..neuromancer.execution import ExecutionSettings
from ..neuromancer.footprint import Footprint
from ..neuromancer.graph_compile import GraphFunction, to_numpy
from ..neuromancer.neural import Conv
from ..neuromancer.node import Node
from .geometry import Box

#: time per multiply-add of the region's single pass and of the slabs, against that of
#: windows evaluated alone (slabs: thin convolutions, the copies that assemble them).
#: Fitted 2026-12-06 on the 2-core AMD EPYC, fp32, 2 threads, a 4-layer 'same' chain
#: with six window shapes from 32 x 64 x 64 to 64 x 96 x 96 (0.93 and 1.90; the reuse was
#: 1.13-2.05x faster than the windows alone on all six; benchmarks/RESULTS.md)
REGION_COST = 0.95
SLAB_COST = 1.9
#: windows whose slabs are evaluated together: fewer, larger calls; their shells held at once
WINDOWS_PER_PASS = 8


@dataclass(frozen=True)
class ChainLayer:
    """One node of a chain and, per spatial axis of the net (its tag order), how many input
    voxels before and after an output voxel it reads (0 for position-wise nodes)."""
    node: Node
    before: tuple[int, ...]
    after: tuple[int, ...]


def same_padded_chain(node: Node) -> list[ChainLayer] | None:
    """The nodes from the Input to ``node`` (input excluded) if each has one parent and is
    a 'same' convolution without pooling, a 1 x ... x 1 convolution or a softmax; else None."""
    layers = []
    current = node
    while not current.is_input:
        reach = _reach(current)
        if reach is None or len(current.parents) != 1:
            return None
        layers.append(ChainLayer(current, *reach))
        current = current.parent
    return layers[::-1]


def _reach(node: Node) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(before, after) per spatial axis as torch's 'same' padding places the filter, or None
    for nodes this module does not know to be translation-equivariant."""
    if isinstance(node, Softmax):
        zeros = (0,) * len(node.shape.spatial_axes)
        return zeros, zeros
    if not isinstance(node, Conv) or node.mfp or any(p != 1 for p in node.pool_shape):
        return None
    if all(k == 1 for k in node.filter_shape):
        return (0,) * len(node.filter_shape), (0,) * len(node.filter_shape)
    if node.conv_mode != 'same':
        return None
    before = tuple((k - 1) // 2 for k in node.filter_shape)
    return before, tuple(k - 1 - b for k, b in zip(node.filter_shape, before))


@dataclass(frozen=True)
class Slab:
    """A shell piece of one window at one layer: along ``axis`` (net order), the previous
    layer's ``source`` range gives the outputs ``kept`` (both window coordinates)."""
    layer: int
    axis: int
    source: tuple[int, int]
    kept: tuple[int, int]


class WindowReuse:
    """Evaluates windows of a 3-D 'same'-padded chain net (:func:`same_padded_chain`) from
    one evaluation of the region they cover (module docstring)."""

    def __init__(self, node: Node, footprint: Footprint, layers: list[ChainLayer]):
        self.footprint = footprint
        self.layers = layers
        nodes = [layer.node for layer in layers]
        self.whole = GraphFunction(nodes, [node.input_nodes[0]], training=False)
        self.device = node.model.device

    @classmethod
    def of(cls, node: Node, footprint: Footprint) -> WindowReuse | None:
        """The reuse for ``node``, or None where it does not apply (not a 3-D 'same' chain,
        or input and output windows differ)."""
        layers = same_padded_chain(node)
        if layers is None or footprint.planar or footprint.patch != footprint.out:
            return None
        return cls(node, footprint, layers)

    def slabs(self, window: Box, region_shape: Sequence[int]) -> list[Slab]:
        """The shell pieces of ``window`` (data order, region coordinates) within a region
        of ``region_shape``: none at faces on the region's boundary."""
        lo, hi = self.footprint.net_order(window.lo), self.footprint.net_order(window.hi)
        region = self.footprint.net_order(region_shape)
        reach_lo = [0] * len(lo)
        reach_hi = [0] * len(lo)
        slabs = []
        for index, layer in enumerate(self.layers):
            for axis, size in enumerate(np.subtract(hi, lo)):
                reach_lo[axis] += layer.before[axis]
                reach_hi[axis] += layer.after[axis]
                if lo[axis] > 0 and reach_lo[axis]:
                    kept = min(reach_lo[axis], size)
                    slabs.append(Slab(index, axis, (0, min(size, kept + layer.after[axis])),
                                      (0, kept)))
                if hi[axis] < region[axis] and reach_hi[axis]:
                    kept = min(reach_hi[axis], size)
                    slabs.append(Slab(index, axis, (max(0, size - kept - layer.before[axis]),
                                                    size), (size - kept, size)))
        return slabs

    def macs(self, windows: Sequence[Box], region_shape: Sequence[int]) -> tuple[int, int]:
        """Multiply-adds of one :meth:`evaluate`: (the region once, the windows' slabs)."""
        per_voxel = [layer.node.macs_per_input_position or 0 for layer in self.layers]
        shells = 0
        for window in windows:
            shape = self.footprint.net_order(window.shape)
            for slab in self.slabs(window, region_shape):
                extent = list(shape)
                extent[slab.axis] = slab.kept[1] - slab.kept[0]
                shells += per_voxel[slab.layer] * int(np.prod(extent))
        return sum(per_voxel) * int(np.prod(region_shape)), shells

    def activation_bytes(self, region_shape: Sequence[int]) -> int:
        """Peak float32 bytes: every layer of the region, plus a window's output and, for
        :data:`WINDOWS_PER_PASS` windows, the shells of two layers and a batch of slabs
        (each bounded by the widest layer's features over the largest shell)."""
        features = [layer.node.shape['f'] for layer in self.layers]
        window = self.footprint.out
        full = Box.from_shape(self.footprint.net_order(window))
        inner = Box.from_shape(window, window)  # in a region three times its size
        slabs = self.slabs(inner, [3 * n for n in window])
        shell = max(sum(int(np.prod(_along(full, s.axis, s.source).shape))
                        for s in slabs if s.layer == i) for i in range(len(self.layers)))
        per_window = 3 * max(features) * shell
        return 4 * (sum(features) * int(np.prod(region_shape))
                    + max(features) * int(np.prod(window)) + WINDOWS_PER_PASS * per_window)

    def evaluate(self, raw: np.ndarray, windows: Sequence[Box],
                 settings: ExecutionSettings) -> Iterator[np.ndarray]:
        """(c, z, y, x) float32 ``raw`` of the region -> per window (data order, region
        coordinates) its (f, *window.shape) float32 outputs."""
        region_shape = raw.shape[1:]
        data = torch.as_tensor(np.ascontiguousarray(self.footprint.to_net(raw[None])),
                               device=self.device)
        with torch.no_grad():
            whole = self.whole(data, settings=settings)
            for start in range(0, len(windows), WINDOWS_PER_PASS):
                group = windows[start:start + WINDOWS_PER_PASS]
                for output in self._windows(data, whole, group, region_shape, settings):
                    yield self.footprint.from_net(to_numpy(output))[0]

    def _windows(self, data: torch.Tensor, whole: Sequence[torch.Tensor],
                 windows: Sequence[Box], region_shape: Sequence[int],
                 settings: ExecutionSettings) -> list[torch.Tensor]:
        """The last layer's (1, f, *net axes) values of each window: per layer the region's
        values (views) and the recomputed pieces that replace them in the shells, the
        slabs of one axis and side batched over the windows."""
        crops = [_index(Box(self.footprint.net_order(w.lo), self.footprint.net_order(w.hi)))
                 for w in windows]
        full = Box.from_shape(self.footprint.net_order(windows[0].shape))
        slabs = [self.slabs(window, region_shape) for window in windows]
        previous = [data[crop] for crop in crops]
        pieces: list[list[tuple[Box, torch.Tensor]]] = [[] for _ in windows]
        for index, values in enumerate(whole):
            batches: dict[Slab, list[int]] = {}
            for member, window_slabs in enumerate(slabs):
                for slab in window_slabs:
                    if slab.layer == index:
                        batches.setdefault(slab, []).append(member)
            current: list[list[tuple[Box, torch.Tensor]]] = [[] for _ in windows]
            for slab, members in batches.items():
                source = _along(full, slab.axis, slab.source)
                before, after = self._padding(slab)
                first = previous[members[0]]
                batch = settings.empty((len(members), first.shape[1]) + tuple(
                    b + n + a for b, n, a in zip(before, source.shape, after)), first)
                _zero_borders(batch, before, after)
                inner = _index(Box.from_shape(source.shape, before))
                for row, member in enumerate(members):
                    _assembled(previous[member], pieces[member], source,
                               batch[row:row + 1][inner])
                with settings.autocast():
                    result = self._layer(slab.layer, batch)
                kept = _along(full, slab.axis, slab.kept)
                for row, member in enumerate(members):
                    current[member].append((kept, result[row:row + 1]))
            previous, pieces = [values[crop] for crop in crops], current
        return [_assembled(values, parts, full) for values, parts in zip(previous, pieces)]

    def _padding(self, slab: Slab) -> tuple[list[int], list[int]]:
        """Zeros before and after the slab's source per axis (net order), the window's own
        padding: along the slab's axis only what the source lacks of the kept outputs'
        inputs, so that a valid convolution gives exactly the kept outputs."""
        layer = self.layers[slab.layer]
        before, after = list(layer.before), list(layer.after)
        before[slab.axis] = slab.source[0] - (slab.kept[0] - layer.before[slab.axis])
        after[slab.axis] = slab.kept[1] + layer.after[slab.axis] - slab.source[1]
        return before, after

    def _layer(self, index: int, padded: torch.Tensor) -> torch.Tensor:
        """Layer ``index`` on a batch of ``padded`` slab sources (a valid convolution)."""
        node = self.layers[index].node
        return node.forward(padded, padding=0) if isinstance(node, Conv) else node.forward(padded)


def _zero_borders(batch: torch.Tensor, before: Sequence[int], after: Sequence[int]) -> None:
    """Zero the first ``before`` and last ``after`` voxels of each spatial axis of a
    (b, f, *spatial) tensor."""
    for axis, (low, high) in enumerate(zip(before, after)):
        size = batch.shape[axis + 2]
        batch.narrow(axis + 2, 0, low).zero_()
        batch.narrow(axis + 2, size - high, high).zero_()


def _along(box: Box, axis: int, bounds: tuple[int, int]) -> Box:
    """``box`` with its range along ``axis`` replaced by ``bounds``."""
    lo, hi = list(box.lo), list(box.hi)
    lo[axis], hi[axis] = bounds
    return Box(lo, hi)


def _index(box: Box) -> tuple[slice, ...]:
    """Index of ``box`` (spatial axes) in a (b, f, *spatial) tensor."""
    return (slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(box.lo, box.hi))


def _assembled(values: torch.Tensor, pieces: list[tuple[Box, torch.Tensor]],
               box: Box, out: torch.Tensor | None = None) -> torch.Tensor:
    """``values`` (window coordinates) over ``box``, where ``pieces`` (box, values) cover
    it replaced by theirs: written into ``out`` if given, else a view where no piece
    overlaps, else a copy."""
    overlaps = [(piece, part) for piece, part in pieces
                if all(max(a, c) < min(b, d) for a, b, c, d in
                       zip(piece.lo, piece.hi, box.lo, box.hi))]
    result = values[_index(box)]
    if out is not None:
        result = out.copy_(result)
    elif not overlaps:
        return result
    else:
        result = result.clone()
    for piece, part in overlaps:
        common = Box([max(a, b) for a, b in zip(piece.lo, box.lo)],
                     [min(a, b) for a, b in zip(piece.hi, box.hi)])
        result[_index(common.relative_to(box))] = part[_index(common.relative_to(piece))]
    return result
