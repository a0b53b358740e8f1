"""ELEKTRONN2 ``.mdl`` files (``Model.save`` of the original) as graphs of today's format.

An ELEKTRONN2 model file is a pickle (read safely by :mod:`.oldpickle`) of
``(descriptors, designations)``: an ordered dict, in construction order, of node name
-> ``[NodeDescriptor(args, kwargs, cls), OrderedDict(param name -> array)]``, or ->
``SplitDescriptor(node_id, func, args, kwargs)`` for a ``split()``, whose parts follow
as ``FromTensor`` descriptors. :func:`convert` turns it into the ``(graph, tensors)``
of :mod:`.modelfile`, which :func:`.loading.modelload` builds like any model file.

What changes on the way (the original's conventions, from its source):

* positional arguments are named by the signature of this project's class (the
  argument order is ELEKTRONN2's); parents (``NodePointer``) become node references,
  shared parameters (``ParamPointer``) references to the owning node;
* Theano convolutions are true convolutions: ``Conv.w`` (n_f, n_in, *filter), or
  (n_f, z, n_in, x, y) for 3-D nets in Theano's axis order, is flipped on its spatial
  axes (and transposed to (n_f, n_in, z, x, y)); ``UpConv.w`` was used as the gradient
  of a cross-correlation: (n_f, n_in, ...) -> (n_in, n_f, ...), not flipped;
* batch normalisation ``gamma``, ``mean``, ``std`` and the bias ``b`` (its shift)
  become ``gamma``, ``beta``, ``mean``, ``var`` with ``gamma / sqrt(var + eps)`` equal
  to the original's ``gamma / std``; 'fadeout' becomes 'train';
* 'prelu' stored its slopes as ``b[:, 1]``: they become ``prelu_slope``;
* ``dropout_rate`` was a parameter: it becomes the argument;
* ``GRU`` and ``LSTM`` stacked [memory, input] rows in one ``w``: they become ``w``
  (input) and ``u`` (memory), the gates in this project's order (a GRU's update gate
  negated: this project's ``(1 - z) h~ + z h`` is the original's ``(1 - z) h + z h~``);
  the GRU keeps the original's reset before the memory product (``reset_after=False``);
* Theano axis order inputs ('b,z,f,x,y') become 'b,f,z,x,y'.
"""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ModelFileError
from ..utils.safe_pickle import is_pickle
from .container import DESIGNATIONS
from .oldpickle import Record, read_pickles
from .registry import NODE_CLASSES

logger = logging.getLogger('elektronn2')

_GM = 'elektronn2.neuromancer.graphmanager'
_TAGGED_SHAPE = 'elektronn2.neuromancer.graphutils.TaggedShape'
_BN_EPS = 1e-5
#: Running-statistics count given to converted batch normalisation (it weighs the
#: next training batches as a long-trained layer would, see :mod:`.layer`).
_BN_COUNT = 1000.0
#: ELEKTRONN2 node classes refused, with the reason.
UNSUPPORTED = {
    'LRN': "ELEKTRONN2's LRN treats the borders differently (zero-padded mean, edge-padded "
           "channels); rebuild the net with nm.LRN and train it",
    'ApplyFunc': "its function was a Theano function",
    'GenericInput': "it fed arbitrary Python objects",
    'FlipNode': 'no counterpart here', 'AdvMerge': 'no counterpart here',
    'AdvTarget': 'no counterpart here',
}
#: Renamed activation functions.
_ACTIVATIONS = {'soft+': 'softplus'}
_LAYERS = ('Perceptron', 'Conv', 'UpConv')


def is_old_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file in an old pickled format (ELEKTRONN2 or ELEKTRONN v1)."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        return False
    with open(path, 'rb') as f:
        return is_pickle(f.read(16))


