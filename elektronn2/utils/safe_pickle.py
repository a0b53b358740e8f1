"""Reading pickles without running code from them.

Unpickling normally calls every function a file names. :func:`load_all` builds only:

* numpy arrays, dtypes and scalars of plain numeric types (and records of them), each
  checked (shape, dtype, size of its data) before its memory is allocated, all arrays
  of a file together at most as many bytes as the (decompressed) file holds;
* what pickle's own opcodes make (lists, tuples, dicts, strings, numbers),
  ``OrderedDict`` and bytes (``_codecs.encode``, ``bytes``, ``bytearray``);
* what the caller's :class:`Policy` allows besides: classes whose objects stay inert
  (:func:`inert_class`) or are built from their checked state once the whole file is
  read (:func:`built_class`), and functions it deems harmless.

Every other global the file names (``os.system``, ``builtins.eval``, any unknown name)
is refused with the policy's error naming it before anything is called, so a
``__reduce__`` payload never runs. Gzip-compressed files are read too.

Only numpy is imported here: this is a base module (docs/architecture.rst) that
``neuromancer``, ``data`` and ``utils`` share.
"""
from __future__ import annotations

import codecs
import functools
import gzip
import io
import math
import os
import pickle
import re
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ['Policy', 'Inert', 'inert_class', 'built_class', 'reconstructor', 'load_all',
           'is_pickle', 'ARRAY_DTYPES', 'MAX_FILE_BYTES', 'MAX_COMPRESSION_RATIO']

#: Largest ratio of decompressed to compressed size of a gzip-compressed file (default).
MAX_COMPRESSION_RATIO = 100
#: Largest file (decompressed) read, in bytes.
MAX_FILE_BYTES = 16 * 2 ** 30
#: Most levels of nested objects.
MAX_DEPTH = 64
#: dtypes an array or scalar may have (numpy's type strings), besides records of them.
ARRAY_DTYPES = frozenset({'b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4',
                          'f8', 'c8', 'c16', 'bool', 'int8', 'int16', 'int32', 'int64',
                          'uint8', 'uint16', 'uint32', 'uint64', 'float16', 'float32',
                          'float64'})
_RECORD_DTYPE = re.compile(r'V[1-9][0-9]{0,8}')
_GZIP_MAGIC = b'\x1f\x8b'
#: Python 2's module names (pickle maps them itself only in its own find_class).
_PY2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}


@dataclass(frozen=True)
class Policy:
    """What one kind of file may hold besides the plain data this module always reads.

    Attributes:
        error: the exception class raised for every refusal (its message names the file).
        hint: what the file may hold, said after a refused global's name.
        globals: (module, name) -> what that global of the file stands for.
        max_ratio: largest compression ratio of a gzip-compressed file; None: only
            :data:`MAX_FILE_BYTES` bounds it.
    """
    error: type[Exception]
    hint: str
    globals: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    max_ratio: int | None = MAX_COMPRESSION_RATIO


class _Refused(Exception):
    """A refusal, raised as the policy's error naming the file by :func:`load_all`."""


class Inert:
    """An object of a class the file names (a subclass made per class by
    :func:`inert_class`): it keeps the arguments of its creation and its state, and does
    nothing else. After the whole file is read, :meth:`finish` gives what the reader gets."""
    module: str = ''
    qualname: str = ''

    args: tuple
    kwargs: dict
    state: dict

    def __new__(cls, *args, **kwargs):
        # pickle's NEWOBJ calls __new__ only, REDUCE calls the class: both end here
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, {}
        return obj

    def __setstate__(self, state) -> None:
        self.state = state  # checked when the file is read completely (_Resolver)

    def finish(self) -> Any:
        """What this object becomes, its arguments and state resolved: itself."""
        return self

    def __repr__(self) -> str:
        keys = sorted(self.state) if isinstance(self.state, dict) else '(unread state)'
        return f"<{type(self).__name__} {self.qualname} {keys}>"


def inert_class(module: str, name: str, base: type[Inert] = Inert) -> type[Inert]:
    """A subclass of ``base`` standing for the file's ``module.name``."""
    return type(name, (base,), {'module': module, 'qualname': f'{module}.{name}'})


def built_class(cls: type) -> type[Inert]:
    """A stand-in for ``cls`` whose objects become real ``cls`` objects once the file is
    read: ``cls.__new__`` with the pickled arguments, then ``__setstate__`` (or the
    attribute dict) with the resolved state. Only for classes whose ``__new__`` and
    ``__setstate__`` do nothing but store data."""
    def finish(self: Inert) -> Any:
        obj = cls.__new__(cls, *self.args, **self.kwargs)
        if hasattr(obj, '__setstate__'):
            obj.__setstate__(self.state)
        else:
            obj.__dict__.update(self.state)
        return obj
    return type(cls.__qualname__, (Inert,), {
        'module': cls.__module__, 'qualname': f'{cls.__module__}.{cls.__qualname__}',
        'finish': finish})


