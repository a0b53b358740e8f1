"""Blended sliding-window prediction for nets that pad inside ('same' convolutions).

Such nets are least reliable near their patch borders, so windows overlap and each
output voxel is the importance-weighted mean of all windows covering it (as MONAI's
``sliding_window_inference`` does). Two small pieces, kept apart:

* :class:`WindowGrid` says where the windows are: a grid over the whole output region,
  step ``int(window * (1 - overlap))``, the last window moved back to end at the region's end.
* :class:`WeightedMerge` says how results are merged: sums of weighted outputs and of
  weights over one box (torch tensors: multi-threaded), divided at the end.

Because the grid belongs to the whole region, a block evaluates every window that
touches it and keeps its own part: the result does not depend on the block shape, but
windows straddling a block face are evaluated once per block they touch. Along an axis
a block of b voxels evaluates about (b + window - step) / step windows instead of
b / step, so blocks several windows wide keep this overhead small.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from ..neuromancer.dense import (
    PatchEvaluator,
    evaluate_patches,
    evaluation_bytes,
)
from ..neuromancer.footprint import to_unit_float
from .geometry import Box
from .window_reuse import REGION_COST, SLAB_COST, WindowReuse

IMPORTANCE_MODES = ('constant', 'gaussian')


def importance_map(shape: tuple[int, ...], mode: str = 'gaussian',
                   sigma_scale: float = 0.125) -> np.ndarray:
    """Weights (shape) for one window: all ones, or a Gaussian of sigma
    ``sigma_scale * size`` per axis centred on the window, peak 1, floored at 1e-3."""
    if mode not in IMPORTANCE_MODES:
        raise ConfigError(f"importance mode {mode!r}; valid: {IMPORTANCE_MODES}")
    if mode == 'constant':
        return np.ones(shape, np.float32)
    weights = np.ones((), np.float64)
    for size in shape:
        x = np.arange(size) - (size - 1) / 2
        profile = np.exp(-x ** 2 / (2 * (sigma_scale * size) ** 2))
        weights = np.multiply.outer(weights, profile)
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)


@dataclass(frozen=True)
class WindowGrid:
    """Output windows of shape ``window`` covering ``region`` with fractional ``overlap``."""
    region: Box
    window: tuple[int, ...]
    overlap: float

    def __post_init__(self):
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap={self.overlap}; it must be in [0, 1)")

    def starts(self, axis: int) -> list[int]:
        """Window starts along one axis (volume coordinates)."""
        lo, n, w = self.region.lo[axis], self.region.shape[axis], self.window[axis]
        if n <= w:
            return [lo]
        step = max(1, int(w * (1 - self.overlap)))
        count = -(-(n - w) // step) + 1
        return [lo + min(i * step, n - w) for i in range(count)]

    def starts_in(self, box: Box) -> list[list[int]]:
        """Per axis, the (ascending) starts of the windows overlapping ``box``."""
        return [[s for s in self.starts(axis) if s < box.hi[axis] and s + w > box.lo[axis]]
                for axis, w in enumerate(self.window)]

    def windows_in(self, box: Box) -> list[Box]:
        """The windows overlapping ``box``, in grid (C) order."""
        grids = np.meshgrid(*self.starts_in(box), indexing='ij')
        return [Box.from_shape(self.window, lo) for lo in zip(*(g.ravel() for g in grids))]


class WeightedMerge:
    """Importance-weighted mean of window outputs over ``box`` (f classes)."""

    def __init__(self, box: Box, n_classes: int, weights: np.ndarray):
        self.box = box
        self.weights = torch.from_numpy(np.asarray(weights, np.float32))
        self.total = torch.zeros((n_classes,) + box.shape)
        self.weight_sum = torch.zeros(box.shape)

    def add(self, window: Box, prediction: np.ndarray) -> None:
        """Accumulate (f, *window.shape) ``prediction``; parts outside the box are dropped."""
        lo = [max(a, b) for a, b in zip(window.lo, self.box.lo)]
        hi = [min(a, b) for a, b in zip(window.hi, self.box.hi)]
        part = Box(lo, hi)
        src, dst = part.slices_in(window), part.slices_in(self.box)
        weight = self.weights[src]
        values = torch.from_numpy(np.ascontiguousarray(prediction, np.float32))
        self.total[(slice(None),) + dst].addcmul_(values[(slice(None),) + src], weight)
        self.weight_sum[dst] += weight

    def result(self) -> np.ndarray:
        """(f, *box.shape); zero where no window reached. Divides the sums in place: the
        merge is finished."""
        self.total /= torch.where(self.weight_sum > 0, self.weight_sum, 1)
        return self.total.numpy()


class BlendingPredictor(PatchEvaluator):
    """Block predictor (see :mod:`.predictors`) blending overlapping windows of a stride-1 net.

    Args:
        node: prediction node (output stride 1).
        region: the output region the window grid covers (volume coordinates).
        mode: 'constant' or 'gaussian' importance weights.
        overlap: fraction of a window shared with its neighbour along each axis.
        batch_size: windows per network evaluation (at most; fewer for large activations);
            None: one on a CPU (measured fastest there, benchmarks/RESULTS.md), four on
            other devices.
        precision: 'fp32', 'bf16' or 'fp16' evaluation of the network (None: the config's).
        tta: test-time augmentation of every window before it is blended
            (:func:`elektronn2.neuromancer.dense.tta_transforms`; the importance weights
            are symmetric under its flips and transpose).
        reuse: evaluate the windows of a 3-D chain of 'same' convolutions from one
            evaluation of the block's input (:mod:`.window_reuse`; same results, less
            work) where the net is one and ``tta`` is 'none'; False: every window alone.
    """

    def __init__(self, node, region: Box, mode: str = 'gaussian', overlap: float = 0.25,
                 batch_size: int | None = None, precision: str | None = None, tta: str = 'none',
                 reuse: bool = True):
        if batch_size is None:
            batch_size = 1 if node.model.device.type == 'cpu' else 4
        super().__init__(node, batch_size, precision, tta)
        if any(s != 1 for s in self.geometry.strides):
            raise ShapeError(f"Blending needs an output stride of 1; {node.name!r} has strides "
                             f"{self.geometry.strides} (z,y,x)")
        self.grid = WindowGrid(region, self.geometry.out, overlap)
        self.weights = importance_map(self.geometry.out, mode)
        self.reuse = WindowReuse.of(node, self.geometry) if reuse and tta == 'none' else None

    def input_box(self, out_box: Box) -> Box:
        starts = self.grid.starts_in(out_box)
        return Box([s[0] for s in starts], [s[-1] + w for s, w in zip(starts, self.grid.window)]
                   ).grow(*self.geometry.context)

    def reuses(self, out_box: Box) -> bool:
        """Whether the block ``out_box`` is evaluated by :mod:`.window_reuse`: where the net
        allows it and it should take less time than the windows alone (multiply-adds
        weighted by :data:`~.window_reuse.REGION_COST` and :data:`~.window_reuse.SLAB_COST`)."""
        if self.reuse is None:
            return False
        region, shells = self._reuse_macs(out_box)
        return REGION_COST * region + SLAB_COST * shells < self._window_macs(out_box)

    def predict(self, raw: np.ndarray, out_box: Box) -> np.ndarray:
        raw = to_unit_float(raw)
        in_box = self.input_box(out_box)
        merge = WeightedMerge(out_box, self.geometry.n_outputs, self.weights)
        windows = self.grid.windows_in(out_box)
        settings = self.settings
        if self.reuses(out_box):
            assert self.reuse is not None
            local = [w.relative_to(in_box) for w in windows]
            for window, pred in zip(windows, self.reuse.evaluate(raw, local, settings)):
                merge.add(window, pred)
            return merge.result()
        context = self.geometry.context
        for i in range(0, len(windows), self.batch_size):
            chunk = windows[i:i + self.batch_size]
            batch = np.stack([raw[(slice(None),) + w.grow(*context).slices_in(in_box)]
                              for w in chunk])
            for window, pred in zip(chunk, evaluate_patches(self.node, self.geometry, batch,
                                                            settings, self.tta)):
                merge.add(window, pred)
        return merge.result()

    def activation_bytes(self, out_box: Box) -> int:
        if self.reuses(out_box):
            assert self.reuse is not None
            return self.reuse.activation_bytes(self.input_box(out_box).shape)
        windows = int(np.prod([len(s) for s in self.grid.starts_in(out_box)]))
        return evaluation_bytes(self.node, min(self.batch_size, windows), self.tta)

    def executed_macs(self, out_box: Box) -> int:
        return sum(self._reuse_macs(out_box)) if self.reuses(out_box) else self._window_macs(out_box)

    def _window_macs(self, out_box: Box) -> int:
        return (self.n_transforms * len(self.grid.windows_in(out_box))
                * self.node.all_computational_cost)

    def _reuse_macs(self, out_box: Box) -> tuple[int, int]:
        assert self.reuse is not None
        in_box = self.input_box(out_box)
        return self.reuse.macs(
            [w.relative_to(in_box) for w in self.grid.windows_in(out_box)], in_box.shape)
