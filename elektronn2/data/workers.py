"""Background batch creation: worker processes fill shared memory while the model trains.

:class:`BackgroundBatches` works with any data object that has a method
``getbatch(batch_size, source='train', **batch_kwargs)`` returning a tuple of numpy
arrays (other items, e.g. strings, are allowed and travel pickled).

Transfer: each worker owns ``prefetch`` slots of shared memory
(:mod:`multiprocessing.shared_memory`). It writes a finished batch into a free slot
and sends only a small description (slot, segment name, dtypes, shapes, offsets)
through its pipe; the main process copies the arrays out and hands the slot back.
A slot is reused for the following batches (grown when a batch does not fit).

Order and reproducibility: batch ``i`` is worker ``i % n_workers``'s, and before making
it the worker seeds numpy's global generator, :mod:`random`, torch's CPU generator and,
if the data object has a method ``reseed(seed: int)``, the object's own generator, from
``(seed, i)`` alone (:func:`make_batch`). The sequence of batches therefore depends
neither on timing nor on the number of workers, and a run that starts at batch ``i``
(``start=i``, e.g. a resumed training) gets exactly the batches an uninterrupted run
got from ``i`` on. ``n_workers=0`` (batches made synchronously in the main process,
with the main process's own generator states kept apart) gives the same sequence.
Randomness from anywhere else (e.g. a generator held by a data object without
``reseed``) is the same pickled state in every worker. Since ``reseed`` starts every
batch afresh, state a data object keeps from one batch to the next through it (e.g.
:class:`~elektronn2.data.mnist.MNISTData`'s epoch order) does not carry over: each
batch is drawn independently.

Workers are forked from multiprocessing's 'forkserver' process (which imports torch
and this module once, has no threads, and so forks safely and fast) and receive a
pickled copy of the data object: changes made later to the object in the main process
reach the workers with :meth:`BackgroundBatches.restart`. As with 'spawn', the data
object's class must be importable, and a script that starts workers must guard its
main code with ``if __name__ == '__main__':``. The forkserver's preload list is set to
this module.

Shutdown: a worker ends when its pipe to the main process closes, which happens on
``close()``/``restart()`` and also when the main process dies, even by SIGKILL: a
thread in the worker waits on the pipe, unlinks the worker's shared memory and ends
the process, also while the producing thread is busy in ``getbatch``. Workers ignore
SIGINT, so Ctrl+C (which pauses training) does not reach them. An exception in a
worker reaches the main process as a :class:`WorkerError` carrying the worker's
traceback, in the position of the batch that failed.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import random
import secrets
import signal
import threading
import time
import traceback
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import DataError
from .rng import seed_global_generators, seed_of

logger = logging.getLogger('elektronn2')

_ALIGNMENT = 64                 # bytes; start of every array in a slot
_STOP_TIMEOUT = 5.0             # seconds a worker gets to exit after its pipe closed
_SLOW_WORKER_WARNING = 60.0     # seconds of waiting for one batch before a warning


class WorkerError(DataError):
    """A background worker failed or died; ``remote_traceback`` is the worker's traceback."""

    def __init__(self, message: str, remote_traceback: str = ''):
        if remote_traceback:
            message = f"{message}\n\nTraceback in the worker process:\n{remote_traceback}"
        super().__init__(message)
        self.remote_traceback = remote_traceback


@dataclass(frozen=True)
class BatchStats:
    """Consumer-side timing: how long :meth:`BackgroundBatches.next` waited for data.

    ``total_seconds`` runs from the start of the first ``next()`` call to the end of
    the last, so ``wait_fraction`` is the fraction of step time spent waiting.
    """
    n_batches: int
    wait_seconds: float
    total_seconds: float

    @property
    def wait_fraction(self) -> float:
        return self.wait_seconds / self.total_seconds if self.total_seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------
# Messages from a worker to the main process (the main process answers with slot numbers)

@dataclass(frozen=True)
class _ArraySpec:
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int


@dataclass(frozen=True)
class _BatchReady:
    slot: int
    segment: str
    items: tuple        # _ArraySpec for arrays in the segment, other items as they are


