"""The Node base class: one element of a graph, known completely at construction.

A subclass reads in a fixed order (see :class:`Node`): its constructor stores
and validates options and then calls ``Node.__init__``, which infers the output
shape, creates parameters, computes the cost and registers the node in the
current :class:`~elektronn2.neuromancer.container.Model`.
"""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..config import config
from ..errors import GraphError, ShapeError
from .dense import predict_dense
from .optimiser import mark_regularised
from .registry import NODE_CLASSES, model_manager
from .shape import TaggedShape, nearest_valid_sizes
from .summary import pretty_ops
from .traversal import topological_order

logger = logging.getLogger('elektronn2')


@dataclass(frozen=True)
class SizeSuggestion:
    """Valid sizes of axis ``axis`` of input ``input_name`` near ``current`` (see ShapeError).

    ``other_axes``: sizes other axes of that input must take too.
    """
    input_name: str
    axis: str
    current: int
    valid: tuple[int, ...]
    other_axes: dict

    def __str__(self) -> str:
        others = f" (other axes need: {self.other_axes})" if self.other_axes else ''
        return (f"Nearest valid sizes of axis {self.axis!r} of input {self.input_name!r} "
                f"(now {self.current}): {list(self.valid)}{others}")


class Node:
    """Base of all graph nodes.

    Subclasses implement, each in its own short method:

    * ``__init__``: store and validate options, then ``super().__init__(parents, name, print_repr)``
    * ``_infer_shape(*parent_shapes) -> TaggedShape``: pure, raises ShapeError
    * ``_make_params() -> dict``: torch tensors, built with :meth:`_new_param`
    * ``_compute_cost() -> int``: multiply-adds per example (default: output size)
    * ``forward(*inputs, training) -> Tensor``: the torch computation

    The arguments a node was constructed with are recorded (by ``__new__``, before
    ``__init__`` runs) as its :attr:`descriptor`, which is how models are saved
    and rebuilt.
    """
    #: True for nodes whose value is fed from outside (Input).
    is_input = False
    #: True for classification-error nodes (Errors), which the trainer monitors.
    is_error = False
    #: True for nodes that read NaN in their target (second) input as unlabelled, e.g.
    #: BinaryNLL; the trainer lets NaN targets through only if every consumer says so.
    masks_nan_target = False
    @property
    def sees_padding(self) -> bool:
        """True where the output depends on padding (Pad, non-valid convolutions), so that
        tiling the network is not exact (subclasses override it by an attribute or property)."""
        return False

    #: The nonlinearity a node applies last; 'lin' for none (layers store their own).
    activation_func = 'lin'
    #: Batch normalisation of the output: False, 'train' or 'predict' (layers store their own).
    batch_normalisation: bool | str = False
    #: Inputs: whether even the batch size must match exactly (Input stores its own).
    hardcoded_shape = False

    #: The constructor arguments (see :attr:`descriptor`); set by ``__new__``.
    _call_args: dict[str, Any]
    #: Unique name within the model; set by ``__init__``.
    name: str

    @property
    def inner_nodes(self) -> tuple[Node, ...]:
        """Nodes this node evaluates inside its own forward (a Scan's step nodes): their
        parameters count as this node's ancestors' parameters (:attr:`all_params`)."""
        return ()

    @property
    def class_count(self) -> int | None:
        """Classes the values of this node stand for (a Softmax's ``n_class``; an Input_like
        of a prediction holds labels of its classes); None where there are no classes."""
        return None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        NODE_CLASSES[cls.__name__] = cls

    def __new__(cls, *args, **kwargs):
        node = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(node, *args, **kwargs)
        node._call_args = dict(list(bound.arguments.items())[1:])
        return node

    def __init__(self, parents: Node | Sequence[Node] | None, name: str,
                 print_repr: bool = True):
        self.parents = _as_node_list(parents, type(self).__name__)
        self.model = model_manager.getmodel()
        for p in self.parents:
            if p.model is not self.model:
                raise GraphError(f"Parent {p.name!r} of new {type(self).__name__} "
                                 f"belongs to model {p.model.name!r}, but the current model "
                                 f"is {self.model.name!r}; build a graph within one model")
        self.name = self.model.unique_name(name)
        self.children: list[Node] = []
        self.shape = self._checked_shape()
        self.params: dict[str, torch.Tensor] = self._make_params()
        self.computational_cost = int(self._compute_cost())
        self.model.register(self)
        for p in self.parents:
            p.children.append(self)
        self.local_exec_time: float | None = None
        self.total_exec_time: float | None = None
        if print_repr:
            logger.info('%r', self)

    # --- to implement in subclasses -----------------------------------------------------
    def _infer_shape(self, *parent_shapes: Any, **kwargs: Any) -> TaggedShape:
        """The output shape from the parents' shapes (one per parent; subclasses name them)."""
        return parent_shapes[0]

    def _make_params(self) -> dict[str, torch.Tensor]:
        return {}

    def _compute_cost(self) -> int:
        return self.shape.stripbatch_prod

    @property
    def macs_per_input_position(self) -> int:
        """Multiply-adds per spatial position of the parent's output that a dense,
        non-redundant evaluation spends here (convolutions: n_f * n_in * taps; 0 for nodes
        whose work is negligible)."""
        return 0

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """The output tensor from the parents' tensors (subclasses name them) and
        ``training`` (keyword)."""
        raise NotImplementedError(type(self).__name__)

    def _repr_details(self) -> str:
        return ''

    # --- construction helpers --------------------------------------------------------------
    def _checked_shape(self) -> TaggedShape:
        try:
            return self._infer_shape(*(p.shape for p in self.parents))
        except ShapeError as err:
            message = f"{type(self).__name__} {self.name!r}: {err}"
            suggestion = self._suggest_input_sizes(err.axis) if err.axis is not None else None
            if suggestion is not None:
                message += f". {suggestion}"
            raise ShapeError(message, axis=err.axis, suggestion=suggestion) from None

    def _suggest_input_sizes(self, axis: str) -> SizeSuggestion | None:
        """Nearest sizes of the network input along ``axis`` for which this node builds.

        The shape rules act on each spatial axis separately, so other axes that fail
        too are first moved to valid sizes, then ``axis`` is searched alone.
        """
        ancestors = topological_order([*self.parents])
        sources = [n for n in ancestors if n.is_input and axis in n.shape.tags]
        if not sources or sources[0].shape[axis] is None:
            return None
        source = sources[0]
        sizes = {t: source.shape[t] for t in source.shape.spatial_tags if source.shape[t]}

        def failing_axis(trial: dict) -> str | None:
            return failing_axis_with(source, trial, ancestors + [self])

        for _ in range(2 * len(sizes)):
            bad = failing_axis(sizes)
            if bad is None or bad not in sizes:
                break
            repaired = nearest_valid_sizes(lambda n: failing_axis({**sizes, bad: n}) != bad,
                                           sizes[bad], n_each_side=1)
            if not repaired:
                return None
            sizes[bad] = min(repaired, key=lambda n: abs(n - sizes[bad]))
        valid = nearest_valid_sizes(lambda n: failing_axis({**sizes, axis: n}) is None,
                                    source.shape[axis], n_each_side=2)
        if not valid:
            return None
        others = {t: n for t, n in sizes.items() if t != axis and n != source.shape[t]}
        return SizeSuggestion(source.name, axis, source.shape[axis], tuple(valid), others)

    def _new_param(self, value, trainable: bool = True, regularise: bool = False,
                   dtype: torch.dtype | None = None) -> torch.nn.Parameter:
        """A parameter on the model's device; constant if not trainable.

        ``regularise`` marks it for weight decay (filter weights, not biases).
        """
        tensor = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
        if dtype is not None or tensor.is_floating_point():
            tensor = tensor.to(dtype or config.torch_float_dtype)
        tensor = tensor.to(self.model.device).clone()
        param = torch.nn.Parameter(tensor, requires_grad=trainable and tensor.is_floating_point())
        mark_regularised(param, regularise)
        return param

    # --- graph structure -----------------------------------------------------------------
    @property
    def parent(self) -> Node:
        """The first parent (for single-parent nodes)."""
        return self.parents[0]

    @property
    def is_source(self) -> bool:
        return not self.parents

    @property
    def all_parents(self) -> list[Node]:
        """All ancestors, in topological order."""
        return topological_order(self.parents)

    @property
    def all_children(self) -> list[Node]:
        seen: dict[Node, None] = {}
        stack = list(self.children)
        while stack:
            node = stack.pop()
            if node not in seen:
                seen[node] = None
                stack.extend(node.children)
        return list(seen)

    @property
    def input_nodes(self) -> list[Node]:
        """The Input nodes this node depends on, in model order."""
        nodes = [n for n in topological_order([self]) if n.is_input]
        return sorted(nodes, key=self.model.node_index)

    # --- parameters ---------------------------------------------------------------------
    @property
    def all_params(self) -> dict[str, torch.Tensor]:
        """``'node.param' -> tensor`` over this node, its ancestors and their inner nodes
        (shared parameters once)."""
        out, seen = {}, set()
        for node in topological_order([self]):
            for owner in (node, *node.inner_nodes):
                for key, p in owner.params.items():
                    if id(p) not in seen:
                        seen.add(id(p))
                        out[f"{owner.name}.{key}"] = p
        return out

    @property
    def all_trainable_params(self) -> dict[str, torch.Tensor]:
        return {k: p for k, p in self.all_params.items() if p.requires_grad}

    @property
    def param_count(self) -> int:
        """Number of trainable parameter values of this node alone."""
        return sum(p.numel() for p in self.params.values() if p.requires_grad)

    @property
    def all_params_count(self) -> int:
        return sum(p.numel() for p in self.all_trainable_params.values())

    @property
    def all_computational_cost(self) -> int:
        return sum(n.computational_cost for n in topological_order([self]))

    def get_param_values(self, skip_const: bool = False) -> dict[str, np.ndarray]:
        return {k: p.detach().cpu().numpy().copy() for k, p in self.params.items()
                if p.requires_grad or not skip_const}

    def set_param_values(self, values: dict[str, np.ndarray], skip_const: bool = False) -> None:
        """Copy values into this node's parameters (checked for names and shapes)."""
        for key, value in values.items():
            if key not in self.params:
                raise GraphError(f"Node {self.name!r} has no parameter {key!r}; "
                                 f"it has {sorted(self.params)}")
            param = self.params[key]
            if skip_const and not param.requires_grad:
                continue
            tensor = torch.as_tensor(np.asarray(value))
            if tuple(tensor.shape) != tuple(param.shape):
                raise ShapeError(f"Parameter {self.name}.{key} has shape {tuple(param.shape)}, "
                                 f"the new value has {tuple(tensor.shape)}")
            with torch.no_grad():
                param.copy_(tensor.to(param.dtype))

    @property
    def feature_names(self) -> list[str]:
        """A name per feature ('f' axis): as set (ELEKTRONN2's ``pred.feature_names = [...]``;
        kept in memory, not in model files), else ``'<node name>:<index>'``."""
        names = getattr(self, '_feature_names', None)
        if names is not None:
            return list(names)
        n_f = self.shape['f'] if 'f' in self.shape.tags else None
        return [f"{self.name}:{i}" for i in range(n_f or 0)]

    @feature_names.setter
    def feature_names(self, names) -> None:
        n_f = self.shape['f'] if 'f' in self.shape.tags else 0
        if isinstance(names, str) or not all(isinstance(n, str) for n in names) \
                or len(names) != n_f:
            raise ShapeError(f"Node {self.name!r}: feature_names must be {n_f} strings, one per "
                             f"feature ('f' axis), got {names!r:.200}")
        self._feature_names = list(names)

    # --- descriptor -------------------------------------------------------------------------
    @property
    def descriptor(self) -> dict:
        """How this node was built: class name and constructor arguments (parents as nodes)."""
        args = dict(self._call_args)
        args['name'] = self.name
        return {'class': type(self).__name__, 'args': args}

    # --- evaluation ---------------------------------------------------------------------
    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """Evaluate this node on numpy inputs (one per :attr:`input_nodes`), in inference mode.

        The graph function is built on the first call and cached in the model.
        """
        return self.model.function([self], training=False).numpy(*inputs)[0]

    def random_value(self, batch_size: int = 1) -> np.ndarray:
        """A random value to feed this node; input nodes (``is_input``) implement it."""
        raise GraphError(f"{type(self).__name__} {self.name!r} is not an input node: it has "
                         f"no random value")

    def random_inputs(self, batch_size: int = 1) -> list[np.ndarray]:
        """Random numpy inputs matching this node's :attr:`input_nodes`."""
        return [n.random_value(batch_size) for n in self.input_nodes]

    def test_run(self, on_shape_mismatch: str = 'warn', batch_size: int = 1) -> tuple[np.ndarray, float]:
        """Run on random inputs; check the output shape. Returns (output, seconds)."""
        inputs = self.random_inputs(batch_size)
        t0 = time.perf_counter()
        out = self(*inputs)
        elapsed = time.perf_counter() - t0
        expected = tuple(batch_size if (s is None and t == 'b') else s
                         for s, t in zip(self.shape.shape, self.shape.tags))
        mismatch = len(expected) != out.ndim or any(
            e is not None and e != o for e, o in zip(expected, out.shape))
        if mismatch:
            msg = f"Node {self.name!r}: test run gave shape {out.shape}, inferred {self.shape}"
            if on_shape_mismatch == 'raise':
                raise ShapeError(msg)
            logger.warning(msg)
        logger.info("Test run of %r: output %s in %.3f s", self.name, out.shape, elapsed)
        return out, elapsed

    def measure_exectime(self, n_samples: int = 5, n_warmup: int = 4,
                         print_info: bool = True) -> float:
        """Median milliseconds of this node's own forward (parents precomputed).

        Also sets :attr:`local_exec_time` and :attr:`total_exec_time` (whole subgraph).
        """
        fn = self.model.function([self], training=False)
        tensors = fn.to_tensors(*self.random_inputs())
        parent_fn = self.model.function(self.parents, training=False) if self.parents else None

        def timed(call) -> float:
            for _ in range(n_warmup):
                call()
            times = []
            for _ in range(n_samples):
                _synchronize()
                t0 = time.perf_counter()
                call()
                _synchronize()
                times.append(time.perf_counter() - t0)
            return float(np.median(times)) * 1e3

        with torch.no_grad():
            self.total_exec_time = timed(lambda: fn(*tensors))
            if parent_fn is None:
                self.local_exec_time = self.total_exec_time
            else:
                parent_values = parent_fn(*parent_fn.to_tensors(*[
                    n.random_value(1) for n in parent_fn.inputs]))
                self.local_exec_time = timed(lambda: self.forward(*parent_values, training=False))
        if print_info:
            logger.info("%s %r: local %.3f ms, total %.3f ms", type(self).__name__, self.name,
                        self.local_exec_time, self.total_exec_time)
        return self.local_exec_time

    def predict_dense(self, raw_img: np.ndarray, as_uint8: bool = False,
                      pad_raw: bool = False, tta: str = 'none') -> np.ndarray:
        """Dense output (f, *spatial) for a whole image (ch, *spatial); see :mod:`.dense`.
        ``tta``: test-time augmentation, 'none', 'flips' or 'dihedral'
        (:func:`.dense.predict_dense`)."""
        return predict_dense(self, raw_img, as_uint8=as_uint8, pad_raw=pad_raw, tta=tta)

    # --- text ----------------------------------------------------------------------------------
    def __repr__(self) -> str:
        if not hasattr(self, 'computational_cost'):  # still under construction
            return f"<{type(self).__name__} {getattr(self, 'name', '?')!r} (incomplete)>"
        details = self._repr_details()
        n_params = sum(p.numel() for p in self.params.values())
        return (f"{type(self).__name__} {self.name!r}: {self.shape}"
                + (f"; {details}" if details else '')
                + (f"; params {n_params:,}" if n_params else '')
                + f"; cost {pretty_ops(self.computational_cost)}MAC")


def _synchronize() -> None:
    if config.torch_device.type == 'cuda':
        torch.cuda.synchronize()


def _as_node_list(parents, cls_name: str) -> list[Node]:
    if parents is None:
        return []
    if isinstance(parents, Node):
        return [parents]
    parents = list(parents)
    for p in parents:
        if not isinstance(p, Node):
            raise GraphError(f"{cls_name} expects Node parents, got {type(p).__name__}: {p!r}")
    return parents


def failing_axis_with(source: Node, sizes: dict[str, int], nodes: Sequence[Node]) -> str | None:
    """The axis tag (or '?') of the first ShapeError when ``source`` (an input) has the
    spatial ``sizes`` and the shapes of ``nodes`` (in topological order) are inferred
    again; None if every node fits. Pure: no node changes."""
    shape = source.shape
    for tag, n in sizes.items():
        shape = shape.updateshape(tag, n)
    shapes = {source: shape}
    try:
        for node in nodes:
            if node not in shapes:
                shapes[node] = node._infer_shape(*(shapes[p] for p in node.parents))
    except ShapeError as err:
        return err.axis or '?'
    return None
