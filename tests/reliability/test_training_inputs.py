"""Bad training inputs: each is reported by ``elektronn2-train`` (exit code 2,
``elektronn2-train: error:``, no traceback) with the culprit named, before a run
directory exists and without changing any file.

Most cases call ``cli.main`` in-process (fast); three run it in a subprocess.
"""
from __future__ import annotations

import gzip
import logging
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from elektronn2.data import batchcreator
from elektronn2.errors import DataError
from elektronn2.training import cli
from elektronn2.training.experiment import ExperimentConfig, build_data, build_model


class Expr(str):
    """A config value written as the expression itself (e.g. ``float('nan')``)."""

    def __repr__(self) -> str:
        return str(self)


NAN, INF = Expr("float('nan')"), Expr("float('inf')")
HARDCODED_INPUT = ("nm.Input((None, 1, 5, 37, 37), 'b,f,z,x,y', name='raw')",
                   "nm.Input((2, 1, 5, 37, 37), 'b,f,z,x,y', name='raw', hardcoded_shape=True)")


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch):
    """Importing a data_class file writes no __pycache__ next to it (guard); sys.path and
    the imported 'mydata' module do not outlive the test."""
    monkeypatch.setattr(sys, 'dont_write_bytecode', True)
    monkeypatch.setattr(sys, 'path', list(sys.path))
    yield
    sys.modules.pop('mydata', None)


def _optimiser(**params) -> dict:
    return {'optimiser_params': {'lr': 1e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 1e-5, **params}}


# (case id, settings for write_config, texts the message must contain)
SETTINGS_CASES = [
    ('schedule-unknown-variable', {'schedules': {'lrr': {'dec': 0.9}}},
     ["schedules['lrr']", "did you mean 'lr'", 'dropout', 'warp']),
    ('schedule-dec-string', {'schedules': {'lr': {'dec': 'x'}}}, ["schedules['lr']['dec']", "'x'"]),
    ('schedule-lindec-short', {'schedules': {'lr': {'lindec': [10]}}},
     ["schedules['lr']['lindec']", 'n_steps']),
    ('schedule-updates-int', {'schedules': {'lr': {'updates': 5}}},
     ["schedules['lr']['updates'] = 5", '(step, value)']),
    ('schedule-unknown-kind', {'schedules': {'lr': {'dce': 0.9}}},
     ["schedules['lr']", "'dce'", "'dec', 'updates', 'lindec'"]),
    ('schedule-negative-lr', {'schedules': {'lr': {'updates': [(10, -1.0)]}}},
     ["schedules['lr']", '-1.0', '> 0']),
    ('batch-args-typo', {'data_batch_args': {'warpp': 0.5}},
     ["data_batch_args", "'warpp'", "did you mean 'warp'"]),
    ('init-kwargs-typo', {'data_init_kwargs': {'d_pth': '/x', 'd_files': [], 'l_files': []}},
     ['data_init_kwargs', "'d_pth'", "did you mean 'd_path'"]),
    ('lr-string', _optimiser(lr='fast'), ["optimiser_params['lr']='fast'", '> 0']),
    ('lr-inf', _optimiser(lr=INF), ["optimiser_params['lr']=inf", 'finite']),
    ('lr-nan', _optimiser(lr=NAN), ["optimiser_params['lr']=nan"]),
    ('lr-negative', _optimiser(lr=-1), ["optimiser_params['lr']=-1", '> 0']),
    ('mom-2', _optimiser(mom=2), ["optimiser_params['mom']=2", '[0, 1)']),
    ('beta2-1.5', _optimiser(beta2=1.5), ["optimiser_params['beta2']=1.5", '[0, 1)']),
    ('wd-negative', _optimiser(wd=-1), ["optimiser_params['wd']=-1", '>= 0']),
    ('max-runtime-negative', {'max_runtime': -1}, ['max_runtime=-1', '> 0']),
    ('max-runtime-nan', {'max_runtime': NAN}, ['max_runtime=nan']),
    ('initial-prev-h-negative', {'initial_prev_h': -1.0}, ['initial_prev_h=-1.0', '>= 0']),
    ('prev-save-h-nan', {'prev_save_h': NAN}, ['prev_save_h=nan', '> 0']),
    ('background-processes-negative', {'background_processes': -3},
     ['background_processes=-3', '>= 0']),
    ('seed-negative', {'seed': -1}, ['seed=-1', '>= 0']),
    ('class-weights-negative', {'class_weights': [1.0, -1.0]}, ['class_weights=[1.0, -1.0]']),
    ('class-weights-nan', {'class_weights': [1.0, NAN]}, ['class_weights=[1.0, nan]']),
    ('monitor-batch-size-zero', {'monitor_batch_size': 0}, ['monitor_batch_size=0', '>= 1']),
    ('save-name-escapes', {'save_name': '../escape'}, ["save_name='../escape'"]),
    ('data-class-pair-too-short', {'data_class': ('mydata.py',)},
     ["data_class=('mydata.py',)", "('file.py', 'ClassName')"]),
    ('preview-export-class-string', {'preview_kwargs': {'export_class': '1', 'max_z_pred': 2}},
     ["preview_kwargs['export_class']='1'", '[1]']),
    ('preview-max-z-zero', {'preview_kwargs': {'export_class': [1], 'max_z_pred': 0}},
     ["preview_kwargs['max_z_pred']=0", '>= 1']),
    ('unknown-data-class', {'data_class': 'BatchCreatorImag'},
     ["'BatchCreatorImag'", "did you mean 'BatchCreatorImage'"]),
    ('data-class-function', {'data_class': 'ids2barriers'}, ["'ids2barriers' is not a data class"]),
    ('model-load-path-missing', {'model_load_path': '/nonexistent/model.mdl'},
     ['model_load_path', '/nonexistent/model.mdl']),
    ('model-load-args-typo', {'model_load_path': '/nonexistent/model.mdl',
                              'model_load_args': {'imposed_patch_sz': (5, 37, 37)}},
     ['model_load_args', "'imposed_patch_sz'", "did you mean 'imposed_patch_size'"]),
]


