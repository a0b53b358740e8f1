"""The optimiser step of a model: one update on a batch, with the execution settings of
training steps (:mod:`.execution`), fp16 loss scaling and an optional data-parallel
wrapper. :meth:`.Model.trainingstep` runs it and keeps the statistics.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError, GraphError
from . import execution

if TYPE_CHECKING:
    from .container import Model
    from .graph_compile import GraphFunction
    from .node import Node


def run(model: Model, loss_node: Node, batch: tuple[np.ndarray, ...], optimiser: str,
        params: list[torch.Tensor] | None = None,
        fn: GraphFunction | None = None) -> tuple[float, float, list[torch.Tensor]]:
    """One update of the parameters ``loss_node`` depends on, by ``optimiser``.

    ``params`` (default: all trainable parameters of the loss) restricts the update;
    ``fn`` (default: the model's function of the loss and ``model.debug_outputs``) is
    the training-mode function whose first output is the loss.

    LBFGS runs with the contiguous layout (it flattens gradients with ``view(-1)``);
    with fp16 the loss is scaled by ``model.grad_scaler`` (see :func:`grad_scaler_for`);
    ``model.parallel_wrapper``, if set, wraps the graph function.

    Returns:
        (loss, seconds for the update, output tensors: the loss, then the values of
        ``model.debug_outputs``).
    """
    fn = fn or model.function([loss_node, *model.debug_outputs], training=True)
    tensors = fn.to_tensors(*batch)
    params = list(loss_node.all_trainable_params.values()) if params is None else list(params)
    if not params:
        raise GraphError(f"Loss {loss_node.name!r} depends on no trainable parameters")
    opt = model.optimisers.get(optimiser, params)
    settings = execution.resolve(model.device, update=True)
    if isinstance(opt, torch.optim.LBFGS):  # it flattens gradients with view(-1)
        settings = dataclasses.replace(settings, memory_format='contiguous')
    scaler = grad_scaler_for(model, settings, opt)
    forward = fn if model.parallel_wrapper is None else model.parallel_wrapper(fn)
    outs: list = []

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        outs[:] = forward(*tensors, settings=settings)
        loss = outs[0].float().sum()
        (loss if scaler is None else scaler.scale(loss)).backward()
        return loss

    t0 = time.perf_counter()
    if isinstance(opt, torch.optim.LBFGS):
        opt.step(closure)
    elif scaler is not None:
        closure()
        scaler.step(opt)
        scaler.update()
    else:
        closure()
        opt.step()
    loss_value = float(outs[0].detach().float().sum())
    return loss_value, time.perf_counter() - t0, outs


def grad_scaler_for(model: Model, settings: execution.ExecutionSettings,
                    opt: torch.optim.Optimizer) -> torch.amp.GradScaler | None:
    """``model.grad_scaler`` when ``settings`` need one (fp16), created on first use."""
    if not settings.grad_scaling:
        return None
    if isinstance(opt, torch.optim.LBFGS):
        raise ConfigError("precision 'fp16' needs gradient scaling, which the LBFGS "
                          "optimiser does not support; use precision 'bf16' or 'fp32'")
    if model.grad_scaler is None:
        model.grad_scaler = torch.amp.GradScaler(settings.device.type)
    return model.grad_scaler
