"""ELEKTRONN2's ``elektronn2.training.parallelisation``: numpy arrays made in background
processes and handed over in shared memory.

* :class:`BackgroundProc`: ``n_proc`` reusable processes call the same ``target`` again
  and again; :meth:`BackgroundProc.get` returns the next result (round robin).
* :class:`SharedQ`: a FIFO of one-off processes, each writing into arrays given to it.
* :class:`Proc`, :class:`SharedMem`: the building blocks (a process serving repeated
  requests; ``multiprocessing.Array`` <-> numpy).

Processes are forked, so ``target`` may be any callable (also a lambda); a forked process
starts with its parent's random state, so each :class:`Proc` reseeds numpy's global
generator from fresh entropy when it starts. For training batches from a data object,
the package's own mechanism is :class:`elektronn2.data.workers.BackgroundBatches`
(reproducible seeding, workers that die with the trainer).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections import deque
from typing import Callable, Sequence

import numpy as np

from ..errors import DataError, TrainingError

logger = logging.getLogger('elektronn2')

__all__ = ['TimeoutError', 'SharedMem', 'Proc', 'BackgroundProc', 'SharedQ']


class TimeoutError(TrainingError):  # (ELEKTRONN2's name; a RuntimeError)
    """No background result arrived within the timeout."""


def _raw(mp_array):
    """The ctypes array of a ``multiprocessing.Array`` (with or without its lock)."""
    return mp_array.get_obj() if hasattr(mp_array, 'get_obj') else mp_array


class SharedMem:
    """``multiprocessing.Array`` <-> numpy: arrays that processes share without copies."""

    profile = False

    @staticmethod
    def shm2ndarray(mp_array, shape: Sequence[int] | None = None) -> np.ndarray:
        """A numpy view of ``mp_array`` (flat, or of ``shape``): writes go to shared memory."""
        array = np.ctypeslib.as_array(_raw(mp_array))
        return array if shape is None else array.reshape(shape)

    @staticmethod
    def ndarray2shm(np_array: np.ndarray, lock: bool = False):
        """A new flat ``multiprocessing.Array`` holding a copy of ``np_array``."""
        np_array = np.asarray(np_array)
        shared = mp.Array(np.ctypeslib.as_ctypes_type(np_array.dtype), np_array.size, lock=lock)
        SharedMem.shm2ndarray(shared)[:] = np_array.ravel()
        return shared

    def puthandle(self, dtype, shape: Sequence[int], data: np.ndarray | None = None,
                  lock: bool = False):
        """New shared memory for an array of ``dtype`` and ``shape`` (filled with ``data``
        if given); returns the flat ``multiprocessing.Array``."""
        start = time.perf_counter()
        try:
            c_type = np.ctypeslib.as_ctypes_type(np.dtype(dtype))
        except NotImplementedError:
            raise DataError(f"shared memory cannot hold dtype {np.dtype(dtype)}; use a numeric "
                            f"dtype") from None
        shared = mp.Array(c_type, int(np.prod(shape)), lock=lock)
        if data is not None:
            SharedMem.shm2ndarray(shared)[:] = np.asarray(data, dtype=dtype).ravel()
        if self.profile:
            logger.info("SharedMem: allocated and filled %s %s in %.3g ms", np.dtype(dtype),
                        tuple(shape), 1e3 * (time.perf_counter() - start))
        return shared


class Proc(mp.Process):
    """A reusable background process: whenever ``events['new']`` is set it runs
    ``target(*target_args, **target_kwargs)``, writes the result arrays into ``mp_arrays``
    (as ``shapes``) and sets ``events['ready']``."""

    def __init__(self, mp_arrays: Sequence, shapes: Sequence[Sequence[int]], events: dict,
                 target: Callable, target_args: tuple, target_kwargs: dict, profile: bool):
        super().__init__(daemon=True)
        self.mp_arrays, self.shapes, self.events = list(mp_arrays), list(shapes), events
        self.target, self.target_args, self.target_kwargs = target, target_args, target_kwargs
        self.profile = profile

    def run(self) -> None:
        np.random.seed()    # forked with the parent's state: draw a fresh one
        arrays = [SharedMem.shm2ndarray(a, s) for a, s in zip(self.mp_arrays, self.shapes)]
        while True:
            try:
                self.events['new'].wait()
                self.events['new'].clear()
                start = time.perf_counter()
                result = self.target(*self.target_args, **self.target_kwargs)
                if isinstance(result, np.ndarray):
                    result = [result]
                for array, value in zip(arrays, result):
                    array[...] = value
                self.events['ready'].set()
                if self.profile:
                    logger.info("Proc %s: target and copy took %.3g ms", self.pid,
                                1e3 * (time.perf_counter() - start))
            except KeyboardInterrupt:
                pass


class BackgroundProc(SharedMem):
    """Results of ``target(*target_args, **target_kwargs)`` made ahead by ``n_proc``
    reused processes, e.g. augmented batches::

        bg = BackgroundProc(data.getbatch, n_proc=2, target_args=(8,))
        x, y = bg.get()
        bg.shutdown()

    ``dtypes`` and ``shapes`` describe the arrays ``target`` returns (one array or a
    list); when omitted, ``target`` is called once here to find them out. Call
    :meth:`shutdown` when done.
    """

    def __init__(self, target: Callable, dtypes: Sequence | None = None,
                 shapes: Sequence[Sequence[int]] | None = None, n_proc: int = 1,
                 target_args: tuple = (), target_kwargs: dict = {}, profile: bool = False):
        target_kwargs = dict(target_kwargs or {})
        if dtypes is None or shapes is None:
            sample = target(*target_args, **target_kwargs)
            sample = [sample] if isinstance(sample, np.ndarray) else [np.asarray(s) for s in sample
                                                                      if s is not None]
            dtypes, shapes = [s.dtype for s in sample], [s.shape for s in sample]
        if n_proc < 1 or len(dtypes) != len(shapes):
            raise DataError(f"BackgroundProc needs n_proc >= 1 and one shape per dtype; got "
                            f"n_proc={n_proc}, {len(dtypes)} dtypes, {len(shapes)} shapes")
        self.target, self.n_proc, self.profile = target, n_proc, profile
        self.dtypes, self.shapes = list(dtypes), [tuple(s) for s in shapes]
        self.i = 0  # the process whose result get() returns next
        self.mp_arrays, self.events, self.procs = [], [], []
        for _ in range(n_proc):
            arrays = [self.puthandle(d, s) for d, s in zip(self.dtypes, self.shapes)]
            events = {'new': mp.Event(), 'ready': mp.Event()}
            proc = Proc(arrays, self.shapes, events, target, tuple(target_args), target_kwargs,
                        profile)
            proc.start()
            events['new'].set()
            self.mp_arrays.append(arrays)
            self.events.append(events)
            self.procs.append(proc)

    def get(self, timeout: float | bool = False) -> tuple[np.ndarray, ...]:
        """The next result (a tuple of arrays, copied out of shared memory); waits for
        it, at most ``timeout`` seconds if given (then :class:`TimeoutError`)."""
        k = self.i
        if not self.events[k]['ready'].wait(timeout if timeout else None):
            raise TimeoutError(f"background process {k} (pid {self.procs[k].pid}) made no "
                               f"result within {timeout} s")
        self.i = (self.i + 1) % self.n_proc
        self.events[k]['ready'].clear()
        result = tuple(self.shm2ndarray(a, s).copy() for a, s in zip(self.mp_arrays[k], self.shapes))
        self.events[k]['new'].set()
        return result

    def reset(self) -> None:
        """Ask every process for a result again (after an interrupted ``get``)."""
        for events in self.events:
            events['new'].set()

    def shutdown(self) -> None:
        """Stop the processes (call it when done; it frees their memory)."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(5)
        self.procs = []

    def __del__(self) -> None:
        if getattr(self, 'procs', None):
            self.shutdown()