def reconstructor(cls, base, state=None) -> Inert:
    """``copyreg._reconstructor`` (how protocols 0 and 1 create objects), for the
    policy's classes only."""
    if not (isinstance(cls, type) and issubclass(cls, Inert)) or base is not object or state is not None:
        raise _Refused(f"refused copyreg._reconstructor({cls!r:.60}, {base!r:.60}, ...)")
    return cls()


class _Budget:
    """Bytes that arrays built from one file may take in all (what the file holds)."""

    def __init__(self, limit: int):
        self.left = limit

    def take(self, n: int, what: str) -> None:
        if n > self.left:
            raise _Refused(f"{what} needs {n:,} bytes, more than the file holds "
                           f"({self.left:,} bytes left); refused without allocating it")
        self.left -= n


class _NdarrayMarker:
    """What the file's ``numpy.ndarray`` global stands for (only passed to _reconstruct)."""

    @staticmethod
    def __setstate__(state) -> None:  # BUILD of the class itself
        raise _Refused("refused state for numpy.ndarray")


class _PickledDtype:
    """A numpy dtype named in the file: a plain numeric type (its byte order from the
    state) or a record ('V<size>') of such fields (its fields from the state)."""

    def __init__(self, spec, align=False, copy=False):
        if isinstance(spec, bytes):
            spec = spec.decode('latin1')
        if not isinstance(spec, str) or not (spec in ARRAY_DTYPES or _RECORD_DTYPE.fullmatch(spec)):
            raise _Refused(f"refused numpy dtype {spec!r:.40}: only plain numeric dtypes "
                           f"{sorted(ARRAY_DTYPES)} and records of them are read")
        self.spec = spec
        self._dtype = None if spec.startswith('V') else np.dtype(spec)

    @property
    def dtype(self) -> np.dtype:
        if self._dtype is None:
            raise _Refused(f"refused numpy dtype {self.spec!r}: a record without fields")
        return self._dtype

    def __setstate__(self, state) -> None:
        if self.spec.startswith('V'):
            self._dtype = _record_dtype(self.spec, state)
            return
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else '|'
        if order not in ('<', '>', '|', '='):
            raise _Refused(f"refused numpy dtype state {state!r:.80}")
        if order in ('<', '>'):
            self._dtype = self.dtype.newbyteorder('<' if order == '<' else '>')


def _record_dtype(spec: str, state) -> np.dtype:
    """A record dtype from numpy's pickled state ``(version, order, subarray, names,
    fields, itemsize, ...)``, its fields themselves checked dtypes."""
    if not (isinstance(state, tuple) and len(state) >= 6):
        raise _Refused(f"refused numpy dtype {spec} with state {state!r:.80}")
    subarray, names, fields, itemsize = state[2:6]
    try:
        if subarray is not None:
            base, shape = subarray
            shape = (shape,) if isinstance(shape, int) else shape
            if not isinstance(base, _PickledDtype) or not (isinstance(shape, tuple) and all(
                    isinstance(n, int) and n >= 0 for n in shape)):
                raise _Refused(f"refused numpy sub-array dtype {subarray!r:.80}")
            dtype = np.dtype((base.dtype, shape))
        elif isinstance(names, tuple) and isinstance(fields, dict):
            parts = [fields[n] for n in names]
            if not all(isinstance(p, tuple) and len(p) in (2, 3) and isinstance(p[0], _PickledDtype)
                       and isinstance(p[1], int) for p in parts):
                raise _Refused(f"refused numpy record fields {fields!r:.80}")
            dtype = np.dtype({'names': list(names), 'formats': [p[0].dtype for p in parts],
                              'offsets': [p[1] for p in parts], 'itemsize': itemsize})
        else:
            raise _Refused(f"refused numpy dtype {spec}: a record without fields")
    except (ValueError, TypeError, KeyError) as err:
        raise _Refused(f"refused numpy dtype {spec}: {err}") from None
    if dtype.itemsize != int(spec[1:]):
        raise _Refused(f"refused numpy dtype {spec}: its fields take {dtype.itemsize} bytes")
    return dtype