def _fails(capsys, guard, tmp_path: Path, config: Path, expected: list[str]) -> str:
    """In-process elektronn2-train CONFIG: exit 2 with a one-line error naming ``expected``,
    no run directory, no file under tmp_path changed."""
    with guard(tmp_path):
        code = cli.main([str(config), '--gpu', 'none'])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith('elektronn2-train: error:') and 'Traceback' not in err, err
    for text in expected:
        assert text in err, err
    assert not (tmp_path / 'runs').exists()
    return err


@pytest.mark.parametrize('settings, expected', [c[1:] for c in SETTINGS_CASES],
                         ids=[c[0] for c in SETTINGS_CASES])
def test_bad_setting(tmp_path, capsys, guard, write_config, settings, expected):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', **settings)
    _fails(capsys, guard, tmp_path, config, expected)


def _append(config: Path, text: str) -> Path:
    config.write_text(config.read_text() + text)
    return config


def test_create_model_raises(tmp_path, capsys, guard, write_config):
    config = _append(write_config(tmp_path / 'c.py', tmp_path / 'runs'),
                     "\ndef create_model():\n    raise KeyError('no_such_layer')\n")
    line = len(config.read_text().splitlines())
    _fails(capsys, guard, tmp_path, config,
           ['c.py', 'create_model() raised KeyError', f'line {line}', 'no_such_layer'])


def test_hardcoded_batch_size_must_divide_monitor_batch_size(tmp_path, capsys, guard,
                                                             write_config):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', monitor_batch_size=3)
    config.write_text(config.read_text().replace(*HARDCODED_INPUT))
    _fails(capsys, guard, tmp_path, config, ['monitor_batch_size=3', "'raw'", 'fixed batch size 2'])


def test_declared_batch_size_that_differs_only_warns(tmp_path, write_config, caplog):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs')
    config.write_text(config.read_text().replace('nm.Input((None,', 'nm.Input((4,'))
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        build_model(ExperimentConfig(config))
    assert "input 'raw' declares batch size 4; training uses batch_size=2" in caplog.text


@pytest.mark.parametrize('where', ['existing-file', 'under-a-file'])
def test_save_path_that_cannot_hold_runs(tmp_path, capsys, guard, write_config, where):
    blocker = tmp_path / 'runs.txt'
    blocker.write_text('a file\n')
    save_path = blocker if where == 'existing-file' else blocker / 'runs'
    config = write_config(tmp_path / 'c.py', save_path)
    _fails(capsys, guard, tmp_path, config, [str(save_path), 'is a file, not a directory'])


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write into read-only directories')
def test_save_path_in_read_only_directory(tmp_path, capsys, guard, write_config):
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o555)
    config = write_config(tmp_path / 'c.py', locked / 'runs')
    _fails(capsys, guard, tmp_path, config, [str(locked / 'runs'), 'not writable'])


