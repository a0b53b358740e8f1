"""ELEKTRONN2's ``elektronn2.utils.utils_basic``: file helpers, timers, growing arrays.

Under their old names and signatures: HDF5 and pickle files (``h5save``/``h5load``,
``picklesave``/``pickleload``), timing (``timeit``, ``Timer`` on :class:`.timer.Timer`),
``cache``, ring and growing buffers (``CircularBuffer``, ``AccumulationArray``),
nearest neighbours (``KDT``, ``DynamicKDT`` on :class:`.kdtree.DynamicKDT`), process
pools (``parallel_accum``) and small helpers. Like ELEKTRONN2, ``timeit``,
``Timer.check`` and ``unique_rows`` print their report.

``pickleload`` unpickles only plain data (numbers, strings, containers, numpy arrays and
the classes of this module); other pickles are refused, since unpickling can run code.
"""
from __future__ import annotations

import builtins
import collections
import functools
import importlib
import logging
import multiprocessing
import os
import pickle
import re
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from . import kdtree as _kdtree
from . import safe_pickle
from . import timer as _timer

logger = logging.getLogger('elektronn2')

__all__ = ['get_free_cpu_count', 'parallel_accum', 'DecoratorBase', 'timeit', 'cache',
           'CircularBuffer', 'AccumulationArray', 'KDT', 'DynamicKDT', 'import_variable_from_file',
           'picklesave', 'pickleload', 'h5save', 'h5load', 'pretty_string_ops', 'makeversiondir',
           'Timer', 'pretty_string_time', 'unique_rows', 'as_list']


# --- processes --------------------------------------------------------------------------------
def get_free_cpu_count() -> int:
    """CPUs not busy now (sampled over 0.4 s), keeping one free: at least 3 on machines
    with more than 2 CPUs, else 1."""
    import psutil
    n = psutil.cpu_count() or 1
    if n <= 2:
        return 1
    idle = 1 - psutil.cpu_percent(interval=0.4) / 100
    return int(min(max(3, n * idle * 0.8), n - 1))


def _accumulate(results: list, n_ret: int) -> list | tuple[list, ...]:
    """Concatenate per-call results (iterables are extended, scalars appended)."""
    accums = [[] for _ in range(n_ret)]
    for result in results:
        parts = [result] if n_ret == 1 else result
        for accum, part in zip(accums, parts):
            try:
                accum.extend(part)
            except TypeError:
                accum.append(part)
    return accums[0] if n_ret == 1 else tuple(accums)


def parallel_accum(func: Callable, n_ret: int, var_args: Sequence, const_args: Sequence,
                   proc: int = -1, debug: bool = False) -> list | tuple[list, ...]:
    """``func((*v, *const_args))`` for each v of ``var_args`` on ``proc`` processes
    (-1: :func:`get_free_cpu_count`; ``debug``: in this process), results concatenated.

    ``func`` takes one tuple of arguments and returns ``n_ret`` results (a list or a
    value for ``n_ret=1``); returns one list, or a tuple of ``n_ret`` lists.
    """
    if not len(var_args):
        raise ConfigError("parallel_accum: var_args is empty; give one entry per call")
    args = []
    for a in var_args:
        head = tuple(a) if isinstance(a, (tuple, list, np.ndarray)) else (a,)
        args.append(head + tuple(const_args))
    if debug:
        return _accumulate([func(a) for a in args], n_ret)
    proc = get_free_cpu_count() if proc == -1 else proc
    with multiprocessing.get_context('forkserver').Pool(proc) as pool:
        return _accumulate(pool.map(func, args), n_ret)


# --- decorators -------------------------------------------------------------------------------
class DecoratorBase:
    """Base of decorators usable bare (``@deco``) and with arguments (``@deco(n=3)``).

    Bare, the instance wraps the function and ``__call__`` runs it; with arguments, the
    instance keeps them (``dec_args``, ``dec_kwargs``) and ``__call__(func)`` returns the
    wrapped function. Subclasses override :meth:`wrap`.
    """

    def __init__(self, *args, **kwargs):
        self.func = None
        self.dec_args, self.dec_kwargs = args, kwargs
        if len(args) == 1 and not kwargs and callable(args[0]):
            self.func = args[0]
            self.dec_args, self.dec_kwargs = (), {}
            functools.update_wrapper(self, self.func)
            self._wrapped = self.wrap(self.func)

    def wrap(self, func: Callable) -> Callable:
        """The wrapped function (the base class wraps nothing)."""
        return func

    def __call__(self, *args, **kwargs):
        if self.func is not None:
            return self._wrapped(*args, **kwargs)
        if len(args) == 1 and not kwargs and callable(args[0]):
            return functools.wraps(args[0])(self.wrap(args[0]))
        raise ConfigError(f"{type(self).__name__}(...) with arguments decorates one function; "
                          f"got {args!r} {kwargs!r}")


