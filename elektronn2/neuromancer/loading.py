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
from . import modelfile, oldmodels, surgery
from .container import DESIGNATIONS, Model
from .inputs import ValueNode
from .node import Node, failing_axis_with
from .optimiser import is_regularised, mark_regularised
from .registry import NODE_CLASSES, model_manager
from .traversal import topological_order

logger = logging.getLogger('elektronn2')

#: Largest size of any axis of a node built from a model file.
MAX_AXIS_SIZE = 2 ** 24
#: Most values per example (all axes but the batch) of a node built from a model file.
MAX_NODE_VALUES = 2 ** 32
#: Most values of a parameter an old (ELEKTRONN2) file does not hold, which gets the
#: node's initial value (class weights, mixing weights, ... derived from arguments).
MAX_INITIAL_VALUES = 2 ** 20


def modelload(file_name: str | os.PathLike, override_mfp_to_active: bool = False,
              imposed_patch_size: Sequence[int] | None = None,
              imposed_batch_size: int | None = None, name: str | None = None,
              replace_bn: str | None = None, lock_trainable_params: bool | Sequence[str] | None = None,
              make_weights_constant: bool = False, make_current: bool = True) -> Model:
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
        imposed_patch_size: new spatial size of the input, each axis snapped to the nearest
            size the network accepts (ties: the smaller), with a warning.
        imposed_batch_size: new batch size of the input.
        override_mfp_to_active: switch max-fragment pooling on in all max-pooling layers and
            append FragmentsToDense to the prediction (dense predictions in one pass); the
            saved patch size is snapped to a valid one if it does not fit.
        replace_bn: 'predict' (use accumulated statistics), 'const' (also freeze gamma and
            beta) or 'remove' (fold the normalisation into the weights).
        lock_trainable_params: True, or names of nodes whose parameters become constant.
        make_weights_constant: make every parameter constant.

    An ELEKTRONN2 ``.mdl`` file (a pickle) is converted on the fly (see
    :mod:`.oldmodels`; it is read without running code from it).
    """
    if oldmodels.is_old_model_file(file_name):
        graph, tensors = oldmodels.convert(file_name)
        tensors = _with_initial_values(graph, tensors, str(file_name))
        logger.info("Converted the ELEKTRONN2 model file %s to today's format while loading; "
                    "save it in that format with model.save(PATH) or elektronn2-convert OLD NEW",
                    file_name)
    else:
        graph, tensors = modelfile.read(file_name)
    return _build_edited(graph, tensors, str(file_name), imposed_patch_size, imposed_batch_size,
                         override_mfp_to_active, replace_bn, lock_trainable_params,
                         make_weights_constant, name, make_current)


def rebuild_model(model: Model, override_mfp_to_active: bool = False,
                  imposed_patch_size: Sequence[int] | None = None, name: str | None = None,
                  imposed_batch_size: int | None = None, replace_bn: str | None = None,
                  lock_trainable_params: bool | Sequence[str] | None = None,
                  make_weights_constant: bool = False, make_current: bool = True) -> Model:
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
    if imposed_patch_size is None and override_mfp_to_active:  # the saved size may not fit MFP
        with _stored_graph_errors(source):
            imposed_patch_size = tuple(surgery.input_spatial_sizes(graph).values())
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
    """Build with the input's spatial sizes set to ``desired``, each axis snapped to its
    nearest valid size (ties: the smaller one), whatever the other axes ask for."""
    with _stored_graph_errors(source):
        tags = list(surgery.input_spatial_sizes(graph))
    if len(desired) != len(tags):
        raise ShapeError(f"imposed_patch_size {desired} has {len(desired)} entries, the input "
                         f"has {len(tags)} spatial axes {tags}")
    wanted = dict(zip(tags, (int(d) for d in desired)))
    model = _build_near(graph, tensors, source, wanted, name)
    inp = model.input_node
    assert inp is not None  # surgery found the designated Input
    built = {t: inp.shape[t] for t in tags}
    chosen = _nearest_valid_sizes(inp, list(model.nodes.values()), wanted)
    if chosen != built:
        model_manager.discard(model)
        with _stored_graph_errors(source):
            surgery.set_input_sizes(graph, chosen)
        model = _build(graph, tensors, source, name, strict_shapes=False)
    if chosen != wanted:
        logger.warning(SNAP_NOTE + "%s is not valid for this network%s; using the nearest "
                       "valid size %s", desired, ' with max-fragment pooling' if any(
                           d.get('args', {}).get('mfp') for d in graph['nodes']) else '',
                       tuple(chosen[t] for t in tags))
    return model


def _build_near(graph, tensors, source, wanted: dict[str, int], name) -> Model:
    """A model built at some valid input size, found from ``wanted`` by following the
    nearest valid sizes that failing nodes suggest."""
    sizes = dict(wanted)
    for _ in range(4 * len(graph['nodes'])):
        with _stored_graph_errors(source):
            surgery.set_input_sizes(graph, sizes)
        try:
            return _build(graph, tensors, source, name, strict_shapes=False)
        except ShapeError as err:
            suggestion = err.suggestion
            if suggestion is None or suggestion.axis not in sizes:
                raise
            target = wanted[suggestion.axis]
            sizes[suggestion.axis] = min(suggestion.valid, key=lambda n: (abs(n - target), n))
            sizes.update(suggestion.other_axes)
    raise ShapeError(f"no valid patch size found near imposed_patch_size "
                     f"{tuple(wanted.values())}")


def _nearest_valid_sizes(inp: Node, nodes: list[Node], wanted: dict[str, int],
                         search_range: int = 256) -> dict[str, int]:
    """Per axis, the valid size of input ``inp`` nearest to ``wanted`` (ties: the smaller),
    each searched with the other axes at their built sizes (shape rules act per axis); the
    built sizes where the axes turn out to be coupled."""
    nodes = topological_order(nodes)
    built = {t: inp.shape[t] for t in wanted}
    chosen = {}
    for tag, size in wanted.items():
        candidates = sorted(range(max(1, size - search_range), size + search_range + 1),
                            key=lambda n: (abs(n - size), n))
        chosen[tag] = next((n for n in candidates
                            if failing_axis_with(inp, {**built, tag: n}, nodes) is None),
                           built[tag])
    return chosen if failing_axis_with(inp, chosen, nodes) is None else built


#: the start of the note a patch-size snap logs (:func:`quiet_snapping` mutes it)
SNAP_NOTE = 'Patch size '


def _quiet(record: logging.LogRecord) -> bool:
    """Log filter: warnings and errors only, no patch-size snapping notes."""
    return record.levelno >= logging.WARNING and not record.getMessage().startswith(SNAP_NOTE)


@contextlib.contextmanager
def quiet_snapping():
    """While a caller tries patch sizes on purpose (previews, block planning), the
    package logger drops model summaries and snapping notes (this process, all threads)."""
    logger.addFilter(_quiet)
    try:
        yield
    finally:
        logger.removeFilter(_quiet)


def _with_initial_values(graph: dict, tensors: dict[str, np.ndarray], source: str
                         ) -> dict[str, np.ndarray]:
    """``tensors`` and the initial values of the parameters the nodes of ``graph`` create
    that ``tensors`` lacks (at most :data:`MAX_INITIAL_VALUES` values each): the model
    is built once as stored, its parameters read back."""
    model = _build(graph, tensors, source, None, initial_missing=True)
    try:
        return model.serialise()[1]
    finally:
        model_manager.discard(model)


def _build(graph: dict, tensors: dict[str, np.ndarray], source: str, name: str | None,
           strict_shapes: bool = True, initial_missing: bool = False) -> Model:
    """Construct nodes from descriptors in a new model, current only while they are built
    (the caller's current model is left alone); set parameters and state.

    The nodes are built on the meta device, so that no memory is allocated before every
    size is checked (:func:`_construct_nodes`); then the parameters get the stored values
    on the model's device. With ``strict_shapes`` a ShapeError (a node that does not fit
    its parents) becomes a ModelFileError. With ``initial_missing`` a parameter that
    ``tensors`` lacks gets the node's initial value. On failure the half-built model is
    discarded.
    """
    model = model_manager.create(name or graph.get('name') or 'model')
    device, model.device = model.device, torch.device('meta')
    try:
        with model_manager.building(model), torch.device('meta'):
            _construct_nodes(graph, tensors, source, strict_shapes, initial_missing)
        model.device = device
        _materialise(model, tensors)
        _restore_state(model, graph, source)
    except BaseException:
        model_manager.discard(model)
        raise
    return model


def _construct_nodes(graph: dict, tensors: dict[str, np.ndarray], source: str,
                     strict_shapes: bool, initial_missing: bool = False) -> None:
    """Build the nodes in order; each is checked right after it is built: its output size
    and the shapes of the parameters it creates (against the stored tensors)."""
    nodes: dict = {}
    stored_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    created: dict[int, str] = {}
    for i, descr in enumerate(graph['nodes']):
        node = _construct_node(i, descr, nodes, stored_shapes, source, strict_shapes)
        _check_node_params(node, stored_shapes, created, source, initial_missing)
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
                       source: str, initial_missing: bool = False) -> None:
    """Each parameter ``node`` creates (still on the meta device) must be stored with
    exactly its shape, before any memory is allocated for it (or, ``initial_missing``,
    be small if it is not stored). ``created``: id -> key of the parameters checked so
    far (a tied parameter is checked with its owner)."""
    for name, param in node.params.items():
        if id(param) in created:
            continue
        key, want = f"{node.name}.{name}", tuple(param.shape)
        if key not in stored_shapes and initial_missing and math.prod(want) <= MAX_INITIAL_VALUES:
            created[id(param)] = key
            continue
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
    """Replace the (meta) parameters by the stored values on the model's device (those
    not stored: the node's initial values); tied parameters stay shared."""
    real = {}
    initial = {f"{n.name}.{k}": v for n in model.nodes.values()
               if any(f"{n.name}.{k}" not in tensors for k in n.params)
               for k, v in n._make_params().items()}
    for key, param in model.all_params().items():
        stored = tensors[key] if key in tensors else initial[key].detach().cpu().numpy()
        value = torch.from_numpy(np.array(stored)).to(model.device, param.dtype)
        new = torch.nn.Parameter(value, requires_grad=param.requires_grad)
        mark_regularised(new, is_regularised(param))
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


