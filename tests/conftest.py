"""Shared fixtures: a fresh model and fixed seeds per test, the real-data directory, and
the small training config and elektronn2-train runner of the trainer tests."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.data import ids2barriers


@pytest.fixture(autouse=True)
def fresh_model(request):
    """Every test builds into its own new, current model with fixed seeds."""
    torch.manual_seed(0)
    np.random.seed(0)
    return nm.model_manager.newmodel(request.node.name[:40])


@pytest.fixture(scope='session')
def data_dir() -> Path:
    """$ELEKTRONN2_DATA (../shared/data in CI); tests needing it skip when it is absent."""
    path = Path(os.environ.get('ELEKTRONN2_DATA',
                               Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))
    if not path.is_dir():
        pytest.skip(f"real data directory {path} not found (set ELEKTRONN2_DATA)")
    return path


MODEL_3D = '''
def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 5, 37, 37), 'b,f,z,x,y', name='raw')
    out = nm.Conv(inp, 4, (1, 4, 4), (1, 2, 2))
    out = nm.Conv(out, 8, (2, 3, 3))
    out = nm.Conv(out, 8, (2, 3, 3))
    out = nm.Conv(out, 2, (1, 1, 1), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, errors, probs])
    return model
'''


@pytest.fixture(scope='session')
def barrier_file(tmp_path_factory, data_dir) -> Path:
    """gala train raw and its boundary labels (ids2barriers) in one HDF5 file; a preview file."""
    out = tmp_path_factory.mktemp('gala') / 'gala_barriers.h5'
    with h5py.File(data_dir / 'em' / 'fib_gala_small.h5', 'r') as src, h5py.File(out, 'w') as dst:
        dst['raw'] = src['train/raw'][()]
        dst['barrier'] = ids2barriers(src['train/labels'][()])
        dst['raw_valid'] = src['test/raw'][()]
        dst['barrier_valid'] = ids2barriers(src['test/labels'][()])
    with h5py.File(out.parent / 'preview.h5', 'w') as f:
        f['raw'] = h5py.File(out, 'r')['raw_valid'][10:30, :64, :64]
    return out


@pytest.fixture(scope='session')
def write_config(barrier_file):
    """write_config(path, save_path, **settings) -> path of a config for the small
    anisotropic 3-D boundary net; ``settings`` override its values."""
    return lambda path, save_path, **settings: _write_config(path, barrier_file, save_path, **settings)


def _write_config(path: Path, barrier_file: Path, save_path: Path, **settings) -> Path:
    values = dict(
        save_path=str(save_path), save_name='run', data_class='BatchCreatorImage',
        data_init_kwargs=dict(d_path=str(barrier_file.parent), l_path=str(barrier_file.parent),
                              d_files=[(barrier_file.name, 'raw'), (barrier_file.name, 'raw_valid')],
                              l_files=[(barrier_file.name, 'barrier'), (barrier_file.name, 'barrier_valid')],
                              aniso_factor=2, valid_cubes=[1]),
        data_batch_args=dict(grey_augment_channels=[0], warp=0.5),
        preview_data_path=str(barrier_file.parent / 'preview.h5'),
        preview_kwargs={'export_class': [1], 'max_z_pred': 2}, initial_prev_h=0.0, prev_save_h=1.0,
        n_steps=40, max_runtime=600, history_freq=10, monitor_batch_size=2, param_save_it=20,
        optimiser='Adam', optimiser_params={'lr': 1e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 1e-5},
        batch_size=2, background_processes=1)
    values.update(settings)
    body = '\n'.join(f"{k} = {v!r}" for k, v in values.items())
    path.write_text(body + '\n' + textwrap.dedent(MODEL_3D))
    return path


@pytest.fixture(scope='session')
def train():
    """train(*args) runs elektronn2-train in a subprocess and returns the CompletedProcess."""
    return _train


def _train(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED='1'), **kwargs)


def train_command(*args) -> list[str]:
    return [sys.executable, '-m', 'elektronn2.training.cli', *map(str, args)]


@pytest.fixture(scope='session')
def train_cmd():
    """train_cmd(*args) -> the command line of elektronn2-train (for pexpect / Popen)."""
    return train_command


@pytest.fixture
def trainer_in_terminal(tmp_path, write_config, train_cmd):
    """trainer_in_terminal() -> pexpect child: elektronn2-train on the small boundary net
    (100000 steps, run directory tmp_path/runs/run) in a real pseudo-terminal; the session
    is logged to tmp_path/session.log."""
    import pexpect

    def start(timeout: float = 90):
        config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=100000,
                              history_freq=25, param_save_it=10000, preview_data_path=None)
        cmd = train_cmd(config, '--gpu', 'none')
        env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR='1', PYTHONUNBUFFERED='1')
        child = pexpect.spawn(cmd[0], cmd[1:], env=env, encoding='utf-8', timeout=timeout,
                              dimensions=(40, 200))
        child.logfile_read = open(tmp_path / 'session.log', 'w')
        return child
    return start


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI configures the 'elektronn2' logger; put it back after each test."""
    import logging
    log = logging.getLogger('elektronn2')
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved
