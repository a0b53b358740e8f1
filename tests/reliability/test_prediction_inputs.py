"""``elektronn2-predict`` refuses bad input clearly; its model cache and dask workers are
thread-safe.

Every bad-input case asserts exit status 2 with ``elektronn2-predict: error:`` and no
traceback on stderr, that the message names the culprit (file, key, flag, axis), and
that no file outside the output path changed (``guard``). A tiny untrained 3-D net
(field of view 5 x 5 x 5) keeps each case well under a second.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import safetensors.numpy
import torch
import zarr

import elektronn2.neuromancer as nm
from elektronn2.errors import ConfigError
from elektronn2.inference import Box, DaskExecutor, PredictorSpec, TilingPredictor
from elektronn2.inference.blockwise import predict_to_file
from elektronn2.inference.cli import main
from elektronn2.inference.predictors import cached_predictor, load_model

SHAPE = (12, 20, 20)  # z, y, x of the good input
BLOCK = ['--block-shape', '6', '10', '10']


def tiny_model(path: Path) -> Path:
    """A 3-D valid-convolution net: patch (5, 9, 9), fov 5 per axis, 2 classes."""
    nm.model_manager.newmodel('tiny')
    inp = nm.Input((None, 1, 5, 9, 9), 'b,f,z,y,x', name='raw')
    probs = nm.Softmax(nm.Conv(nm.Conv(inp, 3, 3), 2, 3, activation_func='lin'))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    return Path(model.save(path))


def nan_weights_copy(model_path: Path, path: Path) -> Path:
    """``model_path`` (a zip) as a model directory with one NaN weight (Model.save refuses)."""
    with zipfile.ZipFile(model_path) as archive:
        archive.extractall(path)
    params = safetensors.numpy.load_file(path / 'params.safetensors')
    next(iter(params.values())).flat[0] = np.nan
    safetensors.numpy.save_file(params, path / 'params.safetensors')
    return path


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> Path:
    """Model files and input volumes (good and bad) in one directory."""
    root = tmp_path_factory.mktemp('predict-inputs')
    model = tiny_model(root / 'tiny.mdl')
    nan_weights_copy(model, root / 'nan_weights.mdl')
    (root / 'garbage.mdl').write_bytes(b'not a zip archive')
    rng = np.random.default_rng(0)
    good = rng.random(SHAPE, dtype=np.float32)
    with h5py.File(root / 'raw.h5', 'w') as f:
        f['raw'] = good
        f['nan'] = f['inf'] = good
        f['nan'][3, 4, 5] = np.nan
        f['inf'][11, 19, 19] = -np.inf
        f['thin'] = good[:3]
        f['plane'] = good[0]
        f['text'] = np.full(SHAPE, b'ab')
        f['complex'] = good.astype(np.complex64)
        f['two_channels'] = np.stack([good, good])
    zarr.open_array(store=str(root / 'raw.zarr'), path='raw', mode='w', shape=SHAPE,
                    chunks=SHAPE, dtype='float32')[:] = good
    return root


def run_cli(capsys, files: Path, *args: str) -> tuple[int, str]:
    """``elektronn2-predict`` in this process: (exit status, stderr)."""
    argv = [str(files / a) if a.endswith(('.mdl', '.h5', '.zarr')) else a for a in args]
    try:
        code = main(argv + ['--quiet'])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err


def assert_refused(code: int, stderr: str, *culprits: str) -> None:
    assert code == 2, stderr
    assert 'elektronn2-predict: error:' in stderr and 'Traceback' not in stderr, stderr
    assert 'retrying' not in stderr, stderr  # bad input is not retried
    for culprit in culprits:
        assert culprit in stderr, f"{culprit!r} not in: {stderr}"


GOOD = ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'raw', *BLOCK]

# (case id, arguments, what the message must name); 'out.zarr' is the output
CASES = [
    ('nan-input', ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'nan', *BLOCK],
     ['raw.h5:nan', 'nan at voxel (3, 4, 5) (z,y,x)']),
    ('nan-input-hdf5-output', ['tiny.mdl', 'raw.h5', 'out.h5', '--key', 'nan', *BLOCK],
     ['raw.h5:nan', '(3, 4, 5)']),  # and no out.h5.partial is left (guard)
    ('inf-input', ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'inf', *BLOCK],
     ['raw.h5:inf', '-inf at voxel (11, 19, 19)']),
    ('smaller-than-fov', ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'thin', *BLOCK],
     ['raw.h5:thin', "axis 'z'", '(3, 20, 20)', 'at least 5']),
    ('smaller-than-fov-valid-only',
     ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'thin', '--valid-only', *BLOCK],
     ['raw.h5:thin', "axis 'z'", '(3, 20, 20)', 'at least 5']),
    ('2d-volume-into-3d-net', ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'plane', *BLOCK],
     ['raw.h5:plane', "axis 'z'", '2-D (y, x) volume', '(1, 20, 20)']),
    ('string-dtype', ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'text'], ['raw.h5:text', 'S2']),
    ('complex-dtype', ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'complex'],
     ['raw.h5:complex', 'complex64']),
    ('wrong-channel-count', ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'two_channels'],
     ['raw.h5:two_channels', '2 channel(s)', 'needs 1']),
    ('missing-key', ['tiny.mdl', 'raw.h5', 'out.zarr', '--key', 'nokey'],
     ["'nokey'", 'raw.h5', 'its datasets are']),
    ('missing-input', ['tiny.mdl', 'nothere.h5', 'out.zarr', '--key', 'raw'], ['nothere.h5']),
    ('garbage-model', ['garbage.mdl', 'raw.h5', 'out.zarr', '--key', 'raw'], ['garbage.mdl', 'model file']),
    ('nan-weights-model', ['nan_weights.mdl', 'raw.h5', 'out.zarr', '--key', 'raw'],
     ['nan_weights.mdl', 'not finite']),
    ('workers-zero', GOOD + ['--workers', '0'], ['--workers', '1 or more']),
    ('workers-negative', GOOD + ['--workers', '-3'], ['--workers', '1 or more']),
    ('retries-negative', GOOD + ['--retries', '-1'], ['--retries', '0 or more']),
    ('overlap-one', GOOD + ['--overlap', '1'], ['--overlap', '[0, 1)']),
    ('overlap-negative', GOOD + ['--overlap', '-0.1'], ['--overlap', '[0, 1)']),
    ('block-shape-zero', GOOD + ['--block-shape', '0', '64', '64'], ['--block-shape', '1 or more']),
    ('block-shape-negative', GOOD + ['--block-shape', '8', '-8', '8'],
     ['--block-shape', '1 or more']),
    ('block-shape-beyond-memory', GOOD + ['--block-shape', '4096', '4096', '4096'],
     ['--block-shape 4096 4096 4096', 'GiB of memory', 'available', 'try --block-shape']),
    ('output-dir-missing', ['tiny.mdl', 'raw.h5', 'nodir/out.zarr', '--key', 'raw'], ['nodir']),
    ('output-key-is-the-input',
     ['tiny.mdl', 'raw.zarr', 'raw.zarr', '--key', 'raw', '--output-key', 'raw', *BLOCK],
     ['raw.zarr:raw', 'not written by elektronn2-predict']),
]


@pytest.mark.parametrize('args, culprits', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused(files, capsys, guard, args, culprits):
    output = files / args[2]
    allowed = [] if args[2] == args[1] else [output]  # an input is never an allowed output
    with guard(files, *allowed):
        code, stderr = run_cli(capsys, files, *args)
    assert_refused(code, stderr, *culprits)
    shutil.rmtree(output, ignore_errors=True)  # the NaN cases started writing it


def test_suggested_block_shape_fits(files, capsys):
    code, stderr = run_cli(capsys, files, *GOOD[:5], '--block-shape', '4096', '4096', '4096')
    assert_refused(code, stderr, 'try --block-shape')
    suggested = re.search(r'try --block-shape (\d+) (\d+) (\d+)', stderr).groups()
    assert run_cli(capsys, files, *GOOD[:5], '--block-shape', *suggested)[0] == 0
    shutil.rmtree(files / 'out.zarr')


@pytest.mark.parametrize('kind', ['file', 'foreign-directory', 'hdf5'])
def test_output_where_something_else_is(files, capsys, guard, kind):
    """A file at a zarr path, a non-zarr directory, an existing HDF5 file: left as they are."""
    output = files / ('taken.h5' if kind == 'hdf5' else f'taken-{kind}.zarr')
    if kind == 'foreign-directory':
        output.mkdir()
        (output / 'notes.txt').write_text('precious\n')
    else:
        output.write_bytes(b'precious')
    with guard(files):  # not even the output may change
        code, stderr = run_cli(capsys, files, 'tiny.mdl', 'raw.h5', output.name, '--key', 'raw')
    assert_refused(code, stderr, output.name)


def test_resume_with_other_settings_leaves_output_identical(files, capsys, guard):
    output = files / 'resume.zarr'
    code, _ = run_cli(capsys, files, 'tiny.mdl', 'raw.h5', output.name, '--key', 'raw', *BLOCK)
    assert code == 0
    before = {p: p.read_bytes() for p in output.rglob('*') if p.is_file()}
    with guard(files):
        code, stderr = run_cli(capsys, files, 'tiny.mdl', 'raw.h5', output.name, '--key', 'raw',
                               *BLOCK, '--dtype', 'uint8')
    assert_refused(code, stderr, 'resume.zarr:probabilities', "differs in ['dtype']")
    assert {p: p.read_bytes() for p in output.rglob('*') if p.is_file()} == before


@pytest.mark.parametrize('args, culprits', [
    (['tiny.mdl', 'raw.h5', 'sub.zarr', '--key', 'nan', *BLOCK], ['raw.h5:nan', '(3, 4, 5)']),
    (['tiny.mdl', 'raw.h5', 'sub.zarr', '--key', 'raw', '--block-shape', '4096', '4096', '4096'],
     ['--block-shape 4096 4096 4096', 'available']),
], ids=['nan-input', 'block-shape-beyond-memory'])
def test_bad_input_refused_by_the_command(files, guard, args, culprits):
    """The real command, in a subprocess: no traceback, exit status 2."""
    output = files / 'sub.zarr'
    with guard(files, output):
        result = subprocess.run([sys.executable, '-m', 'elektronn2.inference.cli',
                                 *[str(files / a) if a.endswith(('.mdl', '.h5')) else a
                                   for a in args], '--quiet'],
                                cwd=files, capture_output=True, text=True, timeout=120)
    assert_refused(result.returncode, result.stderr, *culprits)
    shutil.rmtree(output, ignore_errors=True)


@pytest.mark.parametrize('settings, culprit', [
    ({'workers': 0}, 'workers=0'), ({'retries': -1}, 'retries=-1'),
    ({'block_shape': (0, 8, 8)}, 'block_shape=(0, 8, 8)'), ({'overlap': 1.0}, 'overlap=1.0'),
], ids=['workers', 'retries', 'block_shape', 'overlap'])
def test_library_refuses_bad_settings(files, guard, settings, culprit):
    with guard(files), pytest.raises(ConfigError, match=re.escape(culprit)):
        predict_to_file(files / 'tiny.mdl', files / 'raw.h5', files / 'lib.zarr', input_key='raw',
                        progress=False, **settings)


def test_threads_load_complete_models_and_share_one_predictor(files, tmp_path):
    """Threads asking at once each get a complete model; the cache builds one predictor."""
    model = shutil.copy(files / 'tiny.mdl', tmp_path / 'fresh.mdl')  # not cached yet
    spec = PredictorSpec(str(model), 'tiling')
    current = nm.model_manager.current
    reference = load_model(model)
    box = Box((0, 0, 0), (6, 10, 10))
    predictor = TilingPredictor(reference.prediction_node)
    raw = np.random.default_rng(1).random((1,) + predictor.input_box(box).shape, np.float32)
    expected = predictor.predict(raw, box)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that races would show
    try:
        with ThreadPoolExecutor(4) as pool:
            models = list(pool.map(lambda _: load_model(model), range(8)))
            predictors = list(pool.map(lambda _: cached_predictor(spec), range(8)))
    finally:
        sys.setswitchinterval(interval)
    assert nm.model_manager.current is current
    for loaded in models:
        assert list(loaded.nodes) == list(reference.nodes)
        np.testing.assert_array_equal(
            TilingPredictor(loaded.prediction_node).predict(raw, box), expected)
    assert all(p is predictors[0] for p in predictors)
    np.testing.assert_array_equal(predictors[0].predict(raw, box), expected)


def task_threads(_) -> tuple[int, int]:
    """(dask threads of this worker, torch threads of this task)."""
    from distributed import get_worker
    return get_worker().state.nthreads, torch.get_num_threads()


def test_dask_workers_run_one_task_at_a_time():
    pytest.importorskip('distributed')
    environ = dict(os.environ)
    results = list(DaskExecutor(n_workers=1, torch_threads=2).map(task_threads, range(3)))
    assert results == [(1, 2)] * 3
    assert dict(os.environ) == environ