def _array_from(data, dtype, shape, fortran: bool, budget: _Budget) -> np.ndarray:
    """A copy of the array in ``data`` (bytes or a latin1 str), all checked first."""
    if not (isinstance(shape, tuple) and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise _Refused(f"refused numpy array of shape {shape!r:.80}")
    if not isinstance(dtype, _PickledDtype):
        raise _Refused("refused numpy array without a plain numeric dtype")
    nbytes = math.prod(shape) * dtype.dtype.itemsize
    what = f"a numpy array of shape {shape} ({dtype.dtype})"
    if not isinstance(data, (bytes, bytearray, str)) or len(data) != nbytes:
        size = len(data) if isinstance(data, (bytes, bytearray, str)) else type(data).__name__
        raise _Refused(f"{what} claims {nbytes:,} bytes, but its data has {size}; "
                       f"refused without allocating it")
    budget.take(nbytes, what)
    raw = data.encode('latin1') if isinstance(data, str) else data
    return np.frombuffer(raw, dtype.dtype).reshape(shape, order='F' if fortran else 'C').copy()


class _PickledArray:
    """A numpy array of the file: created empty by ``_reconstruct``, filled by its state
    ``(version, shape, dtype, fortran, data)``."""

    def __init__(self, budget: _Budget):
        self._budget = budget
        self.value: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"refused numpy array state of type {type(state).__name__}")
        shape, dtype, fortran, data = state[-4:]
        self.value = _array_from(data, dtype, shape, bool(fortran), self._budget)


def _bytes(text='', encoding='latin1') -> bytes:
    """The protocol-2 forms of bytes: ``_codecs.encode(text, 'latin1')``, ``bytes()``
    (never ``bytes(n)``, which would allocate n bytes the file does not hold)."""
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str) or codecs.lookup(encoding).name != 'iso8859-1':
        raise _Refused(f"refused bytes from {type(text).__name__} ({encoding!r:.20})")
    return text.encode('latin1')


def _bytearray(text='', encoding='latin1') -> bytearray:
    return bytearray(_bytes(text, encoding))


_NUMPY_CORE = ('numpy.core.multiarray', 'numpy._core.multiarray')
_NUMPY_NUMERIC = ('numpy.core.numeric', 'numpy._core.numeric')
_PLAIN = {('numpy', 'dtype'): _PickledDtype, ('numpy', 'ndarray'): _NdarrayMarker,
          ('collections', 'OrderedDict'): OrderedDict,
          ('_codecs', 'encode'): _bytes, ('codecs', 'encode'): _bytes,
          ('builtins', 'bytes'): _bytes, ('builtins', 'bytearray'): _bytearray}


class _Unpickler(pickle.Unpickler):
    """pickle's unpickler whose ``find_class`` answers from the allow-lists only."""

    def __init__(self, stream, policy: Policy, budget: _Budget):
        super().__init__(stream, encoding='latin1')
        self._policy, self._budget = policy, budget

    def find_class(self, module: str, name: str):
        key = (_PY2_MODULES.get(module, module), name)
        if key[0] in _NUMPY_CORE and name in ('_reconstruct', 'scalar'):
            return self._reconstruct if name == '_reconstruct' else self._scalar
        if key[0] in _NUMPY_NUMERIC and name == '_frombuffer':
            return self._frombuffer
        found = _PLAIN.get(key, self._policy.globals.get(key))
        if isinstance(found, types.FunctionType):  # a fresh object: BUILD cannot change ours
            return functools.partial(found)
        if found is not None:
            return found
        raise _Refused(f"refused global {module}.{name} (nothing was run): {self._policy.hint}")

    def persistent_load(self, pid):
        raise _Refused(f"refused persistent id {pid!r:.60}")

    def _reconstruct(self, cls, shape, typecode) -> _PickledArray:
        if cls is not _NdarrayMarker:
            raise _Refused(f"refused numpy _reconstruct of {cls!r:.60}")
        return _PickledArray(self._budget)

    def _frombuffer(self, data, dtype, shape, order) -> np.ndarray:
        """numpy's protocol-5 form of an array (data in-band)."""
        return _array_from(data, dtype, shape, order == 'F', self._budget)

    def _scalar(self, dtype, data=b''):
        if not isinstance(dtype, _PickledDtype):
            raise _Refused("refused numpy scalar without a plain dtype")
        raw = data.encode('latin1') if isinstance(data, str) else data
        if not isinstance(raw, bytes) or len(raw) != dtype.dtype.itemsize:
            raise _Refused(f"refused numpy scalar {dtype.dtype} with {type(data).__name__} data")
        return np.frombuffer(raw, dtype.dtype).copy()[0]


