"""Loading and rebuilding models: :func:`modelload` and :func:`rebuild_model`.

A model file (:mod:`.modelfile`) is edited as asked (:mod:`.surgery`), then its nodes are
built from allow-listed classes (:data:`.registry.NODE_CLASSES`) on the meta device in a
new model, current only while they are built (:meth:`.registry.ModelManager.building`);
every size is checked against the stored tensors and the limits below before memory is
allocated for the stored values.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Sequence

import numpy as np
import torch

from ..errors import Error, GraphError, ModelFileError, ShapeError
from . import modelfile, surgery
from .container import DESIGNATIONS, Model
from .registry import NODE_CLASSES, model_manager

logger = logging.getLogger('elektronn2')

#: Largest size of any axis of a node built from a model file.
MAX_AXIS_SIZE = 2 ** 24
#: Most values per example (all axes but the batch) of a node built from a model file.
MAX_NODE_VALUES = 2 ** 32


def modelload(path: str | os.PathLike, imposed_patch_size: Sequence[int] | None = None,
              imposed_batch_size: int | None = None, override_mfp_to_active: bool = False,
              replace_bn: str | None = None, lock_trainable_params: bool | Sequence[str] | None = None,
              make_weights_constant: bool = False, name: str | None = None,
              make_current: bool = True) -> Model:
    """Rebuild a model saved by :meth:`.Model.save` (it becomes the current model).

    The nodes are built in a scope of their own (:meth:`.ModelManager.building`), so
    threads loading at once each get their own nodes. With ``make_current=False`` the
    caller's current model stays current (for library code: predictors, previews).

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
                         make_weights_constant, name, make_current)


def rebuild_model(model: Model, imposed_patch_size: Sequence[int] | None = None,
                  imposed_batch_size: int | None = None, override_mfp_to_active: bool = False,
                  replace_bn: str | None = None,
                  lock_trainable_params: bool | Sequence[str] | None = None,
                  make_weights_constant: bool = False, name: str | None = None,
                  make_current: bool = True) -> Model:
    """A new model rebuilt from ``model``'s descriptors and parameters with the same edits
    (and ``make_current``) as :func:`modelload` offers."""
    graph, tensors = model.serialise()
    return _build_edited(graph, tensors, f"model {model.name!r}", imposed_patch_size,
                         imposed_batch_size, override_mfp_to_active, replace_bn,
                         lock_trainable_params, make_weights_constant, name, make_current)


def _build_edited(graph, tensors, source, imposed_patch_size, imposed_batch_size,
                  override_mfp_to_active, replace_bn, lock_trainable_params,
                  make_weights_constant, name, make_current: bool) -> Model:
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
    if make_current:
        model_manager.setmodel(model)
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
    """Construct nodes from descriptors in a new model, current only while they are built
    (the caller's current model is left alone); set parameters and state.

    The nodes are built on the meta device, so that no memory is allocated before every
    size is checked (:func:`_construct_nodes`); then the parameters get the stored values
    on the model's device. With ``strict_shapes`` a ShapeError (a node that does not fit
    its parents) becomes a ModelFileError. On failure the half-built model is discarded.
    """
    model = model_manager.create(name or graph.get('name') or 'model')
    device, model.device = model.device, torch.device('meta')
    try:
        with model_manager.building(model), torch.device('meta'):
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
                        if k in DESIGNATIONS}
        if designations:
            designations.setdefault('input_node', None)
            model.designate_nodes(**designations)
    except Error as err:
        raise ModelFileError(f"{source}: invalid stored model state: {err}") from None
