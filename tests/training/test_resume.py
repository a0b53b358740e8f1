"""kill -9 at random moments, then --resume: the run continues where its checkpoint left it."""
import os
import signal
import subprocess
import time

import numpy as np

import elektronn2.neuromancer as nm
from elektronn2.training import checkpoint


def _history_steps(run):
    lines = (run / 'history.csv').read_text().splitlines()[1:]
    return [int(float(line.split(',')[0])) for line in lines]


def test_kill_9_and_resume_several_times(tmp_path, write_config, train_cmd, train):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=120, history_freq=5,
                          param_save_it=10, preview_data_path=None)
    run = tmp_path / 'runs' / 'run'
    rng = np.random.default_rng(0)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    resumed_from, last_name = [], None
    for attempt in range(3):
        args = ['--resume', run] if attempt else [config]
        proc = subprocess.Popen(train_cmd(*args, '--gpu', 'none'), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        # wait for at least one new checkpoint, then kill at a random moment
        before = len(checkpoint.list_checkpoints(run)) if run.exists() else 0
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            names = [c.name for c in checkpoint.list_checkpoints(run)] if run.exists() else []
            if names and (attempt == 0 or names[-1] != last_name) and len(names) >= min(before + 1, 3):
                break
            time.sleep(0.2)
        time.sleep(rng.uniform(0, 1.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        last_name = checkpoint.list_checkpoints(run)[-1].name
        resumed_from.append(int(last_name.split('-')[1]))
        for ckpt in checkpoint.list_checkpoints(run):  # every checkpoint loads
            state = checkpoint.load_state(ckpt)
            assert state['step'] == int(ckpt.name.split('-')[1])
            nm.modelload(ckpt / 'model.mdl')
    result = train('--resume', run, '--gpu', 'none')
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = (run / 'train.log').read_text()
    for step in resumed_from:
        assert f"Resumed {run} at step {step}" in log
    steps = _history_steps(run)
    assert steps == sorted(set(steps)), steps  # no duplicates, in order
    assert steps[-1] == 120
    gaps = np.diff([0] + steps)
    assert gaps.max() <= 10, steps  # at most one checkpoint interval missing
    final = nm.modelload(run / 'model-final.mdl')
    assert final.iterations == 120