def convert(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """(graph, tensors) of today's model format from an ELEKTRONN2 ``.mdl`` file."""
    source = repr(str(path))
    objects = read_pickles(path)
    if len(objects) != 1 or not isinstance(objects[0], tuple) or len(objects[0]) != 2:
        raise ModelFileError(f"{source} is a pickle but not an ELEKTRONN2 model file "
                             f"((descriptors, designations) as Model.save wrote it)")
    descriptors, designations = objects[0]
    if not isinstance(descriptors, dict) or not isinstance(designations, dict):
        raise ModelFileError(f"{source}: descriptors and designations must be dicts")
    return _Converter(source, descriptors).run(designations)


class _Converter:
    """One conversion: descriptors in order -> nodes and tensors."""

    def __init__(self, source: str, descriptors: dict):
        self.source = source
        self.descriptors = list(descriptors.items())
        self.nodes: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.theano_order = False
        self._split: tuple[str, dict, int] | None = None  # (parent, kwargs, next start)

    def run(self, designations: dict) -> tuple[dict, dict[str, np.ndarray]]:
        for name, entry in self.descriptors:
            self.convert_entry(str(name), entry)
        names = {n['args']['name'] for n in self.nodes}
        kept = {}
        for purpose, value in designations.items():
            if purpose not in DESIGNATIONS or value is None or value == []:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            missing = [v for v in values if v not in names]
            if missing:
                raise ModelFileError(f"{self.source}: designation {purpose} names unknown "
                                     f"nodes {missing}")
            kept[purpose] = list(values) if isinstance(value, (list, tuple)) else value
        graph = {'name': 'converted', 'nodes': self.nodes, 'designations': kept}
        return graph, self.tensors

    # --- entries ---------------------------------------------------------------------------
    def convert_entry(self, name: str, entry) -> None:
        if _is(entry, f'{_GM}.SplitDescriptor'):
            self._start_split(name, entry)
            return
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2
                or not _is(entry[0], f'{_GM}.NodeDescriptor') or not isinstance(entry[1], dict)):
            raise ModelFileError(f"{self.source}: entry {name!r} is not [NodeDescriptor, "
                                 f"parameters] nor a SplitDescriptor")
        descr, params = entry[0].state, dict(entry[1])
        cls = descr.get('cls')
        cls_name = cls.qualname.rsplit('.', 1)[-1] if isinstance(cls, type) and issubclass(
            cls, Record) else None
        where = f"{self.source}: node {name!r} ({cls_name})"
        if cls_name == 'FromTensor':
            self._split_part(name, descr, where)
            return
        self._split = None
        if cls_name is None or cls_name in UNSUPPORTED or cls_name not in NODE_CLASSES:
            reason = UNSUPPORTED.get(cls_name or '', 'this project has no such node class')
            raise ModelFileError(f"{self.source}: node {name!r} of class {cls_name} cannot be "
                                 f"converted: {reason}")
        args = self._named_args(cls_name, descr, where)
        args['name'] = name
        tensors = {k: _as_array(v, f"{where}, parameter {k!r}") for k, v in params.items()}
        _CONVERSIONS.get(cls_name, _plain)(self, cls_name, args, tensors, where)
        self.nodes.append({'class': cls_name, 'args': args})
        self.tensors.update({f"{name}.{k}": np.ascontiguousarray(v, np.float32)
                             for k, v in tensors.items()})

    def _named_args(self, cls_name: str, descr: dict, where: str) -> dict:
        args, kwargs = descr.get('args', []), descr.get('kwargs', {})
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise ModelFileError(f"{where}: arguments are not a list and a dict")
        signature = inspect.signature(getattr(NODE_CLASSES[cls_name], '__init__'))
        try:
            bound = signature.bind_partial(None, *args, **{str(k): v for k, v in kwargs.items()})
        except TypeError as err:
            raise ModelFileError(f"{where}: arguments do not fit {cls_name}: {err}") from None
        named = dict(list(bound.arguments.items())[1:])  # without self
        named.pop('print_repr', None)
        return {k: self._value(v, f"{where}, argument {k!r}") for k, v in named.items()}

    def _value(self, value, where: str):
        """An argument value of the file as a value of today's graph format."""
        value = _plain_scalar(value)
        if isinstance(value, Record):
            if value.qualname == f'{_GM}.NodePointer':
                return {'__node__': str(value.state.get('target_id'))}
            if value.qualname == f'{_GM}.ParamPointer':  # shared: the owner shares it again
                return {'__node__': str(value.state.get('target_id'))}
            if value.qualname == 'future.types.newint.newint' and value.args:
                return int(value.args[0])
            raise ModelFileError(f"{where}: a {value.qualname} cannot be an argument here")
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, bytes):
            return value.decode('latin1')
        if isinstance(value, list):
            if len(value) == 2 and isinstance(value[0], np.ndarray) and value[1] in ('const', 'trainable'):
                return [None, value[1]]  # an initial value; the stored parameter holds it
            return [self._value(v, where) for v in value]
        if isinstance(value, tuple):
            return {'__tuple__': [self._value(v, where) for v in value]}
        if isinstance(value, dict):
            return {str(k): self._value(v, where) for k, v in value.items()}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ModelFileError(f"{where}: a value of type {type(value).__name__} cannot be "
                             f"converted")

    # --- split ----------------------------------------------------------------------------
    def _start_split(self, name: str, entry: Record) -> None:
        state = entry.state
        func = state.get('func')
        if not (isinstance(func, type) and issubclass(func, Record) and func.qualname.endswith('.split')):
            raise ModelFileError(f"{self.source}: split {name!r} calls "
                                 f"{getattr(func, 'qualname', func)!r}, not split")
        kwargs = dict(state.get('kwargs') or {})
        self._split = (str(state.get('node_id')), kwargs, 0)

    def _split_part(self, name: str, descr: dict, where: str) -> None:
        args = descr.get('args') or []
        shape_record = args[1] if len(args) >= 3 else None
        if self._split is None or not isinstance(shape_record, Record) or not _is(
                shape_record, _TAGGED_SHAPE):
            raise ModelFileError(f"{where}: a FromTensor not made by split() (e.g. by "
                                 f"decorr_split) cannot be converted")
        parent, kwargs, start = self._split
        if self._value(args[2], where) != {'__node__': parent}:
            raise ModelFileError(f"{where}: part of a split of {parent!r} but made from "
                                 f"another node")
        axis = _plain_scalar(kwargs.get('axis', 'f'))
        strip = bool(kwargs.get('strip_singleton_dims', False))
        tags = list(shape_record.state.get('_tags') or [])
        shape = [_plain_scalar(n) for n in shape_record.state.get('_shape') or []]
        if strip and isinstance(axis, str) and axis not in tags:
            length = 1
        else:
            index = tags.index(axis) if isinstance(axis, str) and axis in tags else axis
            if not isinstance(index, int) or not 0 <= index < len(shape):
                raise ModelFileError(f"{where}: split axis {axis!r} not in the part's shape")
            length = shape[index]
        if not isinstance(length, int) or length < 1:
            raise ModelFileError(f"{where}: a part of unknown size {length!r} along {axis!r}")
        self.nodes.append({'class': 'Split', 'args': {
            'parent': {'__node__': parent}, 'axis': axis, 'start': start, 'stop': start + length,
            'strip_singleton_dims': strip, 'name': name}})
        self._split = (parent, kwargs, start + length)


