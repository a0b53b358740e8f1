"""ELEKTRONN2's trainer surface: ``Trainer(exp_config)``, its methods, the shell's ``sf``
and ``ip``, ``preview_kwargs`` and preview files of several cubes, previews that fail
without ending the run, and the original's file names in the run directory."""
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pexpect
import pytest

from elektronn2.errors import ConfigError
from elektronn2.training import checkpoint, cli, preview, rundir
from elektronn2.training.experiment import ExperimentConfig
from elektronn2.training.shell import TrainingShell
from elektronn2.training.trainer import Trainer

PROMPT = 'elektronn2 >>>'
FAST = dict(background_processes=0, history_freq=1000, param_save_it=1000)


@pytest.fixture(scope='module')
def two_cubes(barrier_file) -> Path:
    """A preview file holding two cubes of different sizes, as datasets 'a' and 'b'."""
    path = barrier_file.parent / 'two_cubes.h5'
    if not path.exists():
        with h5py.File(barrier_file, 'r') as src, h5py.File(path, 'w') as f:
            f['a'] = src['raw_valid'][10:30, :64, :64]
            f['b'] = src['raw_valid'][0:8, :48, :56]
    return path


def _image_size(path: Path) -> tuple[int, int]:
    return matplotlib.image.imread(path).shape[:2]