class timeit(DecoratorBase):  # noqa: N801 (ELEKTRONN2's name)
    """Print the run time of each call: ``@timeit``, or ``@timeit(n=10)`` (runs the
    function n times per call and prints the mean; the last result is returned)."""

    def wrap(self, func: Callable) -> Callable:
        n = int(self.dec_kwargs.get('n', 1))

        def timed(*args, **kwargs):
            start = time.perf_counter()
            for _ in range(n):
                result = func(*args, **kwargs)
            seconds = time.perf_counter() - start
            average = f" averaged over {n} execs" if n > 1 else ''
            print(f"Function <{func.__name__}> took {seconds / n:.5g} s{average}")
            return result
        return timed


def _key(value) -> Any:
    """A hashable key of an argument (arrays by dtype, shape and bytes)."""
    if isinstance(value, np.ndarray):
        return ('ndarray', value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(_key(v) for v in value)
    if isinstance(value, dict):
        return ('dict',) + tuple(sorted((k, _key(v)) for k, v in value.items()))
    return value


class cache(DecoratorBase):  # noqa: N801 (ELEKTRONN2's name)
    """Memoise a function by its arguments (numpy arrays, lists and dicts included):
    ``@cache`` or ``@cache()``. The memo is ``.memo``; it keeps every result."""

    def __init__(self, *args, **kwargs):
        self.memo: dict = {}
        super().__init__(*args, **kwargs)

    def wrap(self, func: Callable) -> Callable:
        def cached(*args, **kwargs):
            key = (_key(args), _key(kwargs))
            if key not in self.memo:
                self.memo[key] = func(*args, **kwargs)
            return self.memo[key]
        return cached


# --- buffers ----------------------------------------------------------------------------------
class _FilledPart:
    """The filled part ``data`` (the first ``length`` rows of ``_buffer``), with len,
    indexing and repr of it."""
    _buffer: np.ndarray
    length: int

    @property
    def data(self) -> np.ndarray:
        return self._buffer[:self.length]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, slc):
        return self.data[slc]

    def __repr__(self) -> str:
        return repr(self.data)


class CircularBuffer(_FilledPart):
    """The last ``buffer_len`` floats appended, newest first.

    ``data`` holds min(appended, buffer_len) values, newest at index 0; ``mean()`` is
    0.0 while empty; ``len()`` counts every append.
    """

    def __init__(self, buffer_len: int):
        self.length = 0
        self._buffer = np.zeros(buffer_len)

    def append(self, data: float) -> None:
        self._buffer = np.roll(self._buffer, 1)
        self._buffer[0] = data
        self.length += 1

    def mean(self) -> float:
        return float(self.data.mean()) if self.length else 0.0

    def setvals(self, val: float) -> None:
        """Set every slot (also the unfilled ones) to ``val``."""
        self._buffer[:] = val