# --- per class ------------------------------------------------------------------------------
def _plain(conv: _Converter, cls_name: str, args: dict, tensors: dict, where: str) -> None:
    """Parameters kept by name; 0-d ones (scalars) become (1,)."""
    for key, value in tensors.items():
        if value.ndim == 0:
            tensors[key] = value.reshape(1)


def _input(conv: _Converter, cls_name: str, args: dict, tensors: dict, where: str) -> None:
    tags = args.get('tags')
    joined = tags if isinstance(tags, str) else ','.join(tags or [])
    order = [t.strip() for t in joined.split(',')]
    if order[:3] == ['b', 'z', 'f'] and len(order) == 5:
        shape = args['shape']['__tuple__'] if isinstance(args['shape'], dict) else args['shape']
        args['shape'] = {'__tuple__': [shape[0], shape[2], shape[1], shape[3], shape[4]]}
        args['tags'] = 'b,f,z,' + ','.join(order[3:])
        conv.theano_order = True
        logger.warning("%s: input in Theano's axis order (b,z,f,x,y) converted to "
                       "(b,f,z,x,y); feed the converted model arrays in that order", where)
    _plain(conv, cls_name, args, tensors, where)


def _layer(conv: _Converter, cls_name: str, args: dict, tensors: dict, where: str) -> None:
    """Perceptron, Conv, UpConv: weights, bias, batch normalisation, prelu, dropout."""
    if 'dropout_rate' in tensors:
        args['dropout_rate'] = float(tensors.pop('dropout_rate').reshape(-1)[0])
    tensors.pop('gradnet_rate', None)
    _rename_activation(args)
    if 'b' in tensors and tensors['b'].ndim == 2:  # prelu: (n_f, 2) = (bias, slope)
        tensors['prelu_slope'] = tensors['b'][:, 1]
        tensors['b'] = tensors['b'][:, 0]
        pool_shape = args.get('pool_shape', 1)
        if np.any(tensors['prelu_slope'] < 0) and np.any(np.asarray(pool_shape) > 1):
            logger.warning("%s: prelu slopes below 0 with pooling %s: ELEKTRONN2 pooled before "
                           "the activation, this package activates first (as for every "
                           "activation that is not monotone); outputs differ where a pooling "
                           "window mixes signs", where, pool_shape)
    for key in ('w', 'b', 'gamma', 'mean', 'std'):
        if isinstance(args.get(key), list) and args[key] and args[key][0] is None:
            continue  # [None, 'const']: the value is the stored parameter
        if not isinstance(args.get(key), dict):  # an array given by value, now stored
            args.pop(key, None)
    if 'w' in tensors:
        tensors['w'] = _CONV_WEIGHTS[cls_name](conv, tensors['w'])
    bn = args.get('batch_normalisation', False)
    if bn == 'fadeout':
        args['batch_normalisation'] = bn = 'train'
    if bn:
        _batch_norm(args, tensors, where)


