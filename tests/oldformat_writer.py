"""Writes pickles as ELEKTRONN2 (Python 2, cPickle protocol 2) wrote them, for tests.

Nothing of the original is imported: its classes and functions appear as GLOBAL
opcodes naming them (:class:`Global`), its objects as NEWOBJ + BUILD of such a global
(:class:`Obj`); numpy arrays as Python 2's numpy pickled them (``_reconstruct`` +
state with the raw bytes as a Python 2 ``str``). :class:`Reduce` writes any call, which
is how the security tests craft payloads.
"""
from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass
class Obj:
    """An instance of ``cls`` with attribute dict ``state`` (NEWOBJ, BUILD)."""
    cls: Global
    state: dict = field(default_factory=dict)


@dataclass
class Reduce:
    """``func(*args)`` when unpickled (REDUCE)."""
    func: Global
    args: tuple = ()


NEURAL = 'elektronn2.neuromancer.neural'
BASIC = 'elektronn2.neuromancer.node_basic'
LOSS = 'elektronn2.neuromancer.loss'
GM = 'elektronn2.neuromancer.graphmanager'


def node(cls_module: str, cls_name: str, args: list, kwargs: dict) -> Obj:
    return Obj(Global(GM, 'NodeDescriptor'), {'args': list(args), 'kwargs': dict(kwargs),
                                              'cls': Global(cls_module, cls_name)})


def ptr(name: str) -> Obj:
    return Obj(Global(GM, 'NodePointer'), {'target_id': name})


def tagged_shape(shape, tags) -> Obj:
    n_sp = sum(t in 'zxy' for t in tags)
    return Obj(Global('elektronn2.neuromancer.graphutils', 'TaggedShape'),
               {'_shape': list(shape), '_tags': list(tags), '_strides': np.ones(n_sp, np.int64),
                '_mfp_offsets': np.zeros((1, n_sp), np.int64), '_fov': np.ones(n_sp, np.int64)})


def dumps(obj) -> bytes:
    out = bytearray(pickle.PROTO + b'\x02')
    _save(obj, out)
    out += pickle.STOP
    return bytes(out)


def _str(data: bytes, out: bytearray) -> None:  # a Python 2 str
    if len(data) < 256:
        out += pickle.SHORT_BINSTRING + bytes([len(data)]) + data
    else:
        out += pickle.BINSTRING + struct.pack('<i', len(data)) + data


def _save(obj, out: bytearray) -> None:
    if obj is None:
        out += pickle.NONE
    elif obj is True or obj is False:
        out += pickle.NEWTRUE if obj else pickle.NEWFALSE
    elif isinstance(obj, np.generic):
        _save(Reduce(Global('numpy.core.multiarray', 'scalar'),
                     (obj.dtype, obj.tobytes())), out)
    elif isinstance(obj, int):
        out += pickle.BININT + struct.pack('<i', obj)
    elif isinstance(obj, float):
        out += pickle.BINFLOAT + struct.pack('>d', obj)
    elif isinstance(obj, str):
        _str(obj.encode('latin1'), out)
    elif isinstance(obj, bytes):
        _str(obj, out)
    elif isinstance(obj, Global):
        out += pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, Obj):
        _save(obj.cls, out)
        out += pickle.EMPTY_TUPLE + pickle.NEWOBJ
        _save(obj.state, out)
        out += pickle.BUILD
    elif isinstance(obj, Reduce):
        _save(obj.func, out)
        _save(tuple(obj.args), out)
        out += pickle.REDUCE
    elif isinstance(obj, np.dtype):
        _save(Reduce(Global('numpy', 'dtype'), (obj.str[1:], 0, 1)), out)
        _save((3, '<' if obj.itemsize > 1 else '|', None, None, None, -1, -1, 0), out)
        out += pickle.BUILD
    elif isinstance(obj, np.ndarray):
        _save(Reduce(Global('numpy.core.multiarray', '_reconstruct'),
                     (Global('numpy', 'ndarray'), (0,), b'b')), out)
        arr = np.ascontiguousarray(obj)
        _save((1, tuple(arr.shape), arr.dtype, False, arr.tobytes()), out)
        out += pickle.BUILD
    elif isinstance(obj, OrderedDict):  # Python 2: OrderedDict([[k, v], ...])
        _save(Reduce(Global('collections', 'OrderedDict'),
                     ([[k, v] for k, v in obj.items()],)), out)
    elif isinstance(obj, dict):
        out += pickle.EMPTY_DICT + pickle.MARK
        for k, v in obj.items():
            _save(k, out)
            _save(v, out)
        out += pickle.SETITEMS
    elif isinstance(obj, list):
        out += pickle.EMPTY_LIST + pickle.MARK
        for v in obj:
            _save(v, out)
        out += pickle.APPENDS
    elif isinstance(obj, tuple):
        out += pickle.MARK
        for v in obj:
            _save(v, out)
        out += pickle.TUPLE
    else:
        raise TypeError(f"cannot write {type(obj).__name__}")
