"""Model: the container of a graph, its designated nodes and its training state.

Nodes register in the current model of :data:`.registry.model_manager` when they are
built. ``designate_nodes`` names the input, target, loss and prediction nodes; then
``predict``, ``trainingstep`` (:mod:`.training_step`), ``save`` (:mod:`.modelfile`) and
:func:`.loading.modelload` work on them.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch

from ..config import config
from ..errors import GraphError, ShapeError
from . import modelfile, training_step
from .graph_compile import GraphFunction, to_numpy
from .optimiser import Optimisers
from .summary import model_summary
from .traversal import topological_order

if TYPE_CHECKING:
    from .node import Node

logger = logging.getLogger('elektronn2')

#: The purposes ``designate_nodes`` accepts (and a model file stores).
DESIGNATIONS = ('input_node', 'target_node', 'loss_node', 'prediction_node',
                'error_node', 'prediction_ext', 'debug_outputs')


class Model:
    """A neural network graph and its training state.

    Attributes:
        nodes: name -> node, in construction order.
        input_node, target_node, loss_node, prediction_node, error_node: designated nodes.
        prediction_ext: nodes returned by :meth:`predict_ext` (e.g. [loss, errors, prediction]).
        debug_outputs: extra nodes returned by :meth:`trainingstep` (monitoring targets).
        iterations: training steps done; elapsed_time: seconds spent in them.
        device: torch device of the parameters (``config.device`` at creation).
    """

    def __init__(self, name: str = ''):
        self.name = name
        self.device = config.torch_device
        self.nodes: dict[str, Node] = {}
        self._index: dict[Node, int] = {}
        self.input_node: Node | None = None
        self.target_node: Node | None = None
        self.loss_node: Node | None = None
        self.prediction_node: Node | None = None
        self.error_node: Node | None = None
        self.prediction_ext: list[Node] = []
        self.debug_outputs: list[Node] = []
        self._designations: dict = {}
        self._functions: dict[tuple, GraphFunction] = {}
        self.optimisers = Optimisers()
        #: loss scaler of fp16 training (created by the first fp16 training step)
        self.grad_scaler: torch.amp.GradScaler | None = None
        #: wraps the training GraphFunction for data-parallel training (set by
        #: :mod:`elektronn2.training.distributed`); None runs the function itself
        self.parallel_wrapper: Callable[[GraphFunction], Callable] | None = None
        self.iterations = 0
        self.elapsed_time = 0.0
        self._last_losses: deque[float] = deque(maxlen=50)
        self._last_exec_times: deque[float] = deque(maxlen=50)

    # --- registry --------------------------------------------------------------------------
    def unique_name(self, name: str) -> str:
        """``name`` if free, else ``name1``, ``name2``, ..."""
        if not isinstance(name, str) or not name:
            raise GraphError(f"Node names must be non-empty strings, got {name!r}")
        candidate, i = name, 0
        while candidate in self.nodes:
            i += 1
            candidate = f"{name}{i}"
        return candidate

    def register(self, node) -> None:
        self._index[node] = len(self.nodes)
        self.nodes[node.name] = node

    def node_index(self, node) -> int:
        return self._index[node]

    def __getitem__(self, name: str | int | slice):
        """The node called ``name``; as in ELEKTRONN2, an int or slice indexes the nodes in
        the order they were made (so ``list(model)`` gives the nodes)."""
        if isinstance(name, (int, slice)) and not isinstance(name, bool):
            return list(self.nodes.values())[name]
        if name not in self.nodes:
            raise GraphError(f"Model {self.name!r} has no node {name!r}; nodes: {list(self.nodes)}")
        return self.nodes[name]

    def __contains__(self, name) -> bool:
        return name in self.nodes

    def __repr__(self) -> str:
        return f"Model {self.name!r} with {len(self.nodes)} nodes: {list(self.nodes)}"

    # --- functions ------------------------------------------------------------------------
    def ordered_inputs(self, outputs: Sequence) -> list:
        """Input nodes ``outputs`` depend on: designated input, target, then model order."""
        needed = [n for n in topological_order(list(outputs)) if n.is_input]
        first = [n for n in (self.input_node, self.target_node) if n is not None]
        return sorted(needed, key=lambda n: (first.index(n) if n in first else len(first),
                                             self._index[n]))

    def function(self, outputs: Sequence, training: bool = False) -> GraphFunction:
        """The (cached) function computing ``outputs`` from their inputs."""
        key = (tuple(n.name for n in outputs), training)
        if key not in self._functions:
            self._functions[key] = GraphFunction(outputs, self.ordered_inputs(outputs), training)
            logger.debug("Built graph function for %s (training=%s)", key[0], training)
        return self._functions[key]

    # --- designation -------------------------------------------------------------------
    def designate_nodes(self, input_node='input', target_node=None, loss_node=None,
                        prediction_node=None, prediction_ext=None, error_node=None,
                        debug_outputs=None) -> None:
        """Register the special nodes (by node or by name)."""
        given = dict(input_node=input_node, target_node=target_node, loss_node=loss_node,
                     prediction_node=prediction_node, error_node=error_node,
                     prediction_ext=prediction_ext or [], debug_outputs=debug_outputs or [])
        for purpose, value in given.items():
            if isinstance(value, (list, tuple)):
                nodes = [self._lookup(v, purpose) for v in value]
                setattr(self, purpose, nodes)
                self._designations[purpose] = [n.name for n in nodes]
            elif value is not None:
                node = self._lookup(value, purpose)
                setattr(self, purpose, node)
                self._designations[purpose] = node.name
            else:
                setattr(self, purpose, None)
                self._designations.pop(purpose, None)
        if self.loss_node is not None and (None in self.loss_node.shape.shape
                                           or self.loss_node.shape.stripnone_prod != 1):
            raise ShapeError(f"loss_node {self.loss_node.name!r} has shape {self.loss_node.shape}; "
                             f"it must be a scalar: wrap it in AggregateLoss")
        if self.prediction_node is not None:
            logger.info("Prediction %r: %s", self.prediction_node.name,
                        self.prediction_node.shape.ext_repr)

    def _lookup(self, node_or_name, purpose: str):
        name = node_or_name if isinstance(node_or_name, str) else node_or_name.name
        if name not in self.nodes or (not isinstance(node_or_name, str)
                                      and self.nodes[name] is not node_or_name):
            raise GraphError(f"designate_nodes({purpose}=...): model {self.name!r} has no node "
                             f"{name!r}; nodes: {list(self.nodes)}")
        return self.nodes[name]

    def _require(self, purpose: str):
        node = getattr(self, purpose)
        if node is None or node == []:
            raise GraphError(f"Model {self.name!r} has no {purpose}: call "
                             f"model.designate_nodes({purpose}=...) first")
        return node

    # --- running -------------------------------------------------------------------------
    def predict(self, *inputs: np.ndarray) -> np.ndarray:
        """The prediction node's output for numpy inputs (inference mode)."""
        return self._require('prediction_node')(*inputs)

    def predict_ext(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs of all ``prediction_ext`` nodes (inference mode)."""
        return self.function(self._require('prediction_ext')).numpy(*inputs)

    def predict_dense(self, raw_img: np.ndarray, as_uint8: bool = False,
                      pad_raw: bool = False, tta: str = 'none') -> np.ndarray:
        """Dense prediction (f, *spatial) of a whole image (ch, *spatial); dropout is off.
        ``tta``: test-time augmentation, 'none', 'flips' or 'dihedral'
        (:func:`.dense.predict_dense`)."""
        return self._require('prediction_node').predict_dense(raw_img, as_uint8, pad_raw,
                                                              tta=tta)

    def loss(self, *inputs: np.ndarray) -> float:
        """The loss for a batch, in inference mode."""
        return float(self._require('loss_node')(*inputs))

    def trainingstep(self, *batch: np.ndarray, optimiser: str = 'Adam',
                     update_loss: bool = False) -> tuple[float, float, list | None]:
        """One optimiser update on a batch (data, target, ...).

        Runs with the execution settings of training steps (see :mod:`.execution`;
        LBFGS always with the contiguous layout); with fp16 the loss is scaled by
        :attr:`grad_scaler` (see :func:`.training_step.run`).

        Returns:
            (loss, seconds for the step, debug output values or None). With
            ``update_loss`` the loss is re-evaluated after the update.
        """
        loss_value, elapsed, outs = training_step.run(self, self._require('loss_node'),
                                                      batch, optimiser)
        if update_loss:
            loss_value = self.loss(*batch)
        self.iterations += 1
        self.elapsed_time += elapsed
        self._last_losses.append(loss_value)
        self._last_exec_times.append(elapsed)
        debug = [to_numpy(o) for o in outs[1:]] if self.debug_outputs else None
        return loss_value, elapsed, debug

    @property
    def recent_losses(self) -> tuple[float, ...]:
        """Losses of the last (up to 50) training steps, oldest first."""
        return tuple(self._last_losses)

    def restore_recent_losses(self, values: Iterable[float]) -> None:
        """Append ``values`` (e.g. :attr:`recent_losses` from a checkpoint) to the recent
        losses, as if they came from training steps (iterations do not change)."""
        self._last_losses.extend(float(v) for v in values)

    @property
    def loss_smooth(self) -> float:
        """Mean loss of the last (up to 50) training steps."""
        return float(np.mean(self._last_losses)) if self._last_losses else float('nan')

    @property
    def time_per_step(self) -> float:
        return float(np.mean(self._last_exec_times)) if self._last_exec_times else float('nan')

    # --- hyper-parameters ---------------------------------------------------------------
    lr = property(lambda self: self.optimisers.hyper_params['lr'],
                  lambda self, v: self.optimisers.set('lr', v), doc="Learning rate.")
    mom = property(lambda self: self.optimisers.hyper_params['mom'],
                   lambda self, v: self.optimisers.set('mom', v), doc="Momentum (Adam: beta1).")
    beta2 = property(lambda self: self.optimisers.hyper_params['beta2'],
                     lambda self, v: self.optimisers.set('beta2', v), doc="Adam's beta2.")
    wd = property(lambda self: self.optimisers.hyper_params['wd'],
                  lambda self, v: self.optimisers.set('wd', v), doc="Weight decay.")

    def _nodes_with(self, attribute: str) -> list:
        return [n for n in self.nodes.values() if hasattr(n, attribute)]

    @property
    def dropout_rates(self) -> list[float]:
        """Dropout rate of every node that has one, in model order."""
        return [n.dropout_rate for n in self._nodes_with('dropout_rate')]

    @dropout_rates.setter
    def dropout_rates(self, rates: float | Sequence[float]) -> None:
        nodes = self._nodes_with('dropout_rate')
        per_node = ([rates] * len(nodes) if isinstance(rates, (int, float, np.number))
                    else list(rates))
        if len(per_node) != len(nodes):
            raise GraphError(f"{len(per_node)} dropout rates given for {len(nodes)} nodes "
                             f"{[n.name for n in nodes]}")
        for node, rate in zip(nodes, per_node):
            node.dropout_rate = rate

    @property
    def batch_normalisation_active(self) -> bool:
        """Whether any node normalises with batch statistics while training."""
        return any(n.batch_normalisation == 'train' for n in self.nodes.values())

    @property
    def batch_size(self) -> int | None:
        return self._require('input_node').shape.batch_size

    # --- parameters ---------------------------------------------------------------------
    def get_param_values(self, skip_const: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """node name -> {param name -> array}."""
        return {name: node.get_param_values(skip_const) for name, node in self.nodes.items()
                if node.params}

    def set_param_values(self, values: dict[str, dict[str, np.ndarray]],
                         skip_const: bool = False) -> None:
        for name, node_values in values.items():
            self[name].set_param_values(node_values, skip_const)

    def all_params(self) -> dict[str, torch.Tensor]:
        """``'node.param' -> tensor`` of every node (shared tensors once)."""
        out, seen = {}, set()
        for name, node in self.nodes.items():
            for key, p in node.params.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    out[f"{name}.{key}"] = p
        return out

    def paramstats(self) -> str:
        """Table of mean, std and median |value| of every trainable parameter."""
        return _stats_table({k: p for k, p in self.all_params().items() if p.requires_grad})

    def gradstats(self, *batch: np.ndarray) -> str:
        """Table of the loss gradients' statistics for a batch (inference mode, no update)."""
        loss_node = self._require('loss_node')
        fn = self.function([loss_node], training=False)
        params = loss_node.all_trainable_params
        grads = torch.autograd.grad(fn(*fn.to_tensors(*batch))[0].float().sum(),
                                    list(params.values()), allow_unused=True)
        return _stats_table({k: g for k, g in zip(params, grads) if g is not None})

    def actstats(self, *batch: np.ndarray) -> str:
        """Table of the activations' statistics of every computed node for a batch."""
        nodes = [n for n in self.nodes.values() if not n.is_input
                 and set(n.input_nodes) <= set(self.ordered_inputs([self._require('loss_node')]))]
        values = self.function(nodes, training=False).numpy(*batch)
        return _stats_table(dict(zip((n.name for n in nodes), values)))

    def summary(self) -> str:
        """A table of every node (shape, fov, parameters, cost) with totals."""
        return model_summary(self)

    def test_run_prediction(self, batch_size: int = 1):
        """Test-run the prediction node on random input."""
        return self._require('prediction_node').test_run(batch_size=batch_size)

    def measure_exectimes(self, n_samples: int = 5, n_warmup: int = 4,
                          print_info: bool = True) -> dict[str, float]:
        """node name -> median milliseconds of its own forward."""
        return {name: node.measure_exectime(n_samples, n_warmup, print_info)
                for name, node in self.nodes.items() if not node.is_input}

    # --- saving -----------------------------------------------------------------------------
    def serialise(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(graph, parameter arrays) as stored in a model file."""
        own = {id(n) for n in self.nodes.values()}  # node arguments refer to nodes of this model
        nodes = [{'class': d['class'],
                  'args': {k: modelfile.encode_value(v, n.name, k, lambda x: id(x) in own)
                           for k, v in d['args'].items()}}
                 for n in self.nodes.values() for d in [n.descriptor]]
        tensors = {k: p.detach().cpu().numpy() for k, p in self.all_params().items()}
        graph = {'name': self.name, 'nodes': nodes, 'designations': dict(self._designations),
                 'hyper_params': self.optimisers.hyper_params, 'iterations': self.iterations}
        return graph, tensors

    def save(self, path: str | os.PathLike):
        """Write graph.json + params.safetensors: a zip file, or a directory if ``path`` is
        one or ends with a separator (see :func:`.modelfile.write`). Refuses
        (ModelFileError) to write non-finite parameters."""
        graph, tensors = self.serialise()
        out = modelfile.write(path, graph, tensors)
        logger.debug("Saved model %r to %s", self.name, out)
        return out


def _stats_table(values: dict) -> str:
    """name, shape, mean, std, median |x| per tensor or array."""
    rows = [f"{'name':<28} {'shape':<22} {'mean':>11} {'std':>11} {'median|x|':>11}"]
    for name, v in values.items():
        a = to_numpy(v) if torch.is_tensor(v) else np.asarray(v)
        a = a.astype(np.float64)
        rows.append(f"{name:<28} {str(tuple(a.shape)):<22} {a.mean():>11.4g} {a.std():>11.4g} "
                    f"{np.median(np.abs(a)):>11.4g}")
    return '\n'.join(rows)