def _conv_weights(conv: _Converter, w: np.ndarray) -> np.ndarray:
    if w.ndim == 5 and conv.theano_order:
        w = w.transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(np.flip(w, axis=tuple(range(2, w.ndim))))


def _upconv_weights(conv: _Converter, w: np.ndarray) -> np.ndarray:
    if w.ndim == 5 and conv.theano_order:
        w = w.transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(w.swapaxes(0, 1))


_CONV_WEIGHTS: dict[str, Callable[[_Converter, np.ndarray], np.ndarray]] = {
    'Perceptron': lambda conv, w: w, 'Conv': _conv_weights, 'UpConv': _upconv_weights}


def _batch_norm(args: dict, tensors: dict, where: str) -> None:
    """gamma, mean, std, b -> gamma, beta, mean, var (exact in prediction)."""
    missing = [k for k in ('gamma', 'mean', 'std', 'b') if k not in tensors]
    if missing:
        raise ModelFileError(f"{where}: batch normalisation without stored {missing}")
    std = tensors.pop('std').astype(np.float64)
    gamma = tensors['gamma'].astype(np.float64)
    if np.any(std <= 0):
        raise ModelFileError(f"{where}: batch-normalisation std has values <= 0")
    pool = args.get('pool_shape')
    pool = pool['__tuple__'] if isinstance(pool, dict) else pool
    if np.any(gamma < 0) and pool not in (None, 1) and np.prod(pool) > 1:
        raise ModelFileError(f"{where}: ELEKTRONN2 pooled before batch normalisation, this "
                             f"project after it; with negative gamma (features "
                             f"{np.flatnonzero(gamma < 0)[:5].tolist()}) the results differ")
    var = std ** 2 - _BN_EPS
    small = var <= 0  # std below sqrt(eps): keep gamma / sqrt(var + eps) == gamma / std
    var[small] = 0.0
    gamma[small] = gamma[small] * np.sqrt(_BN_EPS) / std[small]
    tensors.update(gamma=gamma, beta=tensors.pop('b'), var=var,
                   count=np.array([_BN_COUNT]))


