"""Where blocks run: in this process, or on a dask.distributed cluster.

An executor has one method, ``map(fn, items, retries)``, yielding ``fn(item)`` for
every item as it completes (any order); a failing item is retried ``retries`` times
before its error propagates. elektronn2's own errors (:class:`~elektronn2.errors.Error`:
bad input, bad settings) are not retried: they would fail again. dask is imported only
by :class:`DaskExecutor` (``pip install 'elektronn2[distributed]'``).
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable, Iterator, Protocol

from ..errors import ConfigError, Error
from ..utils.optional import import_optional

logger = logging.getLogger('elektronn2')


class Executor(Protocol):
    """Runs ``fn`` on every item (module docstring)."""

    def map(self, fn: Callable, items: Iterable, retries: int = 2) -> Iterator:
        """``fn(item)`` for every item, as each completes (any order)."""


def check_counts(workers: int = 1, retries: int = 0) -> None:
    """Raise a ConfigError for fewer than one worker or negative retries."""
    if workers < 1:
        raise ConfigError(f"workers={workers} (--workers); it must be 1 or more")
    if retries < 0:
        raise ConfigError(f"retries={retries} (--retries); it must be 0 or more")


class SerialExecutor:
    """Runs items one after the other in this process."""

    def map(self, fn: Callable, items: Iterable, retries: int = 2) -> Iterator:
        check_counts(retries=retries)
        for item in items:
            for attempt in range(retries + 1):
                try:
                    result = fn(item)
                    break
                except Error:
                    raise
                except Exception as err:
                    if attempt == retries:
                        logger.error("%r failed %d times; giving up", item, retries + 1)
                        raise
                    logger.warning("%r failed (%s: %s); retrying", item, type(err).__name__, err)
            yield result


@dataclass(frozen=True)
class _Refused:
    """An :class:`~elektronn2.errors.Error` a task returned instead of raising (so that
    dask does not retry it)."""
    error: Error


def _run_task(fn: Callable, torch_threads: int | None, item):
    """``fn(item)`` in a worker, with ``torch_threads`` intra-op threads (None: as is)."""
    import torch
    if torch_threads and torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        return fn(item)
    except Error as err:
        return _Refused(err)


class DaskExecutor:
    """Runs items as tasks on a dask.distributed cluster.

    Each LocalCluster worker process runs one task at a time (one dask thread: tasks
    share process-global state such as torch's thread pool and neuromancer's current
    model) and gives it ``torch_threads`` torch threads.

    Args:
        scheduler: address of a running scheduler (``'tcp://host:8786'``) whose workers
            can import elektronn2 and see the input and output paths; None starts a
            LocalCluster of ``n_workers`` processes.
        n_workers: processes of the LocalCluster (1 or more).
        torch_threads: torch threads per LocalCluster task (default: cores / workers);
            the workers of a running scheduler keep their own setting.
    """

    def __init__(self, scheduler: str | None = None, n_workers: int = 2,
                 torch_threads: int | None = None):
        check_counts(workers=n_workers)
        self.scheduler = scheduler
        self.n_workers = int(n_workers)
        self.torch_threads = (None if scheduler else
                              torch_threads or max(1, (os.cpu_count() or 1) // self.n_workers))

    def _client(self):
        distributed = import_optional('distributed', 'dask[distributed]', extra='distributed',
                                      purpose='Distributed prediction')
        if self.scheduler:
            return distributed.Client(self.scheduler)
        return distributed.Client(_local_cluster(self.n_workers))

    def map(self, fn: Callable, items: Iterable, retries: int = 2) -> Iterator:
        distributed = import_optional('distributed', 'dask[distributed]', extra='distributed',
                                      purpose='Distributed prediction')
        check_counts(retries=retries)
        environ = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS etc. for its workers
        client = self._client()
        task = partial(_run_task, fn, self.torch_threads)
        try:
            logger.info("Dask cluster: %s", client)
            futures = {client.submit(task, item, retries=retries, pure=False): item
                       for item in items}
            for future in distributed.as_completed(futures):
                if future.status == 'error':
                    logger.error("%r failed %d times; giving up", futures[future], retries + 1)
                result = future.result()
                if isinstance(result, _Refused):
                    raise result.error
                yield result
        finally:
            cluster = None if self.scheduler else client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
            os.environ.clear()
            os.environ.update(environ)


@contextmanager
def dask_cluster(scheduler: str | None = None, n_workers: int = 2) -> Iterator[DaskExecutor]:
    """A :class:`DaskExecutor` for several ``map`` calls on one cluster: the running
    scheduler ``scheduler``, or a LocalCluster of ``n_workers`` processes (one thread
    each) started once and closed at the end."""
    if scheduler:
        yield DaskExecutor(scheduler)
        return
    check_counts(workers=n_workers)
    environ = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS etc. for its workers
    cluster = _local_cluster(n_workers)
    try:
        yield DaskExecutor(cluster.scheduler_address)
    finally:
        cluster.close()
        os.environ.clear()
        os.environ.update(environ)


def _local_cluster(n_workers: int):
    """A dask LocalCluster of ``n_workers`` processes with one thread each (tasks share
    process-global state), quiet below warnings, without a dashboard."""
    distributed = import_optional('distributed', 'dask[distributed]', extra='distributed',
                                  purpose='Distributed prediction and segmentation')
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.WARNING)