def is_pickle(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a (possibly gzip-compressed) pickle."""
    return head.startswith((_GZIP_MAGIC, b'\x80\x02', b'\x80\x03', b'\x80\x04', b'\x80\x05',
                            b'(dp', b'(lp', b'ccopy_reg', b'(t', b'(('))


def load_all(path: str | os.PathLike, policy: Policy) -> list:
    """All pickles stored one after another in ``path`` (gzip-compressed or not), read
    with ``policy``: arrays come back as numpy arrays, the policy's classes as what their
    stand-ins' ``finish`` gives. Every refusal is a ``policy.error`` naming the file."""
    path = Path(os.path.expanduser(os.fspath(path)))
    source = repr(str(path))
    if not path.is_file():
        raise policy.error(f"{source} does not exist")
    try:
        data = _file_bytes(path, policy.max_ratio)
        stream = io.BytesIO(data)
        unpickler = _Unpickler(stream, policy, _Budget(len(data)))
        objects = []
        while stream.tell() < len(data):
            objects.append(unpickler.load())
        return _Resolver().walk(objects, 0)
    except _Refused as err:
        raise policy.error(f"{source}: {err}") from None
    except Exception as err:  # truncated or malformed pickles
        raise policy.error(f"{source} is not a readable pickle: {type(err).__name__}: "
                           f"{err}") from None


def _file_bytes(path: Path, max_ratio: int | None) -> bytes:
    size = path.stat().st_size
    with open(path, 'rb') as f:
        if f.read(2) != _GZIP_MAGIC:
            if size > MAX_FILE_BYTES:
                raise _Refused(f"the file has {size:,} bytes, more than the {MAX_FILE_BYTES:,} "
                               f"read")
            f.seek(0)
            return f.read()
    limit = MAX_FILE_BYTES if max_ratio is None else min(max_ratio * size, MAX_FILE_BYTES)
    try:
        with gzip.open(path, 'rb') as g:
            data = g.read(limit + 1)
    except (OSError, EOFError) as err:
        raise _Refused(f"a broken gzip file: {err}") from None
    if len(data) > limit:
        ratio = '' if max_ratio is None else f" ({max_ratio}x its size)"
        raise _Refused(f"the file decompresses to more than {limit:,} bytes{ratio}; refused")
    return data


class _Resolver:
    """Replaces the stand-ins of a file's objects by what they stand for: arrays and
    dtypes by numpy's, :class:`Inert` objects by what their ``finish`` gives (after
    their arguments and state). Containers are updated in place (tuples rebuilt)."""

    def __init__(self):
        self.done: dict[int, tuple[Any, Any]] = {}  # id -> (object, result): keeps it alive

    def walk(self, x, depth: int):
        if depth > MAX_DEPTH:
            raise _Refused(f"objects nested deeper than {MAX_DEPTH} levels")
        if id(x) in self.done:
            return self.done[id(x)][1]
        out: Any = x
        if isinstance(x, _PickledArray):
            if x.value is None:
                raise _Refused("a numpy array without data")
            out = x.value
        elif isinstance(x, _PickledDtype):
            out = x.dtype
        elif isinstance(x, list):
            self.done[id(x)] = (x, x)  # in place: a list may hold itself
            x[:] = [self.walk(v, depth + 1) for v in x]
        elif isinstance(x, dict):
            self.done[id(x)] = (x, x)
            items = [(self.walk(k, depth + 1), self.walk(v, depth + 1)) for k, v in x.items()]
            x.clear()
            x.update(items)
        elif isinstance(x, set):
            self.done[id(x)] = (x, x)
            items = [self.walk(v, depth + 1) for v in x]
            x.clear()
            x.update(items)
        elif isinstance(x, (tuple, frozenset)):
            out = type(x)(self.walk(v, depth + 1) for v in x)
        elif isinstance(x, Inert):
            x.args = tuple(self.walk(v, depth + 1) for v in x.args)
            x.kwargs = {str(k): self.walk(v, depth + 1) for k, v in x.kwargs.items()}
            x.state = {str(k): self.walk(v, depth + 1) for k, v in _state_dict(x).items()}
            out = x.finish()
        self.done[id(x)] = (x, out)
        return out


def _state_dict(obj: Inert) -> dict:
    """The pickled state of ``obj`` as an attribute dict (also from ``(dict, slots)``)."""
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and all(
            s is None or isinstance(s, dict) for s in state):
        state = {**(state[0] or {}), **(state[1] or {})}
    if not isinstance(state, dict):
        raise _Refused(f"{obj.qualname}: its pickled state is a {type(state).__name__}, "
                       f"not a dict of attributes")
    return state
