"""Model surgery: edits of a saved graph (descriptors and parameters) before rebuilding.

Works on the ``graph`` dict and the parameter arrays of the model file format
(:mod:`.modelfile`), so every change is an ordinary rebuild of nodes from their
recorded arguments.
"""
from __future__ import annotations

import copy
import logging

import numpy as np

from ..errors import ConfigError, ModelFileError
from .basic import choose_name

logger = logging.getLogger('elektronn2')

_BN_EPS = 1e-5
_BN_LAYERS = {'Conv': 0, 'UpConv': 1, 'Perceptron': 1}  # class -> output-feature axis of w
_MFP_CLASSES = ('Conv', 'Pool')
REPLACE_BN = ('remove', 'predict', 'const')


def _shape_list(args: dict) -> list:
    shape = args['shape']
    return shape['__tuple__'] if isinstance(shape, dict) else shape


def input_descriptor(graph: dict) -> dict:
    """The descriptor of the designated input node (an Input, not an Input_like)."""
    name = graph.get('designations', {}).get('input_node')
    for descr in graph['nodes']:
        if descr['args'].get('name') == name and descr['class'] == 'Input':
            return descr
    raise ModelFileError(f"the model has no designated Input node (input_node={name!r}); "
                         f"imposed patch or batch sizes need one")


def set_input_sizes(graph: dict, sizes: dict[str, int]) -> None:
    """Set sizes of the designated input by tag (e.g. {'b': 4, 'x': 200})."""
    args = input_descriptor(graph)['args']
    joined = args['tags'] if isinstance(args['tags'], str) else ','.join(args['tags'])
    tags = [t.strip() for t in joined.split(',')]
    shape = _shape_list(args)
    for tag, size in sizes.items():
        shape[tags.index(tag)] = size


def input_spatial_sizes(graph: dict) -> dict[str, int]:
    args = input_descriptor(graph)['args']
    tags = args['tags'] if isinstance(args['tags'], str) else ','.join(args['tags'])
    return {t.strip(): s for t, s in zip(tags.split(','), _shape_list(args)) if t.strip() in 'zxy'}


def activate_mfp(graph: dict) -> None:
    """Switch max-fragment pooling on in every pooling Conv/Pool and make the prediction
    dense again with a FragmentsToDense node after the prediction node."""
    designations = graph.get('designations', {})
    prediction = designations.get('prediction_node')
    if prediction is None:
        raise ModelFileError("override_mfp_to_active needs a designated prediction_node")
    for descr in graph['nodes']:
        if descr['class'] in _MFP_CLASSES and descr['args'].get('mode', 'max') == 'max':
            descr['args']['mfp'] = True
    names = {d['args'].get('name') for d in graph['nodes']}
    dense_name, i = 'to_dense', 0
    while dense_name in names:
        i += 1
        dense_name = f"to_dense{i}"
    graph['nodes'].append({'class': 'FragmentsToDense',
                           'args': {'parent': {'__node__': prediction}, 'name': dense_name}})
    designations['prediction_node'] = dense_name
    if 'prediction_ext' in designations:
        designations['prediction_ext'] = [dense_name if n == prediction else n
                                          for n in designations['prediction_ext']]


def replace_batch_normalisation(graph: dict, tensors: dict[str, np.ndarray], mode: str) -> list[str]:
    """'predict': use the accumulated statistics; 'const': also freeze gamma/beta (returns
    the parameter keys to freeze); 'remove': fold the normalisation into w and b."""
    if mode not in REPLACE_BN:
        raise ConfigError(f"replace_bn={mode!r}; valid: {REPLACE_BN} or None")
    frozen = []
    for descr in graph['nodes']:
        args = descr['args']
        if descr['class'] not in _BN_LAYERS or not args.get('batch_normalisation'):
            continue
        name = args['name']
        if mode in ('predict', 'const'):
            args['batch_normalisation'] = 'predict'
            if mode == 'const':
                frozen += [f"{name}.gamma", f"{name}.beta"]
            continue
        if args.get('dual_of') is not None:
            raise ConfigError(f"replace_bn='remove' cannot fold batch normalisation of {name!r} "
                              f"into weights it shares with {args['dual_of']}")
        args['batch_normalisation'] = False
        for key in ('gamma', 'mean', 'std'):
            args.pop(key, None)
        gamma, beta, mean, var = (tensors.pop(f"{name}.{k}") for k in ('gamma', 'beta', 'mean', 'var'))
        tensors.pop(f"{name}.count")
        scale = gamma / np.sqrt(var + _BN_EPS)
        w = tensors[f"{name}.w"]
        axis = _BN_LAYERS[descr['class']]
        shape = [1] * w.ndim
        shape[axis] = -1
        tensors[f"{name}.w"] = (w * scale.reshape(shape)).astype(w.dtype)
        tensors[f"{name}.b"] = (beta - mean * scale).astype(w.dtype)
    return frozen