def test_model_load_path_not_a_model(tmp_path, capsys, guard, write_config, bystander):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs',
                          model_load_path=str(bystander / 'model.mdl'))
    _fails(capsys, guard, tmp_path, config,
           ['model_load_path', 'model.mdl', 'not an elektronn2 model'])


@pytest.mark.parametrize('file, source, expected', [
    ('mydata.py', 'import nothing_here_\n', ['mydata.py', 'ModuleNotFoundError', 'nothing_here_']),
    ('mydata.py', 'class MyData(:\n', ['mydata.py', 'SyntaxError']),
    ('mydata.py', 'class MyDat:\n    pass\n',
     ['mydata.py', "defines no 'MyData'", "did you mean 'MyDat'"]),
    ('queue.py', 'class MyData:\n    pass\n', ['queue.py', "module name is taken", 'rename']),
], ids=['raises-on-import', 'syntax-error', 'class-missing', 'module-name-taken'])
def test_bad_data_class_file(tmp_path, capsys, guard, write_config, file, source, expected):
    (tmp_path / file).write_text(source)
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', data_class=(file, 'MyData'))
    _fails(capsys, guard, tmp_path, config, expected)


# --- data files ---------------------------------------------------------------------------
def _labels(shape=(8, 48, 48)) -> np.ndarray:
    labels = np.zeros(shape, np.int16)
    labels[..., ::7] = 1
    return labels


def _raw(shape=(8, 48, 48)) -> np.ndarray:
    return np.random.default_rng(0).random(shape, np.float32)


def _data_config(write_config, tmp_path: Path, raw=None, labels=None, **settings) -> Path:
    """A config training on one cube of tmp_path/vol.h5 ('raw' and 'lab')."""
    with h5py.File(tmp_path / 'vol.h5', 'w') as f:
        f['raw'] = _raw() if raw is None else raw
        f['lab'] = _labels() if labels is None else labels
    kwargs = dict(d_path=str(tmp_path), l_path=str(tmp_path), d_files=[('vol.h5', 'raw')],
                  l_files=[('vol.h5', 'lab')], aniso_factor=2)
    return write_config(tmp_path / 'c.py', tmp_path / 'runs', data_init_kwargs=kwargs,
                        preview_data_path=None, **settings)


def _with(array: np.ndarray, index, value) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


DATA_CASES = [
    ('string-volume', dict(raw=np.full((8, 48, 48), b'abc')),
     ['vol.h5:raw', 'dtype |S3', 'real numbers']),
    ('object-string-volume', dict(raw=np.full((8, 48, 48), 'abc', dtype=h5py.string_dtype())),
     ['vol.h5:raw', 'dtype object', 'real numbers']),
    ('complex-volume', dict(raw=_raw().astype(np.complex64)), ['vol.h5:raw', 'complex64']),
    ('nan-in-raw', dict(raw=_with(_raw(), (3, 10, 20), np.nan)),
     ['vol.h5:raw', 'nan', '(z,y,x) (3, 10, 20)']),
    ('inf-in-labels', dict(labels=_with(_labels().astype(np.float32), (2, 5, 6), np.inf)),
     ['vol.h5:lab', 'inf', '(z,y,x) (2, 5, 6)']),
    ('fractional-labels', dict(labels=_with(_labels().astype(np.float32), (1, 2, 3), 0.5)),
     ['vol.h5:lab', 'fractional class label 0.5', '(z,y,x) (1, 2, 3)']),
    ('volume-too-small', dict(raw=_raw((8, 20, 48)), labels=_labels((8, 20, 48))),
     ['vol.h5:raw', "axis 'y': input patch 37, image 20"]),
    ('2d-volume-for-3d-net', dict(raw=_raw((48, 48)), labels=_labels((48, 48))),
     ['vol.h5:raw', "axis 'z': input patch 5, image 1", '2-D']),
    ('labels-larger-than-image', dict(labels=_labels((8, 50, 48))), ['vol.h5:lab', 'vol.h5:raw']),
]


@pytest.mark.parametrize('arrays, expected', [c[1:] for c in DATA_CASES],
                         ids=[c[0] for c in DATA_CASES])
