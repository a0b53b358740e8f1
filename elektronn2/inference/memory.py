"""The memory one block task needs, estimated before any block runs.

At its peak a block task (:func:`.blockwise.process_block`) holds:

* its input box (the block plus the net's context) as read, mirrored and as float32,
  and the next block's input read ahead: ``channels * voxels * (3 * itemsize + 4)``
  bytes;
* the predicted tile (float32), its copy in the output dtype and the previous block's
  output being written behind: ``classes * voxels * 12``;
* the activations of one network evaluation
  (:meth:`~.predictors.BlockPredictor.activation_bytes`): the node outputs alive at
  once (each is freed after its last consumer; features times spatial sizes, MFP
  fragments included, :func:`~elektronn2.neuromancer.dense.evaluation_bytes`) for the
  patches evaluated together -- up to 16 patches when
  tiling, 4 windows when blending, or one patch covering the whole block (the
  'mfp' and 'patch' back ends: then they grow with the block).

:func:`check_block_memory` refuses a block shape whose estimate, times the blocks that
run at once, exceeds the available memory (``psutil``; for a model on a GPU, its
activations are held against the free GPU memory), and suggests a smaller one that
fits (planned and estimated again: a smaller block may change the back end).

:func:`choose_block_shape` picks the block shape when none is given: every block
computes a full block plus the net's context around it (its border), so large blocks
that tile the region without overhang waste least. Starting from a small block, it
grows one axis at a time (doubled, or to the region's extent, or just past it when the
network only accepts sizes around it), taking the growth that lowers the multiply-adds
of the whole region most, as long as the block task's estimate stays within the memory
budget. The budget is a fixed share of the machine's memory
(:func:`default_block_budget`), so that a resumed run on the same machine chooses the
same blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..data.sources import VolumeSource
from ..errors import ConfigError
from ..neuromancer.loading import quiet_snapping
from .predictors import cached_predictor

if TYPE_CHECKING:
    from .blockwise import PredictionPlan

#: a suggested block is scaled a little further than the estimate says is enough
_SUGGESTION_MARGIN = 0.8
#: share of the machine's memory (or a GPU's) all block tasks at once may plan to use
BUDGET_SHARE = 0.4
#: the edge of the first block :func:`choose_block_shape` grows
_START_EDGE = 16


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
    data = (plan.geometry.n_channels * in_voxels * (3 * np.dtype(source.dtype).itemsize + 4)
            + plan.geometry.n_outputs * block.size * 12)
    activations = predictor.activation_bytes(block)
    growing, fixed = (activations, 0) if plan.spec.grows_with_block else (0, activations)
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
        f"{gib(need.total)} of {need.where} (backend {plan.spec.backend}: input box, output "
        f"tile and network activations){times}, but {gib(need.free)} is available; {advice}")


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


def gib(n_bytes: float) -> str:
    """``1.5 * 2**30 -> '1.50 GiB'``."""
    return f"{n_bytes / 2 ** 30:,.2f} GiB"


def default_block_budget(parallel: int) -> int:
    """Bytes one of ``parallel`` block tasks may plan to use: :data:`BUDGET_SHARE` of the
    machine's memory (of the GPU's for a model on a GPU, see :func:`block_needs`)."""
    import psutil
    return int(BUDGET_SHARE * psutil.virtual_memory().total / parallel)


def choose_block_shape(replan: Callable[[tuple[int, ...]], PredictionPlan],
                       source: VolumeSource, budget: int) -> PredictionPlan:
    """The plan whose blocks execute the fewest multiply-adds for the whole region among
    those grown from a small block (module docstring) whose task needs at most ``budget``
    bytes in each kind of memory. ``replan(block_shape)`` plans the prediction with other
    blocks (it may snap them to sizes the network accepts)."""
    with quiet_snapping():
        return _grown_plan(replan, source, budget)


def _grown_plan(replan: Callable[[tuple[int, ...]], PredictionPlan], source: VolumeSource,
                budget: int) -> PredictionPlan:
    plan = replan((_START_EDGE,) * 3)
    region = plan.region.shape
    while True:
        current = plan.grid.block_shape
        candidates = []
        for axis in range(3):
            if current[axis] >= region[axis]:
                continue
            for size in (min(2 * current[axis], region[axis]),
                         region[axis] + plan.geometry.strides[axis]):
                wanted = current[:axis] + (size,) + current[axis + 1:]
                bigger = replan(wanted)
                if (bigger.grid.block_shape[axis] > current[axis]
                        and all(n.total <= budget for n in block_needs(bigger, source))):
                    candidates.append(bigger)
                    if bigger.grid.block_shape[axis] >= region[axis]:
                        break
        best = min(candidates, key=region_macs, default=None)
        if best is None or region_macs(best) >= region_macs(plan):
            return plan
        plan = best


def region_macs(plan: PredictionPlan) -> int:
    """Multiply-adds the network executes for all blocks of ``plan`` (each computes a
    full block)."""
    block = plan.grid.block((0, 0, 0)).compute
    return len(plan.grid) * cached_predictor(plan.spec).executed_macs(block)