def model_from_graph(graph: dict, tensors: dict[str, np.ndarray], name: str | None = None,
                     make_current: bool = True, source: str = 'edited graph') -> Model:
    """A model built from a graph and parameter arrays (the contents of a model file,
    e.g. :meth:`.Model.serialise` edited by :func:`.surgery.inject_source`)."""
    model = _build(graph, tensors, source, name, strict_shapes=False)
    if make_current:
        model_manager.setmodel(model)
    return model


def params_from_model_file(file_name: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """The parameters stored in a model file: node name -> {parameter name -> array}, in
    the order of the nodes."""
    graph, tensors = modelfile.read(file_name)
    params: dict[str, dict[str, np.ndarray]] = {}
    for descr in graph['nodes']:
        node = descr['args']['name']
        values = {k.split('.', 1)[1]: v for k, v in tensors.items() if k.split('.', 1)[0] == node}
        if values:
            params[node] = values
    return params


def rebuild_decoder(model: Model, state_name: str, state_child_name: str) -> Model:
    """The decoder of an auto-encoder as a model of its own: a new Input 'state_input',
    shaped like the node ``state_name``, replaces that node as the parent of
    ``state_child_name`` and becomes the input node."""
    state = model[state_name].shape
    graph, tensors = model.serialise()
    graph, input_name = surgery.inject_source(graph, state_child_name, state.shape, state.tags,
                                              state.strides, state.fov, name='state_input')
    graph['designations']['input_node'] = input_name
    return model_from_graph(graph, tensors, source=f"decoder of model {model.name!r}")


def rebuild_rnn(model: Model) -> Model:
    """ELEKTRONN2's tracing RNN, rebuilt to run one step at a time with its feedback fed in.

    New inputs replace: the image input before 'conv' (or the split 'split' if the model
    has 'conv_r') as 'img'; the parent of 'trace_join' (if any) as 'trace_feedback'
    (1, 3 * scan steps); a ValueNode 'mem_hid' as the memory of 'gru' ('mem_hid_feedback').
    """
    if model.input_node is None:
        raise GraphError(f"Model {model.name!r} has no input_node to replace; call "
                         f"model.designate_nodes(input_node=...) first")
    img = model.input_node.shape
    graph, tensors = model.serialise()
    if 'conv_r' in model.nodes:
        graph, input_name = surgery.inject_source_split(graph, 'split', img.shape, img.tags,
                                                        name='img')
    else:
        graph, input_name = surgery.inject_source(graph, 'conv', img.shape, img.tags, name='img')
    if 'trace_join' in model.nodes:
        graph, _ = surgery.inject_source(graph, 'trace_join', (1, 3 * model['scan'].n_steps),
                                         'b,f', name='trace_feedback')
    if isinstance(model.nodes.get('mem_hid'), ValueNode):
        graph, _ = surgery.inject_source(graph, 'gru', model['mem_hid'].shape.shape, 'b,f',
                                         name='mem_hid_feedback', parent_no=1)
    graph['designations']['input_node'] = input_name
    return model_from_graph(graph, tensors, source=f"RNN of model {model.name!r}")
