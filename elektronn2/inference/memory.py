"""The memory one block task needs, estimated before any block runs.

At its peak a block task (:func:`.blockwise.process_block`) holds:

* its input box (the block plus the net's context) as read, mirrored and as float32:
  ``channels * voxels * (2 * itemsize + 4)`` bytes;
* the predicted tile (float32) and its copy in the output dtype: ``classes * voxels * 8``;
* the activations of one network evaluation
  (:meth:`~.predictors.BlockPredictor.activation_bytes`): every node's float32 output
  (``model.prediction_node`` and its ancestors: features times spatial sizes, MFP
  fragments included) for the patches evaluated together -- up to 16 patches when
  tiling, 4 windows when blending, or one patch covering the whole block with
  max-fragment pooling (then they grow with the block).

:func:`check_block_memory` refuses a block shape whose estimate, times the blocks that
run at once, exceeds the available memory (``psutil``; for a model on a GPU, its
activations are held against the free GPU memory), and suggests a smaller one that
fits (planned and estimated again: a smaller block may change the back end).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..data.sources import VolumeSource
from ..errors import ConfigError
from .predictors import cached_predictor

if TYPE_CHECKING:
    from .blockwise import PredictionPlan

#: a suggested block is scaled a little further than the estimate says is enough
_SUGGESTION_MARGIN = 0.8


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes of one block task in one kind of memory: ``growing`` with the block's
    volume, ``fixed`` whatever the block; ``free``: what the machine has (``where``)."""
    growing: int
    fixed: int
    free: int
    where: str

    @property
    def total(self) -> int:
        return self.growing + self.fixed

    def fitting_shape(self, block_shape: Sequence[int], parallel: int) -> tuple[int, ...] | None:
        """``block_shape`` scaled down until ``parallel`` tasks fit, or None if none can."""
        room = self.free / parallel - self.fixed
        if room <= 0:
            return None
        factor = (_SUGGESTION_MARGIN * room / self.growing) ** (1 / 3)
        return tuple(max(1, int(b * factor)) for b in block_shape)


def block_needs(plan: PredictionPlan, source: VolumeSource) -> list[MemoryNeed]:
    """The memory needs of one block task of ``plan`` (module docstring)."""
    import psutil
    import torch
    predictor = cached_predictor(plan.spec)
    block = plan.grid.block((0, 0, 0)).compute
    in_voxels = predictor.input_box(block).size
    data = (plan.geometry.n_channels * in_voxels * (2 * np.dtype(source.dtype).itemsize + 4)
            + plan.geometry.n_outputs * block.size * 8)
    activations = predictor.activation_bytes(block)
    growing, fixed = (activations, 0) if plan.spec.backend == 'mfp' else (0, activations)
    host = psutil.virtual_memory().available
    device = predictor.node.model.device
    if device.type != 'cuda':
        return [MemoryNeed(data + growing, fixed, host, 'memory')]
    return [MemoryNeed(data, 0, host, 'memory'),
            MemoryNeed(growing, fixed, torch.cuda.mem_get_info(device)[0], f'{device} memory')]


def check_block_memory(plan: PredictionPlan, source: VolumeSource, parallel: int,
                       replan: Callable[[tuple[int, ...]], PredictionPlan]) -> None:
    """Raise a ConfigError when ``parallel`` block tasks of ``plan`` at once would not fit
    into memory (see the module docstring); ``replan(block_shape)`` plans the same
    prediction with other blocks, to find one that fits."""
    need = _overflow(plan, source, parallel)
    if need is None:
        return
    fitting = _fitting_block_shape(plan, source, parallel, replan)
    advice = (f"try --block-shape {' '.join(map(str, fitting))}" if fitting else
              "no block shape fits: the network's patches alone are too large")
    times = f", times {parallel} blocks at once" if parallel > 1 else ''
    raise ConfigError(
        f"--block-shape {' '.join(map(str, plan.grid.block_shape))}: a block needs about "
        f"{_gib(need.total)} of {need.where} (backend {plan.spec.backend}: input box, output "
        f"tile and network activations){times}, but {_gib(need.free)} is available; {advice}")


def _overflow(plan: PredictionPlan, source: VolumeSource, parallel: int) -> MemoryNeed | None:
    """The first memory need of which ``parallel`` tasks do not fit, None if all fit."""
    return next((n for n in block_needs(plan, source) if parallel * n.total > n.free), None)


def _fitting_block_shape(plan: PredictionPlan, source: VolumeSource, parallel: int,
                         replan: Callable[[tuple[int, ...]], PredictionPlan],
                         tries: int = 6) -> tuple[int, ...] | None:
    """A smaller block shape whose plan fits (the back end may change with the block, so
    each candidate is planned and estimated again), or None."""
    need = _overflow(plan, source, parallel)
    for _ in range(tries):
        if need is None:  # this plan fits
            return plan.grid.block_shape
        shape = need.fitting_shape(plan.grid.block_shape, parallel)
        if shape is None:
            return None
        plan = replan(tuple(min(s, r) for s, r in zip(shape, plan.region.shape)))
        need = _overflow(plan, source, parallel)
    return plan.grid.block_shape if need is None else None


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2 ** 30:,.2f} GiB"