def test_bad_data_volume(tmp_path, capsys, guard, write_config, arrays, expected):
    config = _data_config(write_config, tmp_path, **arrays)
    _fails(capsys, guard, tmp_path, config, expected)


def test_nan_in_a_large_volume_is_found_in_the_patch(tmp_path, write_config, monkeypatch):
    """Volumes above SCAN_BYTES are not scanned on load; each patch is checked as cut."""
    config = _data_config(write_config, tmp_path, raw=np.full((8, 48, 48), np.nan, np.float32),
                          data_batch_args={'warp': 0.0})
    monkeypatch.setattr(batchcreator, 'SCAN_BYTES', 0)
    exp = ExperimentConfig(config)
    data = build_data(exp, build_model(exp))
    with pytest.raises(DataError, match=r"vol\.h5:raw holds nan at channel 0, \(z,y,x\) \(\d+, "):
        data.getbatch(1, warp=0.0)


@pytest.mark.parametrize('preview, expected', [
    (('vol.h5', 'nokey'), ["has no dataset 'nokey'", 'lab, nan, raw']),
    ('notes.txt', ['notes.txt', 'cannot be read as HDF5']),
    (('vol.h5', 'nan'), ['vol.h5', ':nan holds nan']),
], ids=['missing-key', 'not-hdf5', 'nan-volume'])
def test_bad_preview_volume(tmp_path, capsys, guard, write_config, preview, expected):
    config = _data_config(write_config, tmp_path)
    with h5py.File(tmp_path / 'vol.h5', 'a') as f:
        f['nan'] = np.full((4, 40, 40), np.nan, np.float32)
    (tmp_path / 'notes.txt').write_text('not hdf5\n')
    spec = (str(tmp_path / preview[0]), preview[1]) if isinstance(preview, tuple) \
        else str(tmp_path / preview)
    _append(config, f"preview_data_path = {spec!r}\n")
    _fails(capsys, guard, tmp_path, config, expected)


MNIST_MODEL = """
def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 28, 28), 'b,f,y,x', name='raw')
    probs = nm.Softmax(nm.Perceptron(inp, 10, flatten=True, activation_func='lin'))
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    return model
"""


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = {'u1': 0x08, 'f4': 0x0D}[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + b''.join(n.to_bytes(4, 'big') for n in array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(array.dtype.newbyteorder('>')).tobytes())


def test_fractional_mnist_labels(tmp_path, capsys, guard, write_config):
    for prefix in ('train', 't10k'):
        _write_idx(tmp_path / f'{prefix}-images-idx3-ubyte.gz', np.zeros((3, 28, 28), np.uint8))
        _write_idx(tmp_path / f'{prefix}-labels-idx1-ubyte.gz', np.array([0, 1.5, 2], np.float32))
    config = _append(write_config(tmp_path / 'c.py', tmp_path / 'runs', data_class='MNISTData',
                                  data_init_kwargs={'path': str(tmp_path)}, data_batch_args={},
                                  preview_data_path=None), MNIST_MODEL)
    _fails(capsys, guard, tmp_path, config,
           ['train-labels-idx1-ubyte.gz', 'float32', 'integers 0..9'])


# --- in a real subprocess: what a user sees -----------------------------------------------
@pytest.mark.parametrize('case', ['schedule', 'string-volume', 'create-model-raises'])
def test_subprocess_reports_cleanly(tmp_path, guard, write_config, train, case):
    if case == 'schedule':
        config = write_config(tmp_path / 'c.py', tmp_path / 'runs', schedules={'lrr': {'dec': 0.9}})
        expected = "schedules['lrr']"
    elif case == 'string-volume':
        config = _data_config(write_config, tmp_path, raw=np.full((8, 48, 48), b'abc'))
        expected = 'vol.h5:raw has dtype |S3'
    else:
        config = _append(write_config(tmp_path / 'c.py', tmp_path / 'runs'),
                         "\ndef create_model():\n    return 1 / 0\n")
        expected = 'create_model() raised ZeroDivisionError'
    with guard(tmp_path):
        result = train(config, '--gpu', 'none')
    assert result.returncode == 2, result.stderr
    assert 'elektronn2-train: error:' in result.stderr and expected in result.stderr, result.stderr
    assert 'Traceback' not in result.stderr + result.stdout
    assert not (tmp_path / 'runs').exists()