def edited(graph: dict, tensors: dict, imposed_batch_size: int | None,
           override_mfp_to_active: bool, replace_bn: str | None) -> tuple[dict, dict, list[str]]:
    """Copies of graph and tensors with the requested edits, and parameter keys to freeze."""
    graph, tensors = copy.deepcopy(graph), dict(tensors)
    if imposed_batch_size is not None:
        set_input_sizes(graph, {'b': int(imposed_batch_size)})
    if override_mfp_to_active:
        activate_mfp(graph)
    frozen = replace_batch_normalisation(graph, tensors, replace_bn) if replace_bn else []
    return graph, tensors, frozen


# --- ELEKTRONN2's graph edits ------------------------------------------------------------------
def _unique_name(graph: dict, proposal: str) -> str:
    return choose_name(proposal, [d['args'].get('name') for d in graph['nodes']])


def _find(graph: dict, name: str) -> int:
    for i, descr in enumerate(graph['nodes']):
        if descr['args'].get('name') == name:
            return i
    raise ConfigError(f"the graph has no node {name!r}; it has "
                      f"{[d['args'].get('name') for d in graph['nodes']]}")


def _parent_slots(args: dict) -> list[tuple[str, int | None]]:
    """(argument, list index or None) of every node reference among ``args``, in order."""
    slots: list[tuple[str, int | None]] = []
    for key, value in args.items():
        if key == 'dual_of':
            continue
        if isinstance(value, dict) and set(value) == {'__node__'}:
            slots.append((key, None))
        elif isinstance(value, list):
            slots += [(key, i) for i, v in enumerate(value)
                      if isinstance(v, dict) and set(v) == {'__node__'}]
    return slots


def _input_descriptor(shape, tags, strides, fov, dtype: str, name: str) -> dict:
    tags = tags if isinstance(tags, str) else ','.join(tags)
    return {'class': 'Input', 'args': {
        'shape': [None if s is None else int(s) for s in shape], 'tags': tags,
        'strides': None if strides is None else [int(s) for s in np.atleast_1d(strides)],
        'fov': None if fov is None else [int(f) for f in np.atleast_1d(fov)],
        'dtype': dtype, 'hardcoded_shape': False, 'name': name}}


def inject_source(node_descr: dict, child_name: str, shape, tags, strides=None, fov=None,
                  dtype: str = 'float32', name: str = 'input',
                  parent_no: int = 0) -> tuple[dict, str]:
    """A copy of the graph ``node_descr`` (as :meth:`.Model.serialise` gives it) in which a
    new Input (``shape``, ``tags``, ...) replaces the ``parent_no``-th parent of the node
    ``child_name``. Returns (graph, the Input's name: ``name``, made unique)."""
    graph = copy.deepcopy(node_descr)
    index = _find(graph, child_name)
    child = graph['nodes'][index]['args']
    slots = _parent_slots(child)
    if not 0 <= parent_no < len(slots):
        raise ConfigError(f"inject_source: node {child_name!r} has {len(slots)} parents, "
                          f"parent_no={parent_no} does not exist")
    name = _unique_name(graph, name)
    key, i = slots[parent_no]
    replaced = child[key] if i is None else child[key][i]
    if i is None:
        child[key] = {'__node__': name}
    else:
        child[key][i] = {'__node__': name}
    graph['nodes'].insert(index, _input_descriptor(shape, tags, strides, fov, dtype, name))
    logger.info("inject_source: input %r replaces parent %r of %r", name,
                replaced['__node__'], child_name)
    return graph, name


def inject_source_split(node_descr: dict, split_name: str, shape, tags, strides=None, fov=None,
                        dtype: str = 'float32', name: str = 'input') -> tuple[dict, str]:
    """As :func:`inject_source` for the node that the Split ``split_name`` (and every other
    Split of the same node) splits: the new Input is split instead."""
    graph = copy.deepcopy(node_descr)
    index = _find(graph, split_name)
    descr = graph['nodes'][index]
    if descr['class'] != 'Split':
        raise ConfigError(f"inject_source_split: {split_name!r} is a {descr['class']}, not a Split")
    source = descr['args']['parent']
    name = _unique_name(graph, name)
    first = None
    for i, other in enumerate(graph['nodes']):
        if other['class'] == 'Split' and other['args']['parent'] == source:
            other['args']['parent'] = {'__node__': name}
            first = i if first is None else first
    graph['nodes'].insert(first, _input_descriptor(shape, tags, strides, fov, dtype, name))
    return graph, name


def _plain(value):
    if isinstance(value, dict) and set(value) == {'__tuple__'}:
        return tuple(_plain(v) for v in value['__tuple__'])
    return value


def kernel_lists_from_node_descr(model_descr: dict) -> tuple[list, list, list]:
    """(filter_shapes, pool_shapes, mfp) of the Conv nodes of a graph (not UpConv)."""
    filters, pools, mfp = [], [], []
    for descr in model_descr['nodes']:
        if descr['class'] == 'Conv':
            args = descr['args']
            filters.append(_plain(args['filter_shape']))
            pools.append(_plain(args.get('pool_shape')))
            mfp.append(bool(args.get('mfp', False)))
    return filters, pools, mfp