class AccumulationArray(_FilledPart):
    """A growing array of rows of shape ``right_shape`` (or records, when ``dtype`` is a
    record dtype dict ``{'names': [...], 'formats': [...]}``), with running min, max,
    sum and exponential moving average (``ema = f * ema + (1 - f) * row``).

    ``data`` (and indexing) gives the filled part ``(n, *right_shape)``; storage doubles
    when full. ``data=`` starts from an array (its rows and dtype).
    """

    def __init__(self, right_shape: int | Sequence[int] = (), dtype=np.float32, n_init: int = 100,
                 data: np.ndarray | None = None, ema_factor: float = 0.95):
        if isinstance(dtype, dict) and tuple(np.atleast_1d(right_shape)) not in ((), (0,)):
            raise ConfigError("AccumulationArray: a record dtype (dict) takes one record per row; "
                              "leave right_shape=()")
        if data is not None and len(data):
            data = np.asarray(data)
            n_init += len(data)
            right_shape, dtype = data.shape[1:], data.dtype
        self._right_shape = (int(right_shape),) if np.isscalar(right_shape) else tuple(right_shape)
        self.dtype = np.dtype(dtype)
        self._ema_factor = ema_factor
        self._buffer = np.zeros((max(int(n_init), 1),) + self._right_shape, dtype=self.dtype)
        self.clear()
        if data is not None and len(data):
            self.length = len(data)
            self._buffer[:self.length] = data
            if self.dtype.names is None:
                self._min, self._max, self._sum = data.min(0), data.max(0), data.sum(0)

    def clear(self) -> None:
        """Forget all rows (the storage is kept)."""
        self.length = 0
        self._min, self._max, self._sum = np.inf, -np.inf, 0
        self._ema = None

    def append(self, data) -> None:
        """Add one row (``right_shape``) or record (a tuple of the fields)."""
        if self.length == len(self._buffer):
            grown = np.zeros((2 * len(self._buffer),) + self._right_shape, dtype=self.dtype)
            grown[:self.length] = self._buffer
            self._buffer = grown
        self._buffer[self.length] = tuple(data) if self.dtype.names else data
        row = self._buffer[self.length]
        self.length += 1
        if self.dtype.names:
            return
        f = self._ema_factor
        self._ema = row.copy() if self._ema is None else self._ema * f + row * (1 - f)
        self._min = np.minimum(row, self._min)
        self._max = np.maximum(row, self._max)
        self._sum = self._sum + np.asarray(row, dtype=np.float64 if row.dtype.kind == 'f' else None)

    def add_offset(self, off) -> None:
        """Add ``off`` (a row, or (1, *right_shape)) to every row and the statistics."""
        off = np.asarray(off)
        self.data[:] += off
        row = off[0] if off.ndim > len(self._right_shape) else off
        self._min = self._min + row
        self._max = self._max + row
        self._sum = self._sum + row * self.length

    def mean(self) -> np.ndarray:
        return np.asarray(self._sum, dtype=np.float32) / self.length

    def sum(self):
        return self._sum

    def max(self):
        return self._max

    def min(self):
        return self._min

    @property
    def ema(self):
        return self._ema


    def __setstate__(self, state: dict) -> None:
        """Unpickling, also of ELEKTRONN2's instances (whose record dtype is a dict)."""
        self.__dict__.update(state)
        self.dtype = np.dtype(self.dtype)
        self._right_shape = tuple(self._right_shape)
        self.__dict__.setdefault('_ema', None)
        self.__dict__.setdefault('_ema_factor', 0.95)