def _preview_size(n_z: int, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of a preview PNG of n_z slices of height x width pixels."""
    (fig_w, fig_h), _ = preview._figure_layout(n_z, height, width)
    return fig_h, fig_w


# --- 1. Trainer(exp_config) ------------------------------------------------------------------
def test_trainer_builds_everything_from_the_config(tmp_path, write_config):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=4, history_freq=2,
                          param_save_it=2, background_processes=0, preview_data_path=None)
    exp = ExperimentConfig(config)
    trainer = Trainer(exp)
    run = tmp_path / 'runs' / 'run'
    assert trainer.run_dir == run and trainer.exp_config is exp
    assert rundir.owner(run) == f"pid {os.getpid()} on {socket.gethostname()}"
    assert trainer.model.input_node.name == 'raw' and trainer.model.iterations == 0
    assert trainer.data.getbatch(1)[0].shape == (1, 1, 5, 37, 37)
    assert (run / 'config.py').read_text() == config.read_text()
    assert (run / 'Backup' / 'c.py').read_text() == config.read_text()
    assert (run / 'elektronn2-source.zip').stat().st_size > 0
    assert trainer.run() == 'n_steps'
    assert rundir.owner(run) is None   # released when the run ends
    assert trainer.model.iterations == 4


def test_elektronn2_script_trains_in_the_directory_its_config_made(tmp_path, write_config):
    """The ELEKTRONN2 way, in a real process: trainutils.ExperimentConfig makes the run
    directory; Trainer(exp_config) trains into it instead of making another."""
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=3,
                          preview_data_path=None, **FAST)
    script = tmp_path / 'train_script.py'
    script.write_text(textwrap.dedent('''
        import sys
        from elektronn2.training.trainer import Trainer
        from elektronn2.training.trainutils import ExperimentConfig
        exp_config = ExperimentConfig(sys.argv[1])
        trainer = Trainer(exp_config)
        print('run directory', trainer.run_dir)
        print('ended by', trainer.run())
    '''))
    result = subprocess.run([sys.executable, str(script), str(config)], capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / 'runs' / 'run'
    assert f"run directory {run}\nended by n_steps" in result.stdout
    assert sorted(p.name for p in (tmp_path / 'runs').iterdir()) == ['run']
    names = {p.name for p in run.iterdir()}
    assert {'0-c.py', '0-run.log', 'Backup', 'config.py', 'model-final.mdl',
            'run-FINAL.mdl', 'run-LAST.mdl'} <= names
    assert (run / 'Backup' / 'c.py').read_text() == config.read_text()


# --- 2. ELEKTRONN2's trainer methods ---------------------------------------------------------
@pytest.fixture
def trainer(tmp_path, write_config, two_cubes):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', preview_data_path=str(two_cubes),
                          preview_kwargs={'export_class': [1], 'max_z_pred': 3}, **FAST)
    trainer = Trainer(ExperimentConfig(config), interactive=False)
    yield trainer
    trainer.close()


def test_test_model_is_the_monitoring_evaluation(trainer):
    for source in ('valid', 'train'):
        loss, error = trainer.test_model(source)
        expected = trainer._evaluate(source)
        assert (loss, error) == (expected[f'{source}_loss'], expected[f'{source}_err'])
        assert np.isfinite(loss) and 0 <= error <= 1
    assert trainer.test_model() == trainer.test_model('valid')
    with pytest.raises(ConfigError, match="'test' must be 'train' or 'valid'"):
        trainer.test_model('test')


def test_test_model_without_validation_data(tmp_path, write_config, barrier_file, caplog):
    name = barrier_file.name
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', preview_data_path=None,
                          data_init_kwargs=dict(d_path=str(barrier_file.parent),
                                                l_path=str(barrier_file.parent),
                                                d_files=[(name, 'raw')], l_files=[(name, 'barrier')],
                                                aniso_factor=2), **FAST)
    trainer = Trainer(ExperimentConfig(config))
    try:
        logging.getLogger('elektronn2').propagate = True
        with caplog.at_level(logging.WARNING, 'elektronn2'):
            assert np.isnan(trainer.test_model('valid')).all()
        assert 'No validation cubes' in caplog.text
    finally:
        trainer.close()


def test_debug_getcnnbatch_draws_a_new_batch_and_its_picture(trainer):
    first = trainer.debug_getcnnbatch()
    picture = trainer.run_dir / 'Batch_test_image.png'
    assert first[0].shape == (2, 1, 5, 37, 37) and first[1].shape[:2] == (2, 1)
    assert _image_size(picture)[0] > 100
    second = trainer.debug_getcnnbatch()
    assert not np.array_equal(first[0], second[0])
    assert trainer.batches.position == 0 and trainer.batch is None   # training stream untouched


def test_preview_slice_writes_every_cube(trainer):
    paths = trainer.preview_slice(number=3, export_class=1, max_z_pred=2)
    assert [p.name for p in paths] == ['preview_3_cube0_class1.png', 'preview_3_cube1_class1.png']
    assert _image_size(paths[0]) == _preview_size(2, 64, 64)
    assert _image_size(paths[1]) == _preview_size(2, 48, 56)
    with pytest.raises(ConfigError, match='export_class'):
        trainer.preview_slice(export_class='everything')
    trainer.preview_data = None
    with pytest.raises(ConfigError, match='set preview_data_path'):
        trainer.preview_slice()


def test_preview_slice_from_traindata_and_predict_and_write(trainer):
    paths = trainer.preview_slice_from_traindata(cube_i=0, off=(2, 10, 20), sh=(4, 40, 50),
                                                 number=1, export_class=[1])
    assert [p.name for p in paths] == ['preview_1_train0_class1.png']
    assert _image_size(paths[0]) == _preview_size(4, 40, 50)
    with pytest.raises(ConfigError, match=r'cube_i=1: there are 1 training cubes'):
        trainer.preview_slice_from_traindata(cube_i=1)
    raw = trainer.preview_data[1][0]   # (z, y, x)
    paths = trainer.predict_and_write(trainer.model.prediction_node, raw, number=2,
                                      block_name='b', z_thick=3)
    assert [p.name for p in paths] == ['preview_2_b_class0.png', 'preview_2_b_class1.png']
    assert _image_size(paths[1]) == _preview_size(3, 48, 56)
    logits = trainer.model['conv3']   # not the designated prediction node: tiled, no MFP
    paths = trainer.predict_and_write(logits, raw[None, :5], export_class=0, z_thick=2)
    assert [p.name for p in paths] == ['preview_0_class0.png']


# --- 3. the shell: sf and ip ---------------------------------------------------------------
def test_sf_and_ip_in_a_terminal(tmp_path, trainer_in_terminal):
    child = trainer_in_terminal()
    run = tmp_path / 'runs' / 'run'
    try:
        child.expect(r'step +\d+/\d+ +loss')
        child.sendcontrol('c')
        child.expect(PROMPT)
        child.sendline('sf conv1')
        child.expect(f"wrote {run / 'filters_conv1.png'}")
        child.expect(PROMPT)
        child.sendline('sf')   # the first node with filters
        child.expect(f"wrote {run / 'filters_conv.png'}")
        child.expect(PROMPT)
        child.sendline('sf loss')
        child.expect("sf: 'loss' is not a node with convolution filters; nodes with filters: "
                     "conv, conv1, conv2, conv3")
        child.expect(PROMPT)
        child.sendline('ip')
        if importlib.util.find_spec('IPython') is None:
            child.expect(r'ip: IPython is not installed \(pip install ipython\)')
        else:
            colour = r'(?:\x1b\[[\d;]*m)*'
            child.expect(rf'In \[{colour}1{colour}\]')
            child.sendline('from_ipython = model.lr * 3')
            child.expect(rf'In \[{colour}2{colour}\]')
            child.sendline('exit')
            child.expect('Back in the training shell.')
            child.expect(PROMPT)
            child.sendline('print(from_ipython)')
            child.expect(r'0\.003')
        child.expect(PROMPT)
        child.sendline('kill')
        child.expect(pexpect.EOF)
    finally:
        child.close()
        child.logfile_read.close()
    assert child.exitstatus == 0, (tmp_path / 'session.log').read_text()[-3000:]
    for name in ('filters_conv1.png', 'filters_conv.png'):
        assert min(_image_size(run / name)) > 100
    assert (run / 'run-FINAL.mdl').exists()


def test_ip_over_the_socket_says_where_it_runs(trainer):
    output, action = TrainingShell(trainer).handle('ip')
    assert action is None and "only in the trainer's own terminal" in output


# --- 4. preview_kwargs and preview files of several cubes --------------------------------------
def test_elektronn2_preview_kwargs_and_cube_files(tmp_path, write_config, two_cubes):
    """neuro3d's preview_kwargs (with ELEKTRONN2's 'number') and a file of two cubes,
    through elektronn2-train."""
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=2,
                          preview_data_path=str(two_cubes),
                          preview_kwargs={'export_class': [1], 'max_z_pred': 3, 'number': 0}, **FAST)
    assert cli.main([str(config), '--gpu', 'none']) == 0
    previews = sorted((tmp_path / 'runs' / 'run' / 'previews').iterdir())
    assert [p.name for p in previews] == ['preview_step000000001_cube0_class1.png',
                                          'preview_step000000001_cube1_class1.png']
    assert _image_size(previews[0]) == _preview_size(3, 64, 64)
    assert _image_size(previews[1]) == _preview_size(3, 48, 56)


def test_load_preview_volume_reads_cube_lists(two_cubes):
    both = preview.load_preview_volume(str(two_cubes))
    assert [v.shape for v in both] == [(1, 20, 64, 64), (1, 8, 48, 56)]
    assert [v.shape for v in preview.load_preview_volume((str(two_cubes), ['b', 'a']))] == \
        [(1, 8, 48, 56), (1, 20, 64, 64)]
    assert [v.shape for v in preview.load_preview_volume((str(two_cubes), 'b'))] == [(1, 8, 48, 56)]


def test_preview_options_take_elektronn2_values():
    assert preview.preview_options({'export_class': 1, 'max_z_pred': 3, 'number': 7}) == \
        {'export_class': [1], 'max_z_pred': 3}
    assert preview.preview_options(None) == {'export_class': 'all', 'max_z_pred': 5}
    with pytest.raises(ConfigError, match=r"unknown keys \['z_pred'\]"):
        preview.preview_options({'z_pred': 3})


# --- 5. and 6. a failing preview, ELEKTRONN2's file names ---------------------------------------
def test_failing_preview_is_logged_and_the_run_ends_with_elektronn2_names(tmp_path, write_config,
                                                                          train):
    """Every preview runs over its time budget (prev_save_h of 0.36 ms): each is logged
    with the reason, training goes on to the end and saves its models under both names."""
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=4, param_save_it=2,
                          history_freq=2, prev_save_h=1e-7, background_processes=0)
    result = train(config, '--gpu', 'none')
    assert result.returncode == 0, result.stderr + result.stdout
    run = tmp_path / 'runs' / 'run'
    log = (run / 'train.log').read_text()
    assert log.count('not written (training continues): PreviewStopped: over its time budget') >= 2
    assert 'Training ends (n_steps) at step 4' in log
    assert os.path.samefile(run / 'run-FINAL.mdl', run / 'model-final.mdl')
    assert os.path.samefile(run / 'run-LAST.mdl', checkpoint.list_checkpoints(run)[-1] / 'model.mdl')
    assert checkpoint.list_checkpoints(run)[-1].name == 'step-000000004'
    assert (run / 'Backup' / 'c.py').read_text() == config.read_text()
    assert (run / 'config.py').read_text() == config.read_text()
    assert (run / 'elektronn2-source.zip').exists()


def test_last_model_follows_each_checkpoint(trainer):
    last = trainer.run_dir / 'run-LAST.mdl'
    for _ in range(2):
        trainer.step += 1
        path = trainer.save_checkpoint()
        assert os.path.samefile(last, path / 'model.mdl')
