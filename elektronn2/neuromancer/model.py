"""Model: the container of a graph, its designated nodes and its training state.

Nodes register in the current model of :data:`model_manager` when they are
built. ``designate_nodes`` names the input, target, loss and prediction nodes;
then ``predict``, ``trainingstep``, ``save`` and :func:`modelload` work on them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections import deque
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import config
from ..errors import ConfigError, Error, GraphError, ModelFileError, ShapeError
from . import execution, modelfile, surgery
from .graph_compile import GraphFunction, to_numpy
from .optimiser import Optimisers

logger = logging.getLogger('elektronn2')

#: Node classes by name; filled by ``Node.__init_subclass__``. Model files may
#: only name these classes.
NODE_CLASSES: dict[str, type] = {}
#: Largest size of any axis of a node built from a model file.
MAX_AXIS_SIZE = 2 ** 24
#: Most values per example (all axes but the batch) of a node built from a model file.
MAX_NODE_VALUES = 2 ** 32

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

    def predict_dense(self, raw_img: np.ndarray, as_uint8: bool = False,
                      pad_raw: bool = False) -> np.ndarray:
        """Dense prediction (f, *spatial) of a whole image (ch, *spatial); dropout is off."""
        return self._require('prediction_node').predict_dense(raw_img, as_uint8, pad_raw)

    def loss(self, *inputs: np.ndarray) -> float:
        """The loss for a batch, in inference mode."""
        return float(self._require('loss_node')(*inputs))

    def trainingstep(self, *batch: np.ndarray, optimiser: str = 'Adam',
                     update_loss: bool = False) -> tuple[float, float, list | None]:
        """One optimiser update on a batch (data, target, ...).

        Runs with the execution settings of training steps (see :mod:`.execution`;
        LBFGS always with the contiguous layout); with fp16 the loss is scaled by
        :attr:`grad_scaler`.

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
        settings = execution.resolve(self.device, update=True)
        if isinstance(opt, torch.optim.LBFGS):  # it flattens gradients with view(-1)
            settings = dataclasses.replace(settings, memory_format='contiguous')
        scaler = self._grad_scaler_for(settings, opt)
        forward = fn if self.parallel_wrapper is None else self.parallel_wrapper(fn)
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
        elapsed = time.perf_counter() - t0
        if update_loss:
            loss_value = self.loss(*batch)
        self.iterations += 1
        self.elapsed_time += elapsed
        self._last_losses.append(loss_value)
        self._last_exec_times.append(elapsed)
        debug = [to_numpy(o) for o in outs[1:]] if self.debug_outputs else None
        return loss_value, elapsed, debug

    def _grad_scaler_for(self, settings: execution.ExecutionSettings,
                         opt: torch.optim.Optimizer) -> torch.amp.GradScaler | None:
        """The loss scaler when ``settings`` need one (fp16), created on first use."""
        if not settings.grad_scaling:
            return None
        if isinstance(opt, torch.optim.LBFGS):
            raise ConfigError("precision 'fp16' needs gradient scaling, which the LBFGS "
                              "optimiser does not support; use precision 'bf16' or 'fp32'")
        if self.grad_scaler is None:
            self.grad_scaler = torch.amp.GradScaler(settings.device.type)
        return self.grad_scaler

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
    def serialise(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(graph, parameter arrays) as stored in a model file."""
        from .node import Node
        nodes = [{'class': d['class'],
                  'args': {k: modelfile.encode_value(v, n.name, k, lambda x: isinstance(x, Node))
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

    def discard(self, model: Model) -> None:
        """Forget ``model`` (e.g. a failed build); the current model becomes the last one left."""
        self.models.pop(model.name, None)
        if self.current is model:
            self.current = next(reversed(self.models.values()), None)

    def setmodel(self, model: Model) -> None:
        self.models.setdefault(model.name, model)
        self.current = model


model_manager = ModelManager()


def modelload(path: str | os.PathLike, imposed_patch_size: Sequence[int] | None = None,
              imposed_batch_size: int | None = None, override_mfp_to_active: bool = False,
              replace_bn: str | None = None, lock_trainable_params: bool | Sequence[str] | None = None,
              make_weights_constant: bool = False, name: str | None = None) -> Model:
    """Rebuild a model saved by :meth:`Model.save` (it becomes the current model).

    A model file can only describe computation: node classes, ApplyFunc's functions and
    all other names are looked up in allow-lists, and the nodes are built on the meta
    device, each checked right after it is built (output at most :data:`MAX_NODE_VALUES`
    values per example and :data:`MAX_AXIS_SIZE` per axis; every parameter exactly as
    stored) before memory is allocated for the stored values. Any violation, like
    non-finite parameters, is a ModelFileError naming the file, node and parameter.

    Args:
        imposed_patch_size: new spatial size of the input (snapped to the nearest size the
            network accepts, with a warning).
        imposed_batch_size: new batch size of the input.
        override_mfp_to_active: switch max-fragment pooling on in all max-pooling layers and
            append FragmentsToDense to the prediction (dense predictions in one pass).
        replace_bn: 'predict' (use accumulated statistics), 'const' (also freeze gamma and
            beta) or 'remove' (fold the normalisation into the weights).
        lock_trainable_params: True, or names of nodes whose parameters become constant.
        make_weights_constant: make every parameter constant.
    """
    graph, tensors = modelfile.read(path)
    return _build_edited(graph, tensors, str(path), imposed_patch_size, imposed_batch_size,
                         override_mfp_to_active, replace_bn, lock_trainable_params,
                         make_weights_constant, name)


def rebuild_model(model: Model, imposed_patch_size: Sequence[int] | None = None,
                  imposed_batch_size: int | None = None, override_mfp_to_active: bool = False,
                  replace_bn: str | None = None,
                  lock_trainable_params: bool | Sequence[str] | None = None,
                  make_weights_constant: bool = False, name: str | None = None) -> Model:
    """A new model rebuilt from ``model``'s descriptors and parameters with the same edits
    as :func:`modelload` offers."""
    graph, tensors = model.serialise()
    return _build_edited(graph, tensors, f"model {model.name!r}", imposed_patch_size,
                         imposed_batch_size, override_mfp_to_active, replace_bn,
                         lock_trainable_params, make_weights_constant, name)


def _build_edited(graph, tensors, source, imposed_patch_size, imposed_batch_size,
                  override_mfp_to_active, replace_bn, lock_trainable_params,
                  make_weights_constant, name) -> Model:
    with _stored_graph_errors(source):
        graph, tensors, frozen = surgery.edited(graph, tensors, imposed_batch_size,
                                                override_mfp_to_active, replace_bn)
    # without shape edits, a node that does not fit its parents means a broken file
    shape_edits = (imposed_patch_size is not None or imposed_batch_size is not None
                   or override_mfp_to_active)
    if imposed_patch_size is not None:
        model = _build_with_patch_size(graph, tensors, source, tuple(imposed_patch_size), name)
    else:
        model = _build(graph, tensors, source, name, strict_shapes=not shape_edits)
    try:
        _freeze(model, frozen, lock_trainable_params, make_weights_constant)
    except BaseException:
        model_manager.discard(model)
        raise
    return model


@contextlib.contextmanager
def _stored_graph_errors(source: str):
    """Surgery on a stored graph that does not have the expected form: a ModelFileError."""
    try:
        yield
    except Error:
        raise
    except Exception as err:
        raise ModelFileError(f"{source}: the stored graph cannot be edited as asked: "
                             f"{type(err).__name__}: {err}") from None


def _freeze(model: Model, frozen: list[str], lock_trainable_params, make_weights_constant) -> None:
    params = model.all_params()
    if make_weights_constant or lock_trainable_params is True:
        frozen = list(params)
    elif lock_trainable_params:
        unknown = set(lock_trainable_params) - set(model.nodes)
        if unknown:
            raise GraphError(f"lock_trainable_params names unknown nodes {sorted(unknown)}")
        frozen = frozen + [k for k in params if k.split('.', 1)[0] in set(lock_trainable_params)]
    for key in frozen:
        params[key].requires_grad_(False)


def _build_with_patch_size(graph, tensors, source, desired: tuple, name) -> Model:
    """Build with the input's spatial sizes set to ``desired``, snapped to valid sizes."""
    with _stored_graph_errors(source):
        tags = list(surgery.input_spatial_sizes(graph))
    if len(desired) != len(tags):
        raise ShapeError(f"imposed_patch_size {desired} has {len(desired)} entries, the input "
                         f"has {len(tags)} spatial axes {tags}")
    sizes = dict(zip(tags, desired))
    for _ in range(4 * len(graph['nodes'])):
        with _stored_graph_errors(source):
            surgery.set_input_sizes(graph, sizes)
        try:
            model = _build(graph, tensors, source, name, strict_shapes=False)
        except ShapeError as err:
            suggestion = err.suggestion
            if suggestion is None or suggestion.axis not in sizes:
                raise
            target = dict(zip(tags, desired))[suggestion.axis]
            sizes[suggestion.axis] = min(suggestion.valid, key=lambda n: (abs(n - target), n))
            sizes.update(suggestion.other_axes)
            continue
        snapped = tuple(sizes[t] for t in tags)
        if snapped != desired:
            logger.warning("imposed_patch_size %s is not valid for this network; using the "
                           "nearest valid size %s", desired, snapped)
        return model
    raise ShapeError(f"no valid patch size found near imposed_patch_size {desired}")


def _build(graph: dict, tensors: dict[str, np.ndarray], source: str, name: str | None,
           strict_shapes: bool = True) -> Model:
    """Construct nodes from descriptors in a new current model; set parameters and state.

    The nodes are built on the meta device, so that no memory is allocated before every
    size is checked (:func:`_construct_nodes`); then the parameters get the stored values
    on the model's device. With ``strict_shapes`` a ShapeError (a node that does not fit
    its parents) becomes a ModelFileError. On failure the half-built model is discarded.
    """
    model = model_manager.newmodel(name or graph.get('name') or 'model')
    device, model.device = model.device, torch.device('meta')
    try:
        with torch.device('meta'):
            _construct_nodes(graph, tensors, source, strict_shapes)
        model.device = device
        _materialise(model, tensors)
        _restore_state(model, graph, source)
    except BaseException:
        model_manager.discard(model)
        raise
    return model


def _construct_nodes(graph: dict, tensors: dict[str, np.ndarray], source: str,
                     strict_shapes: bool) -> None:
    """Build the nodes in order; each is checked right after it is built: its output size
    and the shapes of the parameters it creates (against the stored tensors)."""
    nodes: dict = {}
    stored_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    created: dict[int, str] = {}
    for i, descr in enumerate(graph['nodes']):
        node = _construct_node(i, descr, nodes, stored_shapes, source, strict_shapes)
        _check_node_params(node, stored_shapes, created, source)
        _check_node_size(node, source)
        nodes[node.name] = node
    unexpected = sorted(set(stored_shapes) - set(created.values()))
    if unexpected:
        raise ModelFileError(f"{source}: parameters do not match the graph: unexpected "
                             f"{unexpected[:10]} (no node creates them)")


def _construct_node(i: int, descr: dict, nodes: dict, stored_shapes: dict, source: str,
                    strict_shapes: bool):
    cls_name, name = descr['class'], descr['args'].get('name')
    cls = NODE_CLASSES.get(cls_name) if not cls_name.startswith('_') else None
    if cls is None:
        raise ModelFileError(f"{source}: node #{i} has unknown class {cls_name!r}; "
                             f"known classes: {sorted(c for c in NODE_CLASSES if c[0] != '_')}")
    try:
        args = {k: modelfile.decode_value(v, nodes, stored_shapes.get(f"{name}.{k}"),
                                          f"{source}: node {name!r}, argument {k!r}")
                for k, v in descr['args'].items()}
        return cls(**{**args, 'print_repr': False})
    except ModelFileError:
        raise
    except ShapeError as err:
        if not strict_shapes:
            raise
        raise ModelFileError(f"{source}: node #{i} ({cls_name} {name!r}) cannot be built "
                             f"as stored: {err}") from None
    except Exception as err:
        raise ModelFileError(f"{source}: node #{i} ({cls_name} {name!r}) has invalid "
                             f"arguments: {type(err).__name__}: {err}") from None


def _check_node_size(node, source: str) -> None:
    """Refuse a node whose output would be larger than any real network's."""
    sh = node.shape
    values = math.prod(s for s, t in zip(sh.shape, sh.tags) if s is not None and t != 'b')
    largest = max((s for s in sh.shape if s is not None), default=0)
    if values > MAX_NODE_VALUES or largest > MAX_AXIS_SIZE:
        raise ModelFileError(f"{source}: node {node.name!r} ({type(node).__name__}) has output "
                             f"shape {sh.shape} (tags {','.join(sh.tags)}): {values:,} values "
                             f"per example, axes up to {largest:,}; allowed are at most "
                             f"{MAX_NODE_VALUES:,} values per example and {MAX_AXIS_SIZE:,} "
                             f"per axis")


def _check_node_params(node, stored_shapes: dict[str, tuple], created: dict[int, str],
                       source: str) -> None:
    """Each parameter ``node`` creates (still on the meta device) must be stored with
    exactly its shape, before any memory is allocated for it. ``created``: id -> key
    of the parameters checked so far (a tied parameter is checked with its owner)."""
    for name, param in node.params.items():
        if id(param) in created:
            continue
        key, want = f"{node.name}.{name}", tuple(param.shape)
        if key not in stored_shapes:
            raise ModelFileError(f"{source}: parameters do not match the graph: missing "
                                 f"{[key]} (node {node.name!r} creates it with shape {want})")
        if stored_shapes[key] != want:
            raise ModelFileError(f"{source}: node {node.name!r} ({type(node).__name__}) "
                                 f"creates parameter {key!r} with shape {want} "
                                 f"({math.prod(want):,} values), the file holds shape "
                                 f"{stored_shapes[key]} ({math.prod(stored_shapes[key]):,} values)")
        created[id(param)] = key


def _materialise(model: Model, tensors: dict[str, np.ndarray]) -> None:
    """Replace the (meta) parameters by the stored values on the model's device; tied
    parameters stay shared."""
    real = {}
    for key, param in model.all_params().items():
        value = torch.from_numpy(np.array(tensors[key])).to(model.device, param.dtype)
        new = torch.nn.Parameter(value, requires_grad=param.requires_grad)
        new.apply_reg = getattr(param, 'apply_reg', False)
        real[id(param)] = new
    for node in model.nodes.values():
        node.params.update({k: real[id(p)] for k, p in node.params.items()})


def _restore_state(model: Model, graph: dict, source: str) -> None:
    """Hyper-parameters, iterations and designations; invalid ones: a ModelFileError."""
    try:
        for key, value in graph.get('hyper_params', {}).items():
            model.optimisers.set(key, value)
        model.iterations = int(graph.get('iterations', 0))
        designations = {k: v for k, v in graph.get('designations', {}).items()
                        if k in _DESIGNATIONS}
        if designations:
            designations.setdefault('input_node', None)
            model.designate_nodes(**designations)
    except Error as err:
        raise ModelFileError(f"{source}: invalid stored model state: {err}") from None