def _recurrent(gates: list[int], negate: tuple[int, ...]) -> Callable:
    """GRU / LSTM: the original's stacked w ([memory; input] rows, its gate order) -> w, u, b."""
    def convert(conv: _Converter, cls_name: str, args: dict, tensors: dict, where: str) -> None:
        w, b = tensors.get('w'), tensors.get('b')
        if w is None or b is None or w.ndim != 2 or b.ndim != 1:
            raise ModelFileError(f"{where}: needs w (n_memory + n_in, gates * n_f) and b "
                                 f"(gates * n_f); prelu and batch normalisation were "
                                 f"unsupported in ELEKTRONN2's recurrent steps")
        n = w.shape[1] // len(gates)
        if w.shape[0] <= n or w.shape[1] != n * len(gates) or b.shape != (w.shape[1],):
            raise ModelFileError(f"{where}: w {w.shape} and b {b.shape} do not fit "
                                 f"{len(gates)} gates")
        blocks = [slice(g * n, (g + 1) * n) for g in gates]
        signs = [-1.0 if k in negate else 1.0 for k in range(len(gates))]
        tensors['w'] = np.concatenate([s * w[n:, blk] for s, blk in zip(signs, blocks)], axis=1)
        tensors['u'] = np.concatenate([s * w[:n, blk] for s, blk in zip(signs, blocks)], axis=1)
        tensors['b'] = np.concatenate([s * b[blk] for s, blk in zip(signs, blocks)])
        for key in ('dropout_rate', 'gradnet_rate'):
            tensors.pop(key, None)
        for key in ('w', 'b', 'gamma', 'mean', 'std'):
            args.pop(key, None)
        _rename_activation(args)
        if cls_name == 'GRU':
            args['reset_after'] = False
    return convert


#: Our gate k comes from the original's gate _GRU_GATES[k]: GRU (reset, update, candidate)
#: from (z, r, h~); LSTM (input, forget, candidate, output) from (f, i, o, c~).
_GRU_GATES = [1, 0, 2]
_LSTM_GATES = [1, 0, 3, 2]

_CONVERSIONS: dict[str, Callable[[_Converter, str, dict, dict, str], None]] = {
    'Input': _input, 'Perceptron': _layer, 'Conv': _layer, 'UpConv': _layer,
    'GRU': _recurrent(_GRU_GATES, negate=(1,)), 'LSTM': _recurrent(_LSTM_GATES, negate=()),
}


def _rename_activation(args: dict) -> None:
    act = args.get('activation_func')
    if isinstance(act, str):
        args['activation_func'] = _ACTIVATIONS.get(act, act)


def _is(obj: Any, qualname: str) -> bool:
    return isinstance(obj, Record) and obj.qualname == qualname


def _plain_scalar(value: Any) -> Any:
    """A numpy scalar of the file as a Python number; anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def _as_array(value, where: str) -> np.ndarray:
    """A parameter of the file as a finite numeric array."""
    value = _plain_scalar(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.asarray(value, np.float32)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in 'biuf':
        raise ModelFileError(f"{where} is not a numeric array ({type(value).__name__})")
    if not np.isfinite(value).all():
        raise ModelFileError(f"{where} holds NaN or Inf; a model that diverged cannot be "
                             f"converted")
    return value

