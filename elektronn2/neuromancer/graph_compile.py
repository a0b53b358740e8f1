"""Turn a set of output nodes into one torch function of the Input tensors.

A :class:`GraphFunction` evaluates the ancestors of its outputs in topological
order. It is built once per (outputs, training mode) and cached by the model.
Each call runs with :mod:`.execution` settings resolved at that moment:
parameters, inputs and results in their layout (e.g. channels-last), autocast
for reduced precision and, where enabled, the evaluation compiled by
``torch.compile``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..config import config
from ..errors import Error, GraphError, NodeError
from . import execution
from .traversal import release_schedule, topological_order


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
        self.outputs = list(outputs)
        self.inputs = list(inputs)
        self.training = training
        self.order = [n for n in topological_order(self.outputs, stop_at=self.inputs)
                      if n not in self.inputs]
        missing = [n.name for n in self.order if n.is_input]
        if missing:
            raise GraphError(f"Outputs {[o.name for o in self.outputs]} depend on inputs "
                             f"{missing} that the function does not take")
        self.device = self.outputs[0].model.device
        self._compiled: Callable | None = None
        #: values dropped after each node of ``order`` (their last consumer)
        self.release = release_schedule(self.order, self.outputs)

    def _evaluate(self, layout: Callable[[torch.Tensor], torch.Tensor],
                  *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Forward every node; ``layout`` puts inputs and results into the activation
        layout (a no-op where an operation already kept it). A value is dropped after its
        last consumer (:attr:`release`): without gradients its memory is free then."""
        values = {node: layout(t) for node, t in zip(self.inputs, tensors)}
        try:
            for node, done in zip(self.order, self.release):
                values[node] = layout(node.forward(*(values[p] for p in node.parents),
                                                   training=self.training))
                for finished in done:
                    del values[finished]
        except Error:
            raise  # elektronn2's own errors name their node already
        except Exception as err:
            raise NodeError(f"{type(node).__name__} {node.name!r} failed on inputs "
                            f"{_describe(values[p] for p in node.parents)}: "
                            f"{type(err).__name__}: {err}") from err
        return tuple(values[o] for o in self.outputs)

    def __call__(self, *tensors: torch.Tensor,
                 settings: execution.ExecutionSettings | None = None) -> tuple[torch.Tensor, ...]:
        """Evaluate on torch tensors (already on the device).

        ``settings``: how to run (default: ``execution.resolve(device)``, the settings of
        plain evaluation; ``Model.trainingstep`` passes those of optimiser updates).
        """
        settings = settings or execution.resolve(self.device)
        self.arrange_parameters(settings)
        evaluate = self._evaluate
        if settings.compile:
            if self._compiled is None:
                self._compiled = torch.compile(self._evaluate)
            evaluate = self._compiled
        try:
            with settings.autocast():
                return evaluate(settings.to_layout, *tensors)
        except Exception as err:
            if not settings.compile or isinstance(err, Error):
                raise
            raise GraphError(f"Compiled evaluation of {[o.name for o in self.outputs]} on "
                             f"inputs {_describe(tensors)} failed (torch.compile does not "
                             f"tell which node; set compile off to find it): "
                             f"{type(err).__name__}: {err}") from err

    def arrange_parameters(self, settings: execution.ExecutionSettings) -> None:
        """Store the parameters of the evaluated nodes in the layout of ``settings``."""
        settings.arrange(p for node in self.order for p in node.params.values())

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

    def numpy(self, *arrays: np.ndarray,
              settings: execution.ExecutionSettings | None = None) -> list[np.ndarray]:
        """Evaluate on numpy inputs without gradients; return numpy outputs (float32 for
        reduced precision). ``settings``: as for :meth:`__call__`."""
        tensors = self.to_tensors(*arrays)
        with torch.no_grad():
            outs = self(*tensors, settings=settings)
        return [to_numpy(o) for o in outs]


def _describe(tensors) -> str:
    """Shapes and dtypes of ``tensors``, e.g. ``[(2, 3, 5) float32]``."""
    return '[' + ', '.join(f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
                           for t in tensors) + ']'


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Detached CPU numpy array in C order; reduced-precision floats come back as float32."""
    tensor = tensor.detach()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.contiguous().cpu().numpy()
