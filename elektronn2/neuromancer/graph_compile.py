"""Turn a set of output nodes into one torch function of the Input tensors.

A :class:`GraphFunction` evaluates the ancestors of its outputs in topological
order. It is built once per (outputs, training mode) and cached by the model;
with ``config.compile`` on, the evaluation passes through ``torch.compile``.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from ..config import config
from ..errors import GraphError

_AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def autocast_context(device: torch.device):
    """The autocast context for the configured precision (a no-op for fp32)."""
    dtype = _AUTOCAST_DTYPES.get(config.precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class GraphFunction:
    """Outputs of ``outputs`` as a function of the tensors of ``inputs``.

    Args:
        outputs: nodes to compute.
        inputs: the nodes whose values the function takes, in argument order:
            Input nodes, or any node to feed a value in place of computing it
            (its ancestors are then not evaluated). Every Input the outputs
            depend on must be among them.
        training: whether dropout and batch-norm run in training mode.
    """

    def __init__(self, outputs: Sequence, inputs: Sequence, training: bool):
        from .node import topological_order
        self.outputs = list(outputs)
        self.inputs = list(inputs)
        self.training = training
        self.order = [n for n in topological_order(self.outputs, stop_at=self.inputs)
                      if n not in self.inputs]
        missing = [n.name for n in self.order if n.is_input]
        if missing:
            raise GraphError(f"Outputs {[o.name for o in self.outputs]} depend on inputs "
                             f"{missing} that the function does not take")
        self._evaluate_compiled = (torch.compile(self._evaluate) if config.use_compile
                                   else self._evaluate)

    def _evaluate(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = dict(zip(self.inputs, tensors))
        for node in self.order:
            values[node] = node.forward(*(values[p] for p in node.parents),
                                        training=self.training)
        return tuple(values[o] for o in self.outputs)

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Evaluate on torch tensors (already on the device)."""
        with autocast_context(config.torch_device):
            return self._evaluate_compiled(*tensors)

    def to_tensors(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        """Check and convert numpy inputs (one per input node) to device tensors."""
        if len(arrays) != len(self.inputs):
            names = [n.name for n in self.inputs]
            raise GraphError(f"Computing {[o.name for o in self.outputs]} needs "
                             f"{len(self.inputs)} input(s) {names}, got {len(arrays)}")
        return [node.to_tensor(a) if node.is_input else
                torch.as_tensor(np.asarray(a), dtype=config.torch_float_dtype,
                                device=node.model.device)
                for node, a in zip(self.inputs, arrays)]

    def numpy(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Evaluate on numpy inputs without gradients; return numpy outputs."""
        tensors = self.to_tensors(*arrays)
        with torch.no_grad():
            outs = self(*tensors)
        return [to_numpy(o) for o in outs]


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Detached CPU numpy copy; reduced-precision floats come back as float32."""
    tensor = tensor.detach()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.cpu().numpy()