# --- nearest neighbours ---------------------------------------------------------------------
class KDT:
    """k-nearest-neighbour and radius queries with scikit-learn's ``NearestNeighbors``
    interface (``fit``, ``kneighbors``, ``radius_neighbors``), on scipy's cKDTree.

    Only the Minkowski metric (any ``p``) is supported; ``algorithm``, ``leaf_size`` and
    ``metric_params`` are accepted for compatibility (``leaf_size`` is used).
    """

    def __init__(self, n_neighbors: int = 5, radius: float = 1.0, algorithm: str = 'auto',
                 leaf_size: int = 30, metric: str = 'minkowski', p: float = 2,
                 metric_params: dict | None = None, n_jobs: int = 1, **kwargs):
        known = {'minkowski': p, 'euclidean': 2, 'l2': 2, 'manhattan': 1, 'l1': 1,
                 'cityblock': 1, 'chebyshev': np.inf, 'infinity': np.inf}
        if metric not in known or kwargs:
            raise ConfigError(f"KDT supports the metrics {sorted(known)} and no extra options; "
                              f"got metric={metric!r}, {sorted(kwargs)}")
        self.n_neighbors, self.radius, self.algorithm = n_neighbors, radius, algorithm
        self.leaf_size, self.metric, self.metric_params = leaf_size, metric, metric_params
        self.p, self.n_jobs = known[metric], n_jobs
        self._tree = None

    def fit(self, X: np.ndarray, y=None) -> KDT:  # noqa: N803 (scikit-learn's name)
        """Index the points ``X`` (n, d)."""
        from scipy.spatial import cKDTree
        self._fit_X = np.asarray(X, dtype=np.float64)
        self._tree = cKDTree(self._fit_X, leafsize=self.leaf_size)
        return self

    def _queries(self, X) -> tuple[np.ndarray, bool]:  # noqa: N803
        if self._tree is None:
            raise ConfigError("KDT: call fit(points) before querying")
        return (self._fit_X, True) if X is None else (np.atleast_2d(np.asarray(X, float)), False)

    def kneighbors(self, X: np.ndarray | None = None, n_neighbors: int | None = None,  # noqa: N803
                   return_distance: bool = True):
        """(distances, indices), each (q, k), of the k nearest fitted points (sorted by
        distance). ``X=None`` queries the fitted points, each without itself."""
        queries, itself = self._queries(X)
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        if k + itself > len(self._fit_X):
            raise ConfigError(f"KDT: {k} neighbours requested from {len(self._fit_X)} points")
        dist, idx = self._tree.query(queries, k=k + itself, p=self.p, workers=self.n_jobs)
        dist, idx = dist.reshape(len(queries), -1)[:, itself:], idx.reshape(len(queries), -1)[:, itself:]
        return (dist, idx) if return_distance else idx

    def radius_neighbors(self, X: np.ndarray | None = None, radius: float | None = None,  # noqa: N803
                         return_distance: bool = True):
        """Per query, the indices (and distances) of the fitted points within ``radius``,
        as object arrays of arrays sorted by distance."""
        queries, itself = self._queries(X)
        r = self.radius if radius is None else radius
        hits = self._tree.query_ball_point(queries, r, p=self.p, workers=self.n_jobs)
        dists, idxs = np.empty(len(queries), object), np.empty(len(queries), object)
        for i, (query, near) in enumerate(zip(queries, hits)):
            near = np.asarray([j for j in near if not (itself and j == i)], dtype=np.int64)
            d = np.linalg.norm(self._fit_X[near] - query, ord=self.p, axis=1) if len(near) else \
                np.empty(0)
            order = np.argsort(d, kind='stable')
            dists[i], idxs[i] = d[order], near[order]
        return (dists, idxs) if return_distance else idxs


class DynamicKDT(_kdtree.DynamicKDT):
    """:class:`elektronn2.utils.kdtree.DynamicKDT` with ELEKTRONN2's constructor and
    queries (``get_knn``, ``get_radius_nn``); the new ``knn``/``radius`` work too.

    Args:
        points: initial points (n, d), or None.
        k: default number of neighbours of :meth:`get_knn`.
        n_jobs: query threads (-1: all cores).
        rebuild_thresh: appended points searched by brute force before the tree is rebuilt.
        aniso_scale: per-dimension factors applied before distances are measured.
        rebuild_threshold: the new name of ``rebuild_thresh`` (wins when given).
    """

    def __init__(self, points: np.ndarray | None = None, k: int = 1, n_jobs: int = -1,
                 rebuild_thresh: int = 100, aniso_scale: Sequence[float] | None = None,
                 rebuild_threshold: int | None = None):
        if aniso_scale is not None and np.ndim(aniso_scale) == 2:
            aniso_scale = np.asarray(aniso_scale)[0]
        self.k = k
        super().__init__(points, rebuild_threshold or rebuild_thresh, aniso_scale, n_jobs)

    def get_knn(self, query_points: np.ndarray, k: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distances, indices, coordinates) of the ``k`` nearest points of each query.

        Shapes for q queries: (q, k), (q, k), (q, k, d); with k = 1 the k axis is dropped;
        a single query (d,) or (1, d) drops the q axis. Distances are float32.
        """
        k = self.k if k is None else k
        if k > len(self):
            raise DataError(f"DynamicKDT: {k} neighbours requested but only {len(self)} points "
                            f"are stored")
        queries = np.atleast_2d(np.asarray(query_points, dtype=np.float64))
        dist, idx = self.knn(queries, k)
        coords = self.points[idx]
        dist = dist.astype(np.float32)
        if k == 1:
            dist, idx, coords = dist[:, 0], idx[:, 0], coords[:, 0]
        if len(queries) == 1:
            dist, idx, coords = dist[0], idx[0], coords[0]
        return dist, idx, coords

    def get_radius_nn(self, query_points: np.ndarray, radius: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (distances, indices) of the points within ``radius``, nearest first
        (a single query (d,) gives one pair)."""
        return self.radius(query_points, radius)


