"""Seeding: a random generator that gives every (forked) worker process its own stream,
and the seeding of the global generators (numpy, random, torch) from a tuple of ints."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_of(*entropy: int) -> int:
    """A 64-bit seed from non-negative ints (the same ints, the same seed)."""
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def seed_global_generators(*entropy: int) -> None:
    """Seed numpy's global generator, :mod:`random` and torch's CPU generator from
    non-negative ints (``torch.manual_seed``, which also seeds GPU generators, costs
    ~100x more; batches are made on the CPU)."""
    words = np.random.SeedSequence(entropy).generate_state(8)
    np.random.seed(words[:4])
    random.seed(int.from_bytes(words[4:6].tobytes(), 'little'))
    torch.default_generator.manual_seed(int.from_bytes(words[6:8].tobytes(), 'little'))


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