@dataclass(frozen=True)
class _WorkerFailed:
    phase: str
    exception: str
    traceback: str


# ---------------------------------------------------------------------------------------
# Random state

@dataclass
class _RandomState:
    """States of the global generators that data objects draw from."""
    numpy: tuple
    python: tuple
    torch: torch.Tensor

    @classmethod
    def capture(cls) -> _RandomState:
        return cls(np.random.get_state(), random.getstate(), torch.get_rng_state())

    def restore(self) -> None:
        np.random.set_state(self.numpy)
        random.setstate(self.python)
        torch.set_rng_state(self.torch)


@dataclass(frozen=True)
class _Stream:
    """The batches one worker makes: indices ``first, first + step, ...`` of ``seed``."""
    seed: int
    first: int
    step: int


class BatchSource(Protocol):
    """What a training data object provides (``data_class`` of a config)."""

    def getbatch(self, batch_size: int = 1, source: str = 'train',
                 **batch_kwargs) -> tuple[np.ndarray, ...]:
        """(input, target, ...) numpy arrays for ``batch_size`` examples of ``source``."""


@runtime_checkable
class Reseedable(Protocol):
    """A data object with a generator of its own, seeded before each batch."""

    def reseed(self, seed: int) -> None:
        """Seed the object's own generator (called with a seed from the run's seed and the
        batch index)."""


def _seed(data: BatchSource, entropy: tuple[int, ...]) -> None:
    """Seed numpy's global generator, random, torch and ``data.reseed`` (where it exists)
    from ``entropy``."""
    seed_global_generators(*entropy)
    if isinstance(data, Reseedable):
        data.reseed(seed_of(*entropy, 1))


def make_batch(data: BatchSource, batch_size: int, source: str, batch_kwargs: dict,
               entropy: tuple[int, ...]) -> tuple:
    """``data.getbatch(batch_size, source, **batch_kwargs)`` with every generator seeded
    from ``entropy`` (a tuple of non-negative ints); the caller's generator states are
    left as they were. The same entropy gives the same batch, in any process."""
    caller_state = _RandomState.capture()
    try:
        return _seeded_batch(data, batch_size, source, batch_kwargs, entropy)
    finally:
        caller_state.restore()


def _seeded_batch(data: BatchSource, batch_size: int, source: str, batch_kwargs: dict,
                  entropy: tuple[int, ...]) -> tuple:
    """:func:`make_batch` without restoring the generators (for worker processes)."""
    _seed(data, entropy)
    return _as_tuple(data.getbatch(batch_size, source=source, **batch_kwargs))


def batch_entropy(seed: int, index: int) -> tuple[int, int, int]:
    """The entropy of training batch ``index`` of a stream seeded with ``seed``."""
    return (seed, 0, index)


def _as_tuple(batch: Any) -> tuple:
    if not isinstance(batch, (tuple, list)):
        raise DataError(f"getbatch returned a {type(batch).__name__}; background batches "
                        f"need a tuple of arrays, e.g. (data, target)")
    return tuple(batch)


# ---------------------------------------------------------------------------------------
# Worker process side

