"""Model: the container of a graph, its designated nodes and its training state.

Nodes register in the current model of :data:`model_manager` when they are
built. ``designate_nodes`` names the input, target, loss and prediction nodes;
then ``predict``, ``trainingstep``, ``save`` and :func:`modelload` work on them.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Sequence

import numpy as np
import torch

from ..config import config
from ..errors import GraphError, ModelFileError, ShapeError
from . import modelfile
from .graph_compile import GraphFunction, to_numpy
from .optimiser import Optimisers

logger = logging.getLogger('elektronn2')

#: Node classes by name; filled by ``Node.__init_subclass__``. Model files may
#: only name these classes.
NODE_CLASSES: dict[str, type] = {}

_DESIGNATIONS = ('input_node', 'target_node', 'loss_node', 'prediction_node',
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
        self.nodes: dict[str, object] = {}
        self._index: dict[object, int] = {}
        self.input_node = self.target_node = self.loss_node = None
        self.prediction_node = self.error_node = None
        self.prediction_ext: list = []
        self.debug_outputs: list = []
        self._designations: dict = {}
        self._functions: dict[tuple, GraphFunction] = {}
        self.optimisers = Optimisers()
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

    def __getitem__(self, name: str):
        if name not in self.nodes:
            raise GraphError(f"Model {self.name!r} has no node {name!r}; nodes: {list(self.nodes)}")
        return self.nodes[name]

    def __repr__(self) -> str:
        return f"Model {self.name!r} with {len(self.nodes)} nodes"

    # --- functions ------------------------------------------------------------------------
    def ordered_inputs(self, outputs: Sequence) -> list:
        """Input nodes ``outputs`` depend on: designated input, target, then model order."""
        from .node import topological_order
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

    def loss(self, *inputs: np.ndarray) -> float:
        """The loss for a batch, in inference mode."""
        return float(self._require('loss_node')(*inputs))

    def trainingstep(self, *batch: np.ndarray, optimiser: str = 'Adam',
                     update_loss: bool = False) -> tuple[float, float, list | None]:
        """One optimiser update on a batch (data, target, ...).

        Returns:
            (loss, seconds for the step, debug output values or None). With
            ``update_loss`` the loss is re-evaluated after the update.
        """
        loss_node = self._require('loss_node')
        fn = self.function([loss_node, *self.debug_outputs], training=True)
        tensors = fn.to_tensors(*batch)
        params = list(loss_node.all_trainable_params.values())
        if not params:
            raise GraphError(f"Loss {loss_node.name!r} depends on no trainable parameters")
        opt = self.optimisers.get(optimiser, params)
        outs: list = []

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            outs[:] = fn(*tensors)
            loss = outs[0].float().sum()
            loss.backward()
            return loss

        t0 = time.perf_counter()
        if isinstance(opt, torch.optim.LBFGS):
            opt.step(closure)
        else:
            closure()
            opt.step()
        loss_value = float(outs[0].detach().float().sum())
        elapsed = time.perf_counter() - t0
        if update_loss:
            loss_value = self.loss(*batch)
        self.iterations += 1
        self.elapsed_time += elapsed
        self._last_losses.append(loss_value)
        self._last_exec_times.append(elapsed)
        debug = [to_numpy(o) for o in outs[1:]] if self.debug_outputs else None
        return loss_value, elapsed, debug

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
        if np.isscalar(rates):
            rates = [rates] * len(nodes)
        if len(rates) != len(nodes):
            raise GraphError(f"{len(rates)} dropout rates given for {len(nodes)} nodes "
                             f"{[n.name for n in nodes]}")
        for node, rate in zip(nodes, rates):
            node.dropout_rate = rate

    @property
    def batch_normalisation_active(self) -> bool:
        """Whether any node normalises with batch statistics while training."""
        return any(getattr(n, 'batch_normalisation', False) == 'train' for n in self.nodes.values())

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

    def summary(self) -> str:
        """A table of every node (shape, fov, parameters, cost) with totals."""
        from .summary import model_summary
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
    def save(self, path: str | os.PathLike):
        """Write graph.json + params.safetensors (zip file, or a directory if ``path`` is one)."""
        from .node import Node
        nodes = [{'class': d['class'],
                  'args': {k: modelfile.encode_value(v, n.name, k, lambda x: isinstance(x, Node))
                           for k, v in d['args'].items()}}
                 for n in self.nodes.values() for d in [n.descriptor]]
        tensors = {k: p.detach().cpu().numpy() for k, p in self.all_params().items()}
        graph = {'name': self.name, 'nodes': nodes, 'designations': self._designations,
                 'hyper_params': self.optimisers.hyper_params, 'iterations': self.iterations}
        out = modelfile.write(path, graph, tensors)
        logger.info("Saved model %r to %s", self.name, out)
        return out


class ModelManager:
    """Keeps the models of a session; new nodes go into :meth:`getmodel`."""

    def __init__(self):
        self.models: dict[str, Model] = {}
        self.current: Model | None = None

    def newmodel(self, name: str | None = None) -> Model:
        """Create a model, make it current and return it (a taken name gets a suffix)."""
        base = name or 'model'
        unique, i = base, 0
        while unique in self.models:
            i += 1
            unique = f"{base}{i}"
        model = Model(unique)
        self.models[unique] = model
        self.current = model
        return model

    def getmodel(self, name: str | None = None) -> Model:
        """The current model (created on first use), or the model called ``name``."""
        if name is not None:
            if name not in self.models:
                raise GraphError(f"No model {name!r}; models: {list(self.models)}")
            return self.models[name]
        if self.current is None:
            return self.newmodel()
        return self.current

    def setmodel(self, model: Model) -> None:
        self.models.setdefault(model.name, model)
        self.current = model


model_manager = ModelManager()


def modelload(path: str | os.PathLike, name: str | None = None) -> Model:
    """Rebuild a model saved by :meth:`Model.save` (a new current model)."""
    graph, tensors = modelfile.read(path)
    model = model_manager.newmodel(name or graph.get('name') or 'model')
    nodes: dict = {}
    for i, descr in enumerate(graph['nodes']):
        cls = NODE_CLASSES.get(descr['class'])
        if cls is None:
            raise ModelFileError(f"{str(path)!r}: node #{i} has unknown class {descr['class']!r}; "
                                 f"known classes: {sorted(NODE_CLASSES)}")
        args = {k: modelfile.decode_value(v, nodes) for k, v in descr['args'].items()}
        args['print_repr'] = False
        try:
            node = cls(**args)
        except TypeError as err:
            raise ModelFileError(f"{str(path)!r}: node #{i} ({descr['class']}) has invalid "
                                 f"arguments: {err}") from None
        nodes[node.name] = node
    params = model.all_params()
    if set(params) != set(tensors):
        raise ModelFileError(f"{str(path)!r}: parameters do not match the graph: missing "
                             f"{sorted(set(params) - set(tensors))}, unexpected "
                             f"{sorted(set(tensors) - set(params))}")
    for key, value in tensors.items():
        node_name, param_name = key.split('.', 1)
        model[node_name].set_param_values({param_name: value})
    for key, value in graph.get('hyper_params', {}).items():
        model.optimisers.set(key, value)
    model.iterations = int(graph.get('iterations', 0))
    designations = {k: v for k, v in graph.get('designations', {}).items() if k in _DESIGNATIONS}
    if designations:
        designations.setdefault('input_node', None)
        model.designate_nodes(**designations)
    return model
