"""Where blocks run: in this process, or on a dask.distributed cluster.

An executor has one method, ``map(fn, items, retries)``, yielding ``fn(item)`` for
every item as it completes (any order); a failing item is retried ``retries`` times
before its error propagates. dask is imported only by :class:`DaskExecutor`
(``pip install 'elektronn2[distributed]'``).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterable, Iterator

from ..utils.optional import import_optional

logger = logging.getLogger('elektronn2')


class SerialExecutor:
    """Runs items one after the other in this process."""
    #: torch threads per block task (None: leave torch's setting)
    torch_threads = None

    def map(self, fn: Callable, items: Iterable, retries: int = 2) -> Iterator:
        for item in items:
            for attempt in range(retries + 1):
                try:
                    result = fn(item)
                    break
                except Exception as err:
                    if attempt == retries:
                        logger.error("%r failed %d times; giving up", item, retries + 1)
                        raise
                    logger.warning("%r failed (%s: %s); retrying", item, type(err).__name__, err)
            yield result


class DaskExecutor:
    """Runs items as tasks on a dask.distributed cluster.

    Args:
        scheduler: address of a running scheduler (``'tcp://host:8786'``) whose workers
            can import elektronn2 and see the input and output paths; None starts a
            LocalCluster of ``n_workers`` processes.
        n_workers: processes of the LocalCluster.
        threads_per_worker: torch threads per LocalCluster worker (default: cores / workers).
    """

    def __init__(self, scheduler: str | None = None, n_workers: int = 2,
                 threads_per_worker: int | None = None):
        self.scheduler = scheduler
        self.n_workers = int(n_workers)
        self.torch_threads = (None if scheduler else
                              threads_per_worker or max(1, (os.cpu_count() or 1) // self.n_workers))

    def _client(self):
        distributed = import_optional('distributed', 'dask[distributed]', extra='distributed',
                                      purpose='Distributed prediction')
        if self.scheduler:
            return distributed.Client(self.scheduler)
        cluster = distributed.LocalCluster(n_workers=self.n_workers,
                                           threads_per_worker=self.torch_threads,
                                           processes=True, dashboard_address=None,
                                           silence_logs=logging.WARNING)
        return distributed.Client(cluster)

    def map(self, fn: Callable, items: Iterable, retries: int = 2) -> Iterator:
        distributed = import_optional('distributed', 'dask[distributed]', extra='distributed',
                                      purpose='Distributed prediction')
        environ = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS etc. for its workers
        client = self._client()
        try:
            logger.info("Dask cluster: %s", client)
            futures = {client.submit(fn, item, retries=retries, pure=False): item
                       for item in items}
            for future in distributed.as_completed(futures):
                if future.status == 'error':
                    logger.error("%r failed %d times; giving up", futures[future], retries + 1)
                yield future.result()
        finally:
            cluster = None if self.scheduler else client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
            os.environ.clear()
            os.environ.update(environ)
