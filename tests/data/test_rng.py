"""ProcessRandom: worker processes draw different examples than the parent and each other."""
import multiprocessing
import os

import numpy as np

from elektronn2.data.rng import ProcessRandom


def _draw(random: ProcessRandom) -> tuple[int, float]:
    return os.getpid(), float(random.generator.random())


def test_worker_processes_get_their_own_streams():
    random = ProcessRandom(seed=3)
    with multiprocessing.get_context('fork').Pool(2) as pool:
        draws = pool.map(_draw, [random] * 6, chunksize=1)
    by_pid = {}
    for pid, value in draws:  # a copy sent to the same worker restarts the same stream
        assert by_pid.setdefault(pid, value) == value
    assert len(set(by_pid.values())) == len(by_pid)
    parent = random.generator.random()
    assert parent == np.random.default_rng(3).random() and parent not in by_pid.values()


def test_reseed_restarts_the_stream():
    random = ProcessRandom()
    random.reseed(5)
    first = random.generator.random()
    random.reseed(5)
    assert random.generator.random() == first
