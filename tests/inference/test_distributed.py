"""Blocks on a dask LocalCluster: killed and resumed runs give byte-identical zarr output."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from elektronn2.inference import DaskExecutor, predict_volume
from elektronn2.inference.outputs import MARKER_DIR

pytest.importorskip('distributed')

BLOCK = (12, 32, 32)


def predict_command(model, volume, output):
    return [sys.executable, '-m', 'elektronn2.inference.cli', str(model), str(volume),
            str(output), '--key', 'raw', '--workers', '2', '--quiet',
            '--block-shape', *map(str, BLOCK)]


def store_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob('*'))
            if p.is_file()}


@pytest.fixture(scope='module')
def volume(fib25_raw, tmp_path_factory):
    path = tmp_path_factory.mktemp('dask') / 'raw.h5'
    with h5py.File(path, 'w') as f:
        f.create_dataset('raw', data=fib25_raw[:48, :96, :128], chunks=(16, 32, 32))
    return path


def test_killed_run_resumes_to_identical_output(boundary_model, volume, tmp_path):
    complete = tmp_path / 'complete.zarr'
    subprocess.run(predict_command(boundary_model, volume, complete), check=True, timeout=300)
    n_blocks = 4 * 3 * 4
    assert len(list((complete / 'probabilities' / MARKER_DIR).iterdir())) == n_blocks

    killed = tmp_path / 'killed.zarr'
    markers = killed / 'probabilities' / MARKER_DIR
    # its own session, so that SIGKILL to the group takes the cluster's workers down too
    process = subprocess.Popen(predict_command(boundary_model, volume, killed),
                               start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (markers.is_dir() and len(list(markers.iterdir())) >= 3):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no block finished in time"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    done_at_kill = len(list(markers.iterdir()))
    assert 3 <= done_at_kill < n_blocks
    assert zarr.open_array(store=str(killed), path='probabilities', mode='r').attrs['complete'] is False

    resumed = subprocess.run(predict_command(boundary_model, volume, killed), check=True,
                             timeout=300, capture_output=True, text=True)
    assert f"({done_at_kill} done before)" in resumed.stdout
    assert store_files(killed) == store_files(complete)


def test_existing_scheduler_and_hdf5_written_by_main_process(boundary_model, volume, tmp_path):
    """``--scheduler`` uses a running cluster; workers return HDF5 blocks to the client."""
    from distributed import LocalCluster
    environ = dict(os.environ)
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
            h5_out = tmp_path / 'a.h5'
            command = predict_command(boundary_model, volume, h5_out)
            command[command.index('--workers'):command.index('--workers') + 2] = [
                '--scheduler', cluster.scheduler_address]
            subprocess.run(command, check=True, timeout=300)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    with h5py.File(volume) as f:
        expected = predict_volume(boundary_model, f['raw'][:], block_shape=BLOCK)
    with h5py.File(h5_out) as f:
        np.testing.assert_allclose(f['probabilities'][:], expected, rtol=1e-5, atol=2e-6)


def flaky_square(item):
    """Fails on the first attempt of every item (remembered in a file), then squares it."""
    value, directory = item
    attempt = Path(directory) / f"tried-{value}"
    if not attempt.exists():
        attempt.touch()
        raise OSError(f"first attempt of {value} fails")
    return value * value


def test_dask_executor_retries_failed_blocks(tmp_path):
    items = [(v, str(tmp_path)) for v in range(4)]
    environ = dict(os.environ)
    results = DaskExecutor(n_workers=2).map(flaky_square, items, retries=1)
    assert sorted(results) == [0, 1, 4, 9]
    assert dict(os.environ) == environ  # the LocalCluster's OMP_NUM_THREADS=1 etc. undone
