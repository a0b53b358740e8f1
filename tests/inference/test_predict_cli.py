"""elektronn2-predict and elektronn2-evaluate as real subprocesses on FIB-25."""
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr

PREDICT = [sys.executable, '-m', 'elektronn2.inference.cli']
EVALUATE = [sys.executable, '-c', 'import sys; from elektronn2.inference.cli import '
                                  'evaluate_main; sys.exit(evaluate_main())']


def run(command, *args, check=True):
    result = subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope='module')
def crop(fib25_raw, tmp_path_factory):
    """A FIB-25 sub-volume as HDF5 with resolution and offset attributes."""
    raw = fib25_raw[100:124, 50:110, 70:140]
    path = tmp_path_factory.mktemp('cli') / 'crop.h5'
    with h5py.File(path, 'w') as f:
        dataset = f.create_dataset('volumes/raw', data=raw, chunks=(8, 32, 32))
        dataset.attrs['resolution'] = [10, 10, 10]
        dataset.attrs['offset'] = [1000, 500, 700]
    return path, raw


def test_cli_zarr_output_equals_predict_dense(boundary_model, crop, dense_reference, tmp_path):
    path, raw = crop
    out = tmp_path / 'prob.zarr'
    result = run(PREDICT, boundary_model, path, out, '--key', 'volumes/raw',
                 '--block-shape', 12, 32, 32, '--quiet')
    assert 'MVx/s' in result.stdout and 'backend mfp' in result.stdout
    array = zarr.open_array(store=str(out), path='probabilities', mode='r')
    assert array.shape == (2,) + raw.shape and array.chunks == (2, 12, 32, 32)
    np.testing.assert_allclose(array[:], dense_reference(boundary_model, raw), rtol=1e-5, atol=2e-6)
    assert array.attrs['resolution'] == [10, 10, 10] and array.attrs['offset'] == [1000, 500, 700]
    assert array.attrs['complete'] is True and array.attrs['axes'] == ['c', 'z', 'y', 'x']
    again = run(PREDICT, boundary_model, path, out, '--key', 'volumes/raw',
                '--block-shape', 12, 32, 32, '--quiet')
    assert '0 of 12 blocks predicted (12 done before)' in again.stdout


def test_cli_hdf5_valid_uint8(boundary_model, crop, dense_reference, tmp_path):
    path, raw = crop
    out = tmp_path / 'prob.h5'
    run(PREDICT, boundary_model, path, out, '--key', 'volumes/raw', '--output-key', 'boundary',
        '--valid-only', '--dtype', 'uint8', '--mfp', 'off', '--block-shape', 20, 40, 40, '--quiet')
    valid = dense_reference(boundary_model, raw, pad_raw=False)
    with h5py.File(out) as f:
        data = f['boundary'][:]
        assert list(f['boundary'].attrs['offset']) == [1020, 540, 740]  # + border 2,4,4 voxels
    assert data.dtype == np.uint8 and data.shape == valid.shape
    assert np.abs(data / 255.0 - valid).max() <= 0.5 / 255 + 1e-5


def test_cli_reports_errors(boundary_model, crop, tmp_path):
    path, _ = crop
    result = run(PREDICT, boundary_model, path, tmp_path / 'x.zarr', check=False)
    assert result.returncode == 2 and 'needs a key; its datasets are: volumes/raw' in result.stderr
    result = run(PREDICT, boundary_model, path, tmp_path / 'x.tif', '--key', 'volumes/raw',
                 check=False)
    assert result.returncode == 2 and 'name it *.zarr' in result.stderr


def test_evaluate_cli_prints_metrics(fib25, tmp_path):
    with h5py.File(fib25) as f:
        gt = f['volumes/labels/neuron_ids'][:20, :60, :60]
    first, second = np.unique(gt[gt > 0])[:2]
    np.save(tmp_path / 'seg.npy', np.where(gt == second, first, gt))  # one false merge
    result = run(EVALUATE, tmp_path / 'seg.npy', fib25, '--gt-key', 'volumes/labels/neuron_ids',
                 check=False)
    assert result.returncode == 2 and 'shape' in result.stderr  # crop vs full volume
    np.save(tmp_path / 'gt.npy', gt)
    result = run(EVALUATE, tmp_path / 'seg.npy', tmp_path / 'gt.npy')
    scores = dict(line.split() for line in result.stdout.splitlines())
    assert float(scores['voi_split']) == 0 and float(scores['voi_merge']) > 0
    assert float(scores['rand_recall']) == 1 and 0 < float(scores['adapted_rand_error']) < 1
