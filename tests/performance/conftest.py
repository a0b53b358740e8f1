"""Fixtures for the execution-settings tests: elektronn2.config is restored after each
test, and torch computes in one thread.

These tests check results, not speed. With more torch threads than free cores (another
process busy on one of two cores), every small operation waits at OpenMP barriers for a
descheduled thread: the bf16 convergence tests took 130 s with 2 threads instead of 4 s
with one (benchmarks/RESULTS.md).
"""
from dataclasses import fields

import pytest
import torch

from elektronn2.config import config


@pytest.fixture(autouse=True)
def restore_config():
    saved = {f.name: getattr(config, f.name) for f in fields(config)}
    yield config
    for key, value in saved.items():
        setattr(config, key, value)


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
