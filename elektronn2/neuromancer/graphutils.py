"""ELEKTRONN2's ``neuromancer.graphutils`` on this package's graph: ``TaggedShape`` (the
one of :mod:`.shape`, which takes ELEKTRONN2's arguments), :class:`make_func`,
:func:`getinput_for_multioutput` and :func:`as_floatX`.

In ELEKTRONN2 these wrapped Theano variables and functions; here a "function" is a
:class:`~.graph_compile.GraphFunction` of nodes.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from ..config import config
from ..errors import ConfigError
from .graph_compile import GraphFunction
from .node import Node
from .shape import TaggedShape as TaggedShape  # ELEKTRONN2's path of the one TaggedShape
from .traversal import topological_order

__all__ = ['as_floatX', 'getinput_for_multioutput', 'make_func']


def as_floatX(x) -> np.ndarray:  # noqa: N802  (ELEKTRONN2's name)
    """``x`` as a numpy array of the configured float dtype (float32 by default)."""
    dtype = str(config.torch_float_dtype).replace('torch.', '')
    return np.asarray(x, dtype=np.float32 if dtype == 'bfloat16' else dtype)


def getinput_for_multioutput(outputs: Sequence[Node]) -> list[Node]:
    """The Input nodes the ``outputs`` depend on, in the order their functions take them."""
    outputs = list(outputs)
    return outputs[0].model.ordered_inputs(outputs) if outputs else []


class make_func:  # noqa: N801  (ELEKTRONN2's name)
    """A callable computing ``tt_output`` (a node or list of nodes) from numpy values of
    ``tt_input`` (Input nodes; None: those the outputs need), in inference mode.

    Returns one array for a single output node, else a list. ``last_exec_time``: seconds
    of the last call. ``updates`` (Theano update pairs) do not exist in torch.
    """

    def __init__(self, tt_input, tt_output, updates=None, name: str = 'Unnamed Function',
                 borrow_inp: bool = False, borrow_out: bool = False,
                 profile_execution: bool = False):
        if updates:
            raise ConfigError(f"make_func {name!r}: Theano updates do not exist in torch; "
                              f"use an optimiser (nm.optimiser.SGD, ...) for parameter updates")
        self.single = isinstance(tt_output, Node)
        outputs = [tt_output] if self.single else list(tt_output)
        inputs = (getinput_for_multioutput(outputs) if tt_input is None
                  else [tt_input] if isinstance(tt_input, Node) else list(tt_input))
        unreachable = [n.name for n in inputs if n not in topological_order(outputs)]
        if unreachable:
            raise ConfigError(f"make_func {name!r}: inputs {unreachable} do not feed "
                              f"{[o.name for o in outputs]}")
        self.name = name
        self.func = GraphFunction(outputs, inputs, training=False)
        self.last_exec_time: float | None = None

    def __call__(self, *args: np.ndarray):
        t0 = time.perf_counter()
        outs = self.func.numpy(*args)
        self.last_exec_time = time.perf_counter() - t0
        return outs[0] if self.single else outs

    def __repr__(self) -> str:
        return f"<make_func {self.name!r}: {[n.name for n in self.func.inputs]} -> " \
               f"{[n.name for n in self.func.outputs]}>"