# --- files ---------------------------------------------------------------------------------
def import_variable_from_file(file_path: str | os.PathLike, class_name: str) -> Any:
    """The top-level name ``class_name`` of the Python file ``file_path``, imported as the
    module of its file name (its directory stays on ``sys.path``, so that worker
    processes can unpickle instances of classes defined there)."""
    path = os.path.abspath(os.path.expanduser(os.fspath(file_path)))
    if not os.path.isfile(path):
        raise ConfigError(f"import_variable_from_file: {path!r} is not a file")
    directory, name = os.path.split(os.path.splitext(path)[0])
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = importlib.import_module(name)
    if os.path.realpath(getattr(module, '__file__', None) or '') != os.path.realpath(path):
        raise ConfigError(f"{path!r} cannot be imported as {name!r}: that module name is taken "
                          f"by {module}; rename the file")
    if not hasattr(module, class_name):
        raise ConfigError(f"{path!r} defines no {class_name!r}")
    return getattr(module, class_name)


def picklesave(data: Any, file_name: str | os.PathLike) -> None:
    """Pickle ``data`` (one object) to ``file_name``."""
    with open(os.path.expanduser(os.fspath(file_name)), 'wb') as f:
        pickle.dump(data, f, protocol=2)


#: What pickleload reads besides plain data: harmless builtins (never ``bytes(n)`` or
#: ``range``, which could make huge objects from a small file), defaultdict, and the
#: objects of this module's AccumulationArray and CircularBuffer.
_PICKLELOAD_POLICY = safe_pickle.Policy(
    DataError, "pickleload refuses to create it: only plain data (numbers, strings, "
               "containers, numpy arrays) is unpickled. If you trust the file, load it with "
               "pickle.load yourself.",
    {**{('builtins', n): getattr(builtins, n) for n in (
        'list', 'tuple', 'dict', 'set', 'frozenset', 'complex', 'slice', 'object', 'int',
        'float', 'str')},
     ('collections', 'defaultdict'): collections.defaultdict,
     ('copyreg', '_reconstructor'): safe_pickle.reconstructor,
     (__name__, 'AccumulationArray'): safe_pickle.built_class(AccumulationArray),
     (__name__, 'CircularBuffer'): safe_pickle.built_class(CircularBuffer)},
    max_ratio=None)


def pickleload(file_name: str | os.PathLike) -> Any:
    """The object(s) pickled in ``file_name`` (plain or gzip-compressed): one object, or
    a list when the file holds several. Python 2 pickles are read (latin1 strings).
    Nothing in the file is run (:mod:`.safe_pickle`): a file naming anything but plain
    data raises a DataError."""
    items = safe_pickle.load_all(file_name, _PICKLELOAD_POLICY)
    return items[0] if len(items) == 1 else items


def h5save(data: np.ndarray | Sequence[np.ndarray], file_name: str | os.PathLike,
           keys: str | Sequence[str] | None = None, compress: bool = True) -> None:
    """Write one array (dataset ``keys`` or 'data') or a list/tuple of arrays (datasets
    ``keys``, default '0', '1', ...) to a new HDF5 file; ``compress``: lzf."""
    import h5py
    compression = 'lzf' if compress else None
    if isinstance(data, (list, tuple)):
        names = [str(i) for i in range(len(data))] if keys is None else list(keys)
        if len(names) != len(data):
            raise ConfigError(f"h5save: {len(names)} keys for {len(data)} arrays")
    else:
        data, names = [data], ['data' if keys is None else keys]
    with h5py.File(os.path.expanduser(os.fspath(file_name)), 'w') as f:
        for name, array in zip(names, data):
            f.create_dataset(name, data=array, compression=compression)


def h5load(file_name: str | os.PathLike, keys: str | Sequence[str] | None = None
           ) -> np.ndarray | list[np.ndarray]:
    """Read datasets of an HDF5 file: ``keys`` (one name or a list; default: every
    top-level dataset). One dataset is returned as an array, several as a list."""
    import h5py
    path = os.path.expanduser(os.fspath(file_name))
    try:
        f = h5py.File(path, 'r')
    except OSError as err:
        raise DataError(f"Could not open HDF5 file {path!r}: {err}") from None
    with f:
        names = list(f.keys()) if keys is None else [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in names if k not in f]
        if missing:
            raise KeyError(f"{path} has no datasets {missing}; available: {list(f.keys())}")
        arrays = [f[k][()] for k in names]
    return arrays[0] if len(arrays) == 1 else arrays