class SharedQ(SharedMem):
    """A FIFO of background jobs that fill shared arrays.

    ``startproc(dtypes, shapes, target, ...)`` starts ``target(mp_arrays, shapes,
    *target_args, **target_kwargs)`` in a new process (it writes its results into the
    arrays, e.g. via :meth:`SharedMem.shm2ndarray`); ``get()`` waits for the oldest job
    and returns its arrays. With ``n_proc > 0``, ``get`` warns when fewer jobs are queued.
    """

    def __init__(self, n_proc: int = 0, profile: bool = False):
        self.data: deque = deque()
        self.len = 0
        self.n_proc, self.profile = n_proc, profile

    def startproc(self, dtypes: Sequence, shapes: Sequence[Sequence[int]], target: Callable,
                  target_args: tuple = (), target_kwargs: dict = {}) -> None:
        """Queue a job (see the class docstring); ``target_kwargs['data']``, if given,
        is also the arrays' initial content."""
        target_kwargs = dict(target_kwargs or {})
        initial = target_kwargs.get('data')
        arrays = [self.puthandle(d, s, initial) for d, s in zip(dtypes, shapes)]
        proc = mp.Process(target=target, args=(arrays, list(shapes)) + tuple(target_args),
                          kwargs=target_kwargs, daemon=True)
        proc.start()
        self.data.append((arrays, list(shapes), proc))
        self.len += 1

    def get(self) -> list[np.ndarray]:
        """The arrays of the oldest job, after it ended (views of the shared memory)."""
        if not self.data:
            raise DataError("SharedQ.get: no job queued; call startproc first")
        arrays, shapes, proc = self.data.popleft()
        self.len -= 1
        if self.n_proc - self.len > 0:
            logger.warning("SharedQ: start %d more jobs before get() to keep %d running",
                           self.n_proc - self.len, self.n_proc)
        proc.join()
        if proc.exitcode != 0:
            raise DataError(f"SharedQ job (pid {proc.pid}) failed with exit code {proc.exitcode}")
        return [self.shm2ndarray(a, s) for a, s in zip(arrays, shapes)]

    def __len__(self) -> int:
        return self.len
