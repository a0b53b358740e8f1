"""A random generator that gives every (forked) worker process its own stream."""
from __future__ import annotations

import os

import numpy as np


class ProcessRandom:
    """A numpy Generator, re-seeded when first used in another process.

    Batch creators are copied into worker processes (forked or unpickled); without
    re-seeding, every worker would draw the same examples. With a ``seed``, a
    worker's stream is seeded by ``(seed, pid)``; without, by fresh OS entropy.
    """

    def __init__(self, seed: int | None = None):
        self.reseed(seed)

    def reseed(self, seed: int | None = None) -> None:
        """Start a new stream from ``seed`` (None: fresh entropy) in this process."""
        self.seed = seed
        self._generator = np.random.default_rng(seed)
        self._pid = os.getpid()

    @property
    def generator(self) -> np.random.Generator:
        if self._pid != os.getpid():
            self._generator = np.random.default_rng(
                None if self.seed is None else [self.seed, os.getpid()])
            self._pid = os.getpid()
        return self._generator