def makeversiondir(path: str | os.PathLike, dir_name: str | None = None, cd: bool = False) -> str:
    """Create ``path/dir_name`` (mode 755), or if taken ``...-v1``, ``-v2``, ...; with
    ``cd`` change into it. Returns the directory created."""
    path = os.path.expanduser(os.fspath(path))
    if dir_name:
        path = os.path.join(path, dir_name)
    base, version = path, 0
    found = re.search(r'-v(\d+)$', path)
    if found:
        base, version = path[:found.start()], int(found.group(1))
    while True:
        try:
            os.makedirs(path, mode=0o755)
            break
        except FileExistsError:
            version += 1
            path = f"{base}-v{version}"
    if cd:
        os.chdir(path)
    return path


def pretty_string_ops(n: float) -> str:
    """A count of operations in words, e.g. '3.2 Giga Ops'."""
    for factor, suffix in ((1e12, 'Tera Ops'), (1e9, 'Giga Ops'), (1e6, 'Mega Ops')):
        if n >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n / 1e3:.1f} kilo Ops"


def pretty_string_time(t: float) -> str:
    """Elapsed seconds as 't=12s', 't=7m' (over 5 minutes) or 't=1.5h' (over 4000 s)."""
    if t > 4000:
        return f"t={t / 3600:.1f}h"
    if t > 300:
        return f"t={t / 60:.0f}m"
    return f"t={t:.0f}s"


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``a`` (n, d), sorted, and the index of each one's first
    occurrence; prints how many were removed."""
    unique, index = np.unique(np.asarray(a), axis=0, return_index=True)
    print(f"Removed {len(a) - len(index)} of {len(a)} (new {len(index)})")
    return unique, index


def as_list(var) -> list | None:
    """None stays None; lists and tuples become lists; anything else a one-item list."""
    if var is None:
        return None
    if isinstance(var, (list, tuple)):
        return list(var)
    return [var]


# --- timing ----------------------------------------------------------------------------------
class Timer(_timer.Timer):
    """:class:`elektronn2.utils.timer.Timer` with ELEKTRONN2's check points.

    ``check(name)`` records the time since the previous check (or the start) under
    ``name`` and prints it with the total unless ``silent`` / ``silent_all``;
    ``summary()`` lists the totals per name; ``plot()`` draws them. Named sections
    (``with timer.section(...)``) work as well.
    """

    def __init__(self, silent_all: bool = False, synchronize_cuda: bool = False):
        super().__init__(synchronize_cuda=synchronize_cuda)
        self.silent_all = silent_all
        self.last_t = time.perf_counter()
        self.total = 0.0
        self.checknames: list[str] = []
        self.checktimes: list[float] = []

    @property
    def accumulator(self) -> dict[str, float]:
        """Total seconds per check name."""
        return self.totals

    def check(self, name: str | None = None, silent: bool = False) -> float:
        """Seconds since the previous check, recorded under ``name`` (default '')."""
        self._sync()
        now = time.perf_counter()
        dt, self.last_t = now - self.last_t, now
        self.total += dt
        name = '' if name is None else str(name)
        self.checknames.append(name)
        self.checktimes.append(dt)
        self.add(name, dt)
        if not (silent or self.silent_all):
            print(f"{name}\tdt={dt:.3g} s,\tt={self.total:.3g} s")
        return dt

    def summary(self, silent: bool = False, print_func: Callable[[str], Any] | None = None) -> str | None:
        """Totals per name (shortest first) with their share; returned with ``silent``,
        else printed (by ``print_func`` if given)."""
        lines = [f"Total t: {self.total:.3g}s"]
        for name in sorted(self.totals, key=self.totals.get):
            dt = self.totals[name]
            lines.append(f"{name}:\t\t{dt:.3g}s\t{100 * dt / max(self.total, 1e-12):.3g}%")
        text = '\n'.join(lines) + '\n'
        if silent:
            return text
        (print_func or print)(text)
        return None

    def plot(self, accum: bool = False):
        """A pyplot bar chart of the check times (``accum``: totals per name); returns
        the figure."""
        import matplotlib.pyplot as plt
        names, times = ((list(self.totals), list(self.totals.values())) if accum
                        else (self.checknames, self.checktimes))
        fig, ax = plt.subplots()
        ax.bar(np.arange(len(times)), times)
        ax.set_xticks(np.arange(len(times)))
        ax.set_xticklabels(names)
        ax.set_ylabel('seconds')
        return fig
