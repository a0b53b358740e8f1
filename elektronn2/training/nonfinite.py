"""Training that meets NaN or Inf: batches refused before a step, steps undone after one.

* :func:`check_finite_batch`: a batch with NaN/Inf input (or NaN targets that not every
  node reading the target masks) stops the run with a :class:`~elektronn2.errors.DataError`
  naming the array and the first bad value.
* :class:`GoodState`: the last parameters and optimiser state with finite values (the
  start, or a monitoring point) and how often training has gone back to it; a step
  whose loss is not finite returns there with lr times :data:`LR_FACTOR_ON_NAN`, at most
  :data:`MAX_ROLLBACKS` times before the run counts as diverged (the Trainer decides).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..data.sources import first_nonfinite
from ..errors import DataError

LR_FACTOR_ON_NAN = 0.5
MAX_ROLLBACKS = 3   # rollbacks to one good state before the run stops as diverged


def check_finite_batch(batch: tuple, index: int, target_node, source: str) -> None:
    """A DataError naming the first NaN/Inf of a floating-point array in ``batch`` (training
    batch ``index`` from ``source``); NaN targets pass where every consumer of the target
    node reads them as unlabelled."""
    consumers = target_node.children if target_node is not None else []
    nan_unlabelled = bool(consumers) and all(n.masks_nan_target for n in consumers)
    for i, array in enumerate(batch):
        if not isinstance(array, np.ndarray):
            continue
        position = first_nonfinite(array, allow_nan=i == 1 and nan_unlabelled)
        if position is None:
            continue
        refusing = [f"{type(n).__name__} {n.name!r}" for n in consumers
                    if not n.masks_nan_target]
        hint = ''
        if i == 1 and np.isnan(array[position]) and refusing:
            hint = (f" NaN targets count as unlabelled only where every node reading "
                    f"the target does so (BinaryNLL, SquaredLoss, AbsLoss, Errors); here "
                    f"{', '.join(refusing)} would not.")
        raise DataError(
            f"training batch {index} from {source}: array {i} "
            f"({'input' if i == 0 else 'target' if i == 1 else 'extra'}, shape "
            f"{array.shape}) holds NaN/Inf values, the first ({array[position]}) at index "
            f"{position}; training on it would make the parameters NaN.{hint} Check the "
            f"data files (or clean them with np.nan_to_num)")


class GoodState:
    """The model's last finite parameters and optimiser state, and the rollbacks to them."""

    def __init__(self, model, step: int):
        self.model = model
        self.saved: dict | None = None
        self.rollbacks = 0     # since the last good state
        self.record(step)

    def record(self, step: int) -> None:
        """Keep the current state as the good one if every parameter is finite."""
        if all(bool(torch.isfinite(p).all()) for p in self.model.all_params().values()):
            self.saved = {'step': step,
                          'params': {k: p.detach().clone()
                                     for k, p in self.model.all_params().items()},
                          'optimisers': copy.deepcopy(self.model.optimisers.state_dict())}
            self.rollbacks = 0

    @property
    def exhausted(self) -> bool:
        """Whether there is nothing (more) to go back to."""
        return self.saved is None or self.rollbacks >= MAX_ROLLBACKS

    def restore(self) -> int:
        """Parameters and optimiser state back to the good state (hyper-parameters set
        since stay); returns its step."""
        assert self.saved is not None, "restore() needs a good state (see exhausted)"
        self.rollbacks += 1
        model = self.model
        kept = dict(model.optimisers.hyper_params)  # values set by hand stay
        with torch.no_grad():
            for key, param in model.all_params().items():
                param.copy_(self.saved['params'][key])
        params = list(model.loss_node.all_trainable_params.values())
        model.optimisers.load_state_dict(copy.deepcopy(self.saved['optimisers']), params)
        for key, value in kept.items():  # after the optimiser state, which holds them too
            model.optimisers.set(key, value)
        return self.saved['step']