class _SlotWriter:
    """A worker's shared-memory slots; a slot is written again once the consumer frees it."""

    def __init__(self, n_slots: int):
        self.segments: list[SharedMemory | None] = [None] * n_slots
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(n_slots):
            self.free.put(slot)
        self.lock = threading.Lock()    # no segment is created after the final unlink

    def write(self, slot: int, batch: tuple) -> _BatchReady:
        offsets, size = [], 0
        for item in batch:
            if isinstance(item, np.ndarray) and not item.dtype.hasobject:
                offsets.append(size)
                size += -(-item.nbytes // _ALIGNMENT) * _ALIGNMENT
            else:
                offsets.append(None)
        segment = self.segments[slot]
        if segment is None or segment.size < size:
            with self.lock:
                if segment is not None:
                    segment.close()
                    segment.unlink()
                name = f'e2b_{os.getpid()}_{secrets.token_hex(4)}'
                segment = SharedMemory(name, create=True, size=max(size, 1))
                self.segments[slot] = segment
        items = []
        for item, offset in zip(batch, offsets):
            if offset is None:
                items.append(item)
            else:
                np.ndarray(item.shape, item.dtype, segment.buf, offset)[...] = item
                items.append(_ArraySpec(item.dtype, item.shape, offset))
        return _BatchReady(slot, segment.name, tuple(items))

    def unlink_all(self) -> None:
        """Remove all segment names (the mappings stay valid until the process ends)."""
        for segment in self.segments:
            if segment is not None:
                segment.unlink()


def _serve_slot_releases(conn: Connection, slots: _SlotWriter) -> None:
    """Receiver thread: pass freed slots on; end the process when the pipe closes.

    The pipe closes when the main process calls close() or restart(), or dies (even by
    SIGKILL), so this is how every worker ends, also while busy in getbatch.
    """
    try:
        while True:
            slots.free.put(conn.recv())
    except (EOFError, OSError):
        pass
    with slots.lock:
        slots.unlink_all()
        os._exit(0)


def _produce(conn: Connection, payload: bytes, stream: _Stream, slots: _SlotWriter) -> None:
    """Make and send this worker's batches; on an exception, send the traceback and return."""
    phase = 'unpickling the data object'
    try:
        data, batch_size, source, batch_kwargs = pickle.loads(payload)
        for index in itertools.count(stream.first, stream.step):
            phase = f'{type(data).__name__}.getbatch'
            batch = _seeded_batch(data, batch_size, source, batch_kwargs,
                                  batch_entropy(stream.seed, index))
            slot = slots.free.get()
            phase = 'sending the batch'
            conn.send(slots.write(slot, batch))
    except Exception as error:
        conn.send(_WorkerFailed(phase, f'{type(error).__name__}: {error}',
                                traceback.format_exc()))


def _worker_main(conn: Connection, payload: bytes, stream: _Stream, n_slots: int) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    slots = _SlotWriter(n_slots)
    threading.Thread(target=_serve_slot_releases, args=(conn, slots),
                     name='elektronn2-slot-releases', daemon=True).start()
    try:
        _produce(conn, payload, stream, slots)
    except OSError:     # the pipe broke: the main process is gone
        pass
    threading.Event().wait()    # keep the slots until the receiver thread ends the process


# ---------------------------------------------------------------------------------------
# Main process side

def _context() -> multiprocessing.context.BaseContext:
    """The 'forkserver' context; its server imports torch and this module once, and
    each worker is forked from it (fast, and safe since the server has no threads)."""
    context = multiprocessing.get_context('forkserver')
    context.set_forkserver_preload([__name__])
    return context


@contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start processes with SIGINT ignored, so a Ctrl+C during their start-up spares them."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is None):    # not main thread; set in C
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Worker:
    """The main process's handle of one worker: process, pipe and mapped slots."""

    def __init__(self, index: int, payload: bytes, stream: _Stream, n_slots: int):
        context = _context()
        self.index = index
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child_conn, payload, stream, n_slots),
            name=f'elektronn2-batches-{index}', daemon=True)
        self.process.start()
        child_conn.close()
        self.segments: dict[int, SharedMemory] = {}

    def wait_ready(self) -> None:
        """Block until a message (or the end of the pipe) is there; consumes nothing."""
        waited = 0.0
        while not self.conn.poll(_SLOW_WORKER_WARNING):
            waited += _SLOW_WORKER_WARNING
            logger.warning("waited %.0f s for a batch from background worker %d (pid %s)",
                           waited, self.index, self.process.pid)

    def read_batch(self) -> tuple:
        """Receive the next batch, copy it out of shared memory and free its slot."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            raise WorkerError(self._death_report()) from None
        if isinstance(message, _WorkerFailed):
            raise WorkerError(f"background worker {self.index} (pid {self.process.pid}) "
                              f"failed in {message.phase}: {message.exception}"
                              + _hint(message.phase), message.traceback)
        segment = self._segment(message.slot, message.segment)
        batch = tuple(np.ndarray(item.shape, item.dtype, segment.buf, item.offset).copy()
                      if isinstance(item, _ArraySpec) else item for item in message.items)
        try:
            self.conn.send(message.slot)
        except OSError:     # the worker died after sending: reported at its next batch
            pass
        return batch

    def _segment(self, slot: int, name: str) -> SharedMemory:
        segment = self.segments.get(slot)
        if segment is None or segment.name != name:
            if segment is not None:
                segment.close()
            segment = self.segments[slot] = SharedMemory(name)
        return segment

    def _death_report(self) -> str:
        self.process.join(_STOP_TIMEOUT)
        code = self.process.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code}")
        return (f"background worker {self.index} (pid {self.process.pid}) {how} unexpectedly "
                f"(out of memory? a crash in a C extension?). If it died at start-up and "
                f"you run a script, guard the script's main code with "
                f"`if __name__ == '__main__':` (workers import the main module). "
                f"Call restart() to start new workers.")

    def stop(self) -> None:
        """Close the pipe (the worker then unlinks its slots and exits) and reap it."""
        names = set(segment.name for segment in self.segments.values())
        while self.conn.poll(0):    # batches not read: their segments, in case it died
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(message, _BatchReady):
                names.add(message.segment)
        self.conn.close()
        self.process.join(_STOP_TIMEOUT)
        if self.process.is_alive():
            logger.warning("background worker %d (pid %s) did not exit; killing it",
                           self.index, self.process.pid)
            self.process.kill()
            self.process.join()
        for segment in self.segments.values():
            segment.close()
        self.segments.clear()
        if self.process.exitcode != 0:      # it died without unlinking its segments,
            for name in names | _named_for(self.process.pid):  # also ones not announced
                _unlink_segment(name)


def _named_for(pid: int | None) -> set[str]:
    """The shared-memory segments a worker of process id ``pid`` created (its names start
    with ``e2b_<pid>_``), where the system lists them (Linux: /dev/shm)."""
    shm = Path('/dev/shm')
    return {p.name for p in shm.glob(f'e2b_{pid}_*')} if pid and shm.is_dir() else set()


def _unlink_segment(name: str) -> None:
    try:
        segment = SharedMemory(name)
    except FileNotFoundError:
        return
    segment.close()
    segment.unlink()


def _hint(phase: str) -> str:
    if phase.startswith('unpickling'):
        return (". The data object's class must be importable in a fresh Python process "
                "(not defined in an interactive session or `python -c`).")
    return ''


def _stop_workers(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


class BackgroundBatches:
    """Batches from ``data.getbatch`` made ahead of time in ``n_workers`` processes.

    ``data``: object with ``getbatch(batch_size, source='train', **batch_kwargs)``
    returning a tuple of numpy arrays; workers receive a pickled copy.
    ``n_workers=0`` makes batches synchronously in the main process with ``data``
    itself (exceptions then propagate unchanged, handy for debugging).
    ``seed``: batch ``i`` depends only on ``seed`` and ``i`` (see the module docstring);
    ``start``: the index of the first batch (a resumed run passes the ``position`` it
    had reached). ``prefetch``: batches each worker keeps ready.

    Use as an iterator (``next(batches)`` or ``batches.next()``) and close it, or use
    it as a context manager. ``stats`` tells how long the consumer waited for data.
    """

    def __init__(self, data: BatchSource, batch_size: int, n_workers: int = 2, source: str = 'train',
                 batch_kwargs: dict | None = None, seed: int = 0, prefetch: int = 2,
                 start: int = 0):
        if n_workers < 0 or prefetch < 1 or seed < 0 or batch_size < 1 or start < 0:
            raise DataError(f"BackgroundBatches needs n_workers >= 0, prefetch >= 1, "
                            f"seed >= 0, batch_size >= 1 and start >= 0; got "
                            f"n_workers={n_workers}, prefetch={prefetch}, seed={seed}, "
                            f"batch_size={batch_size}, start={start}")
        self.data = data
        self.batch_size = batch_size
        self.n_workers = n_workers
        self.source = source
        self.batch_kwargs = dict(batch_kwargs or {})
        self.seed = seed
        self.prefetch = prefetch
        self.restart_count = 0
        self.position = start   # index of the next batch next() returns
        self.reset_stats()
        self._start()

    # -- life cycle -------------------------------------------------------------------
    def _start(self) -> None:
        payload = self._pickle_payload() if self.n_workers else b''
        self._first = self.position
        self._failure: str | None = None
        self._transfer_interrupted = False
        self._workers: list[_Worker] = []   # the finalizer stops whatever gets started
        self._shutdown = weakref.finalize(self, _stop_workers, self._workers)
        if self.n_workers == 0:
            return
        with _children_ignore_sigint():
            for index in range(self.n_workers):
                stream = _Stream(self.seed, self.position + index, self.n_workers)
                self._workers.append(_Worker(index, payload, stream, self.prefetch))
        logger.debug("started %d background batch workers (restart %d)",
                     self.n_workers, self.restart_count)

    def _pickle_payload(self) -> bytes:
        try:
            return pickle.dumps((self.data, self.batch_size, self.source, self.batch_kwargs),
                                protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise DataError(f"cannot send the data object ({type(self.data).__name__}) and "
                            f"batch_kwargs to background workers, they do not pickle: "
                            f"{error}. Make them picklable or use n_workers=0.") from error

    def restart(self, data: BatchSource | None = None, batch_kwargs: dict | None = None) -> None:
        """Stop the workers and start new ones with a fresh pickle of ``data``.

        Call it after changing the data object (e.g. its warping settings); pass
        ``data`` or ``batch_kwargs`` to replace them. Batches made before are dropped;
        the new workers continue at ``position``.
        """
        if data is not None:
            self.data = data
        if batch_kwargs is not None:
            self.batch_kwargs = dict(batch_kwargs)
        self._shutdown()
        self._failure = "the last restart() failed"     # cleared by a successful start
        self.restart_count += 1
        self._start()

    def close(self) -> None:
        """Stop and reap all workers and release their shared memory (idempotent)."""
        self._shutdown()
        self._failure = "BackgroundBatches was closed"

    def __enter__(self) -> BackgroundBatches:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- batches ----------------------------------------------------------------------
    def __iter__(self) -> BackgroundBatches:
        return self

    def __next__(self) -> tuple:
        return self.next()

    def next(self) -> tuple:
        """The next batch: a tuple of numpy arrays as returned by ``data.getbatch``."""
        if self._transfer_interrupted:
            logger.info("a batch transfer was interrupted (e.g. by Ctrl+C); restarting "
                        "the background workers")
            self.restart()
        if self._failure is not None:
            raise DataError(f"no batches: {self._failure}. Call restart() to start new "
                            f"background workers.")
        started = time.perf_counter()
        if self._first_request is None:
            self._first_request = started
        batch = self._make_batch() if self.n_workers == 0 else self._receive_batch()
        self._last_return = time.perf_counter()
        self._wait_seconds += self._last_return - started
        self._n_batches += 1
        self.position += 1
        return batch

    def _make_batch(self) -> tuple:
        return make_batch(self.data, self.batch_size, self.source, self.batch_kwargs,
                          batch_entropy(self.seed, self.position))

    def _receive_batch(self) -> tuple:
        worker = self._workers[(self.position - self._first) % self.n_workers]
        worker.wait_ready()
        self._transfer_interrupted = True   # cleared unless interrupted mid-transfer
        try:
            batch = worker.read_batch()
        except WorkerError as error:
            self._shutdown()
            self._transfer_interrupted = False
            self._failure = f"background worker {worker.index} failed ({str(error)[:200]})"
            raise
        self._transfer_interrupted = False
        return batch

    # -- statistics -------------------------------------------------------------------
    @property
    def stats(self) -> BatchStats:
        """Batches delivered, seconds waited in ``next()`` and seconds since the first."""
        total = (0.0 if self._first_request is None
                 else self._last_return - self._first_request)
        return BatchStats(self._n_batches, self._wait_seconds, total)

    def reset_stats(self) -> None:
        """Start measuring anew (e.g. after warm-up)."""
        self._n_batches = 0
        self._wait_seconds = 0.0
        self._first_request: float | None = None
        self._last_return = 0.0
