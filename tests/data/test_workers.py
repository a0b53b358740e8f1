"""BackgroundBatches with real worker processes: order, seeds, restarts, errors, shutdown."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from elektronn2.data.workers import BackgroundBatches, WorkerError
from elektronn2.errors import DataError

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'),
                                reason="inspects processes through /proc")


class RandomData:
    """Batches from numpy's, random's and torch's global generators and from an own
    generator (reseeded by the workers), plus the source."""

    def __init__(self, offset=0.0):
        self.offset = offset
        self.rng = np.random.default_rng(0)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)

    def getbatch(self, batch_size, source='train', scale=1.0):
        images = np.random.rand(batch_size, 1, 4, 4).astype(np.float32) * scale + self.offset
        labels = np.array([random.randrange(1000) for _ in range(batch_size)], np.int64)
        return (images, labels, torch.rand(batch_size).numpy(), self.rng.random(batch_size),
                source)


class FailingData(RandomData):
    """Raises in its ``fail_at``-th call of getbatch."""

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0

    def getbatch(self, batch_size, source='train'):
        self.calls += 1
        if self.calls == self.fail_at:
            raise ValueError(f"unreadable patch in call {self.calls}")
        return super().getbatch(batch_size, source)


class SlowData(RandomData):
    """Every call after the first ``fast_calls`` sleeps ``seconds``."""

    def __init__(self, seconds, fast_calls=0):
        super().__init__()
        self.seconds = seconds
        self.fast_calls = fast_calls
        self.calls = 0

    def getbatch(self, batch_size, source='train'):
        self.calls += 1
        if self.calls > self.fast_calls:
            time.sleep(self.seconds)
        return super().getbatch(batch_size, source)


def _proc_stat(pid):
    """(state, parent pid) from /proc, or None once the process is gone (and reaped)."""
    try:
        text = Path(f'/proc/{pid}/stat').read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text[text.rindex(')') + 2:].split()[:2]
    return state, int(ppid)


def _children(pid):
    children = set()
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pid:
                children.add(int(entry.name))
    return children


def _descendants(pid):
    found, todo = set(), [pid]
    while todo:
        children = _children(todo.pop())
        found |= children
        todo.extend(children)
    return found


def _batch_workers(pid):
    """Processes forked by the forkserver of process ``pid`` (not the server itself)."""
    workers = set()
    for process in _descendants(pid):
        try:
            forked = b'forkserver' in Path(f'/proc/{process}/cmdline').read_bytes()
        except FileNotFoundError:
            continue
        if forked and _proc_stat(process)[1] != pid:
            workers.add(process)
    return workers


def _segments_of(pid, since=0.0):
    """Shared-memory segments of worker ``pid`` created at ``since`` or later (an earlier
    process with the same id may have left some, e.g. one killed by SIGKILL)."""
    return sorted(p for p in Path('/dev/shm').glob(f'e2b_{pid}_*')
                  if p.stat().st_mtime >= since)


def _wait_until_gone(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_proc_stat(p) is not None for p in pids):
        time.sleep(0.05)
    return {p: _proc_stat(p) for p in pids if _proc_stat(p) is not None}


def _equal(batch_a, batch_b):
    return all(np.array_equal(a, b) for a, b in zip(batch_a, batch_b))


def test_batch_i_depends_only_on_seed_and_i():
    with BackgroundBatches(RandomData(), 3, n_workers=2, source='valid', seed=7) as batches:
        first = [next(batches) for _ in range(6)]
        assert batches.position == 6
    with BackgroundBatches(RandomData(), 3, n_workers=2, source='valid', seed=7) as batches:
        second = [batches.next() for _ in range(6)]
    assert all(_equal(a, b) for a, b in zip(first, second))
    assert first[0][4] == 'valid' and first[0][0].shape == (3, 1, 4, 4)
    assert first[0][1].dtype == np.int64
    for item in range(4):       # every generator (numpy, random, torch, reseed) differs per batch
        assert not np.array_equal(first[0][item], first[1][item])
    # the same sequence with any number of workers, and from any start (a resumed run)
    synchronous = BackgroundBatches(RandomData(), 3, n_workers=0, source='valid', seed=7)
    assert all(_equal(synchronous.next(), batch) for batch in first)
    with BackgroundBatches(RandomData(), 3, n_workers=3, source='valid', seed=7, start=2) as late:
        assert all(_equal(late.next(), batch) for batch in first[2:])
    other_seed = BackgroundBatches(RandomData(), 3, n_workers=0, source='valid', seed=8)
    assert not _equal(other_seed.next(), first[0])


def test_synchronous_mode_keeps_the_callers_random_state_and_raises_directly():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    batches = BackgroundBatches(RandomData(), 2, n_workers=0, seed=1)
    batches.next()
    assert np.random.rand() == expected
    failing = BackgroundBatches(FailingData(fail_at=1), 2, n_workers=0)
    with pytest.raises(ValueError, match='unreadable patch in call 1'):
        failing.next()


def test_restart_picks_up_changed_data_and_batch_kwargs():
    data = RandomData(offset=0.0)
    with BackgroundBatches(data, 4, n_workers=1, seed=3) as batches:
        before = batches.next()[0]
        assert before.max() < 1
        data.offset = 100.0             # as a user would from the training shell
        assert batches.next()[0].max() < 1      # the worker still has its old copy
        batches.restart()
        after = batches.next()[0]
        assert batches.restart_count == 1
        assert after.min() >= 100 and not np.array_equal(after - 100, before)
        batches.restart(batch_kwargs={'scale': 0.0})
        assert np.all(batches.next()[0] == 100.0)


def test_worker_exception_arrives_with_the_remote_traceback():
    with BackgroundBatches(FailingData(fail_at=2), 2, n_workers=1) as batches:
        batches.next()                  # call 1 succeeds and is delivered first
        with pytest.raises(WorkerError, match='unreadable patch in call 2') as caught:
            batches.next()
        assert isinstance(caught.value, DataError)
        remote = caught.value.remote_traceback
        assert 'test_workers.py' in remote and 'in getbatch' in remote
        assert 'raise ValueError' in remote and remote in str(caught.value)
        with pytest.raises(DataError, match='restart'):
            batches.next()
        batches.restart()               # a fresh copy of the data object works again
        assert batches.next()[0].shape == (2, 1, 4, 4)


def test_killed_worker_is_reported():
    existing = _batch_workers(os.getpid())
    started = time.time() - 1
    with BackgroundBatches(RandomData(), 2, n_workers=1) as batches:
        batches.next()
        (worker,) = _batch_workers(os.getpid()) - existing
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(WorkerError, match='killed by SIGKILL'):
            for _ in range(batches.prefetch + 2):   # batches sent before still arrive
                batches.next()
    assert not _segments_of(worker, started)    # its segments are unlinked, announced or not


def test_ctrl_c_does_not_reach_the_workers():
    existing = _batch_workers(os.getpid())
    with BackgroundBatches(RandomData(), 2, n_workers=1) as batches:
        batches.next()
        (worker,) = _batch_workers(os.getpid()) - existing
        os.kill(worker, signal.SIGINT)          # what Ctrl+C sends to the process group
        for _ in range(batches.prefetch + 2):
            batches.next()
        assert _proc_stat(worker)[0] != 'Z'


def test_close_reaps_workers_and_frees_shared_memory():
    existing = _batch_workers(os.getpid())
    started = time.time() - 1       # /dev/shm's clock granularity
    batches = BackgroundBatches(RandomData(), 2, n_workers=2)
    batches.next()
    batches.next()
    workers = _batch_workers(os.getpid()) - existing
    assert len(workers) == 2 and all(_segments_of(w) for w in workers)
    batches.close()
    assert all(_proc_stat(w) is None for w in workers)     # gone and reaped: no zombie
    assert not any(_segments_of(w, started) for w in workers)
    with pytest.raises(DataError, match='closed'):
        batches.next()


def test_killing_the_parent_leaves_no_process_behind():
    started = time.time() - 1
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_workers import SlowData\n"
        "from elektronn2.data.workers import BackgroundBatches\n"
        "batches = BackgroundBatches(SlowData(600, fast_calls=1), 2, n_workers=2)\n"
        "batches.next(); batches.next()\n"       # both workers run, then sleep in getbatch
        "print('ready', flush=True)\n"
        "import time; time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout.readline().strip() == 'ready'
        descendants = _descendants(parent.pid)   # forkserver, workers, resource tracker
        workers = _batch_workers(parent.pid)
        assert len(workers) == 2 and len(descendants) >= 3
    finally:
        parent.kill()
        parent.wait()
    assert _wait_until_gone(descendants, 10.0) == {}
    assert not any(_segments_of(w, started) for w in workers)


def test_unpicklable_data_is_rejected_before_starting_workers():
    data = RandomData()
    data.transform = lambda x: x
    with pytest.raises(DataError, match='do not pickle'):
        BackgroundBatches(data, 2, n_workers=1)


def test_wait_fraction_tells_whether_training_waits_for_data():
    with BackgroundBatches(SlowData(0.2), 2, n_workers=1) as batches:
        for _ in range(3):
            batches.next()                          # the consumer does nothing: it waits
        assert batches.stats.n_batches == 3 and batches.stats.wait_fraction > 0.7
        time.sleep(0.6)                             # let the worker fill its slots
        batches.reset_stats()
        for _ in range(3):
            batches.next()
            time.sleep(0.3)                         # a "training step" slower than the data
        stats = batches.stats
        assert stats.n_batches == 3 and stats.total_seconds > 0.5
        assert stats.wait_fraction < 0.3
