"""kill -9 at random moments, then --resume: the run ends with the parameters (bit for bit)
and monitoring values of the uninterrupted run with the same seed."""
import csv
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.training import checkpoint

SETTINGS = dict(history_freq=4, param_save_it=4, preview_data_path=None, max_runtime=3600,
                background_processes=1)
COMPARED = ('train_loss', 'train_err', 'valid_loss', 'valid_err', 'lr')


def _history(run) -> dict[int, dict]:
    with open(run / 'history.csv') as f:
        return {int(float(row['step'])): {k: row[k] for k in COMPARED} for row in csv.DictReader(f)}


def _params(run) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in nm.modelload(run / 'model-final.mdl').all_params().items()}


def _newest_step(run) -> int:
    found = checkpoint.list_checkpoints(run) if run.exists() else []
    return int(found[-1].name.split('-')[1]) if found else -1


def _kill_during_training(command, run, rng, seconds: float) -> bool:
    """Start ``command``, wait for a checkpoint newer than the one it started from, then
    SIGKILL it ``rng.uniform(0, seconds)`` later; False if it finished first."""
    start = _newest_step(run)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'), start_new_session=True)
    deadline = time.time() + 120
    while proc.poll() is None and _newest_step(run) <= start and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, seconds))
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def _interrupted_run_equals_uninterrupted(tmp_path, write_config, train, train_cmd,
                                          n_kills: int, n_steps: int) -> None:
    reference = write_config(tmp_path / 'ref.py', tmp_path / 'ref', n_steps=n_steps, **SETTINGS)
    result = train(reference, '--gpu', 'none')
    assert result.returncode == 0, result.stderr[-2000:]
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=n_steps, **SETTINGS)
    run = tmp_path / 'runs' / 'run'
    rng = np.random.default_rng(int(time.time()))
    kills = 0
    for attempt in range(n_kills):
        args = ['--resume', run] if attempt else [config]
        kills += _kill_during_training(train_cmd(*args, '--gpu', 'none'), run, rng, 0.8)
    assert kills >= n_kills // 2, f"only {kills} of {n_kills} runs were killed before the end"
    result = train('--resume', run, '--gpu', 'none')
    assert result.returncode == 0, result.stderr[-2000:]
    expected, got = _params(tmp_path / 'ref' / 'run'), _params(run)
    assert expected.keys() == got.keys()
    differing = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differing, f"after {kills} kills, parameters {differing} differ"
    assert _history(run) == _history(tmp_path / 'ref' / 'run')


def test_kill_twice_and_resume_equals_the_uninterrupted_run(tmp_path, write_config, train,
                                                            train_cmd):
    _interrupted_run_equals_uninterrupted(tmp_path, write_config, train, train_cmd,
                                          n_kills=2, n_steps=24)


@pytest.mark.slow
def test_kill_ten_times_and_resume_equals_the_uninterrupted_run(tmp_path, write_config, train,
                                                                train_cmd):
    _interrupted_run_equals_uninterrupted(tmp_path, write_config, train, train_cmd,
                                          n_kills=10, n_steps=80)
