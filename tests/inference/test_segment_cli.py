"""elektronn2-segment: killed at a random moment and resumed, two dask workers, one
process: the same files; refused input and outputs; elektronn2-evaluate on its output."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

from elektronn2.inference.blockwise_segmentation import WORK_SUFFIX, segment_to_file, segment_volume
from elektronn2.inference.cli import evaluate_main
from elektronn2.inference.cli import main as predict_main
from elektronn2.inference.metrics import Contingency, scores
from elektronn2.inference.segment_cli import main
from elektronn2.utils.segmentation_view import segmentation_layers

BLOCK = ('16', '24', '24')
SETTINGS = ('--merge-threshold', '0.3', '--min-size', '40', '--min-seed-size', '10')


@pytest.fixture(scope='module')
def prediction(fib25, tmp_path_factory):
    """A two-class 'prediction' (c, z, y, x) of FIB-25 z 0-48, y, x 0-96 as elektronn2-predict
    writes it (zarr, key probabilities, resolution), from smoothed raw."""
    with h5py.File(fib25) as f:
        raw = f['volumes/raw'][:48, :96, :96].astype(np.float32)
    smooth = ndi.gaussian_filter(raw, 1.0)
    low, high = np.percentile(smooth, (1, 99))
    boundary = 1 - np.clip((smooth - low) / (high - low), 0, 1)
    path = tmp_path_factory.mktemp('segment') / 'prediction.zarr'
    array = zarr.open_array(store=str(path), path='probabilities', mode='w',
                            shape=(2,) + boundary.shape, chunks=(2, 16, 32, 32), dtype='uint8')
    array[:] = np.rint(np.stack([1 - boundary, boundary]) * 255).astype(np.uint8)
    array.attrs.update({'resolution': [10, 10, 10], 'voxel_offset': [0, 0, 0]})
    return path


def command(prediction, output, *extra):
    return [sys.executable, '-m', 'elektronn2.inference.segment_cli', str(prediction),
            str(output), '--quiet', '--block-shape', *BLOCK, *SETTINGS, *extra]


def store_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob('*'))
            if p.is_file()}


@pytest.fixture(scope='module')
def complete(prediction, tmp_path_factory):
    output = tmp_path_factory.mktemp('complete') / 'seg.zarr'
    t0 = time.monotonic()
    subprocess.run(command(prediction, output), check=True, timeout=300)
    return output, time.monotonic() - t0


def test_killed_run_resumes_to_identical_output(prediction, complete, tmp_path):
    """Killed twice at random moments (SIGKILL), then run to the end."""
    reference, seconds = complete
    output = tmp_path / 'seg.zarr'
    work = Path(str(output) + WORK_SUFFIX)
    for _ in range(2):
        process = subprocess.Popen(command(prediction, output), start_new_session=True)
        deadline = time.monotonic() + 120
        while not (work / 'manifest.json').exists() and process.poll() is None:
            assert time.monotonic() < deadline    # started: the imports are done
            time.sleep(0.01)
        time.sleep(random.uniform(0, 0.3 * seconds))  # seconds include the imports
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    subprocess.run(command(prediction, output), check=True, timeout=300)
    assert not work.exists()
    assert store_files(output) == store_files(reference)


def test_two_dask_workers_equal_one_process(prediction, complete, tmp_path):
    pytest.importorskip('distributed')
    reference, _ = complete
    output = tmp_path / 'seg.zarr'
    assert main([str(prediction), str(output), '--quiet', '--block-shape', *BLOCK, *SETTINGS,
                 '--workers', '2']) == 0
    assert store_files(output) == store_files(reference)


def test_refusals(prediction, complete, tmp_path, capsys):
    reference, _ = complete
    # the same command on a finished output redoes nothing and keeps it
    before = store_files(reference)
    report = segment_to_file(prediction, reference, block_shape=[int(b) for b in BLOCK],
                             merge_threshold=0.3, min_size=40, min_seed_size=10, progress=False)
    assert store_files(reference) == before and report.resumed['write'] == report.n_blocks
    # other settings on an existing output, a bad channel, a foreign directory
    assert main([str(prediction), str(reference), '--quiet', '--block-shape', *BLOCK]) == 2
    assert 'exists from another run' in capsys.readouterr().err
    assert main([str(prediction), str(tmp_path / 'a.zarr'), '--channel', '5']) == 2
    assert '--channel 5' in capsys.readouterr().err
    (tmp_path / 'b.zarr').mkdir()
    (tmp_path / 'b.zarr' / 'notes.txt').write_text('mine')
    assert main([str(prediction), str(tmp_path / 'b.zarr')]) == 2
    assert 'not a zarr group' in capsys.readouterr().err
    assert (tmp_path / 'b.zarr' / 'notes.txt').read_text() == 'mine'
    with pytest.raises(SystemExit):
        main([str(prediction), str(tmp_path / 'c.zarr'), '--nhood', '1', '2'])
    # the two class channels read as two affinities need two offsets; channel 1 alone is one
    two = [str(prediction), str(tmp_path / 'd.zarr'), '--quiet', '--affinities', '--nhood',
           '0', '0', '-1']
    assert main(two) == 2
    assert '--affinity-channels 1' in capsys.readouterr().err
    assert main(two + ['--affinity-channels', '2']) == 2
    assert 'give indices in 0..1' in capsys.readouterr().err
    assert main(two + ['--affinity-channels', '1', '--seed-threshold', '0.9']) == 0
    assert 'segments' in capsys.readouterr().out


def test_help_is_fast_and_plain(capsys):
    result = subprocess.run([sys.executable, '-c', "import sys, elektronn2.inference.segment_cli; "
                             "print(sorted({'torch', 'dask', 'zarr', 'scipy'} & set(sys.modules)))"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == '[]'
    with pytest.raises(SystemExit):
        main(['--help'])
    text = capsys.readouterr().out
    assert '(default: 0.5)' in text and '``' not in text and ':mod:' not in text


def test_evaluate_reads_the_ome_zarr_output_block_by_block(fib25, complete, tmp_path, capsys):
    reference, _ = complete
    with h5py.File(fib25) as f:
        truth = f['volumes/labels/neuron_ids'][:48, :96, :96]
    with h5py.File(tmp_path / 'truth.h5', 'w') as f:
        f['ids'] = truth
    assert evaluate_main([str(reference), str(tmp_path / 'truth.h5'), '--gt-key', 'ids',
                          '--block-shape', '13', '40', '50', '--quiet']) == 0
    printed = {line.split()[0]: float(line.split()[1])
               for line in capsys.readouterr().out.splitlines()}
    segmentation = zarr.open_group(store=str(reference), mode='r')['0'][:]
    expected = scores(Contingency.of(segmentation, truth))
    assert printed == pytest.approx(expected, abs=1e-6)


def test_predict_segment_view_chain(boundary_model, fib25, fib25_raw, tmp_path, capsys):
    """elektronn2-predict's output (a --region of an HDF5 volume with a resolution) is
    segmented with its geometry, the viewer finds the raw data through both, and
    elektronn2-evaluate scores it against that box of the ground truth."""
    with h5py.File(tmp_path / 'raw.h5', 'w') as f:
        f.create_dataset('raw', data=fib25_raw[:24, :64, :64])
        f['raw'].attrs['resolution'] = [10, 10, 10]
    prediction = tmp_path / 'prediction.zarr'
    assert predict_main([str(boundary_model), str(tmp_path / 'raw.h5'), str(prediction),
                         '--key', 'raw', '--region', '4:20', '0:64', '8:56', '--quiet']) == 0
    output = tmp_path / 'seg.zarr'
    assert main([str(prediction), str(output), '--block-shape', '8', '32', '32', '--quiet',
                 '--seed-threshold', '0.3']) == 0
    group = zarr.open_group(store=str(output), mode='r')
    assert group['0'].shape == (16, 64, 48)
    level0 = group.attrs['ome']['multiscales'][0]['datasets'][0]['coordinateTransformations']
    assert level0 == [{'type': 'scale', 'scale': [10.0, 10.0, 10.0]},
                      {'type': 'translation', 'translation': [40.0, 0.0, 80.0]}]
    layers = segmentation_layers(str(output))
    np.testing.assert_array_equal(layers['raw'], fib25_raw[4:20, :64, 8:56])
    assert layers['prediction'].shape == layers['segmentation'].shape == (16, 64, 48)
    with h5py.File(fib25) as f:
        truth = f['volumes/labels/neuron_ids'][:24, :64, :64]
    with h5py.File(tmp_path / 'truth.h5', 'w') as f:
        f['ids'] = truth
    capsys.readouterr()
    assert evaluate_main([str(output), str(tmp_path / 'truth.h5'), '--gt-key', 'ids',
                          '--quiet']) == 0
    printed = {line.split()[0]: float(line.split()[1])
               for line in capsys.readouterr().out.splitlines()}
    expected = scores(Contingency.of(layers['segmentation'], truth[4:20, :, 8:56]))
    assert printed == pytest.approx(expected, abs=1e-6)


def test_seed_erosion_reaches_the_library_and_bad_values_are_refused(prediction, tmp_path,
                                                                      capsys):
    output = tmp_path / 'eroded.zarr'
    assert main([str(prediction), str(output), '--quiet', '--block-shape', *BLOCK, *SETTINGS,
                 '--seed-erosion', '1.5']) == 0
    stored = zarr.open_array(store=str(prediction), path='probabilities', mode='r')[1]
    expected = segment_volume(stored.astype(np.float32) / 255, merge_threshold=0.3,
                              min_size=40, min_seed_size=10, seed_erosion=1.5)
    np.testing.assert_array_equal(zarr.open_group(store=str(output), mode='r')['0'][:], expected)
    assert main([str(prediction), str(tmp_path / 'bad.zarr'), '--seed-erosion', '20']) == 2
    assert 'seed_erosion=20.0 (--seed-erosion); it must be in [0, 16]' in capsys.readouterr().err


def test_fit_edge_model_then_segment_with_it(fib25, prediction, tmp_path):
    truth_path = tmp_path / 'truth.h5'
    with h5py.File(fib25) as f, h5py.File(truth_path, 'w') as out:
        out['ids'] = f['volumes/labels/neuron_ids'][:48, :96, :96]
    model = tmp_path / 'edge.json'
    fit = [sys.executable, '-c', 'import sys; from elektronn2.inference.segment_cli import '
           'fit_main; sys.exit(fit_main())']
    seeds = ('--seed-threshold', '0.7', '--seed-erosion', '1')
    done = subprocess.run([*fit, str(prediction), str(truth_path), str(model), '--truth-key',
                           'ids', *seeds], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'edge model from' in done.stdout and model.exists()
    output = tmp_path / 'seg.zarr'
    args = [str(prediction), str(output), '--quiet', '--block-shape', *BLOCK, *seeds,
            '--merge-threshold', '0.5', '--min-size', '40', '--edge-model', str(model)]
    assert main(args) == 0
    stored = np.asarray(zarr.open_array(store=str(output), path='0', mode='r')[:])
    source = zarr.open_array(store=str(prediction), path='probabilities', mode='r')
    expected = segment_volume(np.asarray(source[:]), seed_threshold=0.7, seed_erosion=1.0,
                              merge_threshold=0.5, min_size=40, edge_model=str(model))
    np.testing.assert_array_equal(stored, expected)
    # refused: a model file that is not one, a truth of another shape
    model.write_text('{"format": "elektronn2-edge-model", "version": 1}')
    done = subprocess.run(command(prediction, tmp_path / 'other.zarr', '--edge-model',
                                  str(model)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and f"edge model '{model}'" in done.stderr
    with h5py.File(truth_path, 'a') as out:
        out['small'] = np.zeros((4, 4, 4), np.uint64)
    done = subprocess.run([*fit, str(prediction), str(truth_path), str(model), '--truth-key',
                           'small'], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and 'inside the ground truth' in done.stderr
    assert 'of shape (4, 4, 4)' in done.stderr


def test_fit_edge_model_on_a_region_takes_that_box_of_the_truth(prediction, fib25, tmp_path,
                                                                capsys):
    """A prediction of a --region (its voxel_offset) is fitted against the box of the whole
    volume's ground truth it covers, as if that box had been given; a prediction that
    does not lie inside the truth is refused."""
    from elektronn2.inference.blockwise_segmentation import fit_edge_model
    from elektronn2.inference.segment_cli import fit_main
    with h5py.File(fib25) as f, h5py.File(tmp_path / 'truth.h5', 'w') as out:
        out['ids'] = truth = f['volumes/labels/neuron_ids'][:48, :96, :96]
    crop = zarr.open_array(store=str(prediction), path='probabilities', mode='r')[:, 8:40, :, 16:80]
    region = tmp_path / 'region.zarr'
    stored = zarr.open_array(store=str(region), path='probabilities', mode='w', shape=crop.shape,
                             chunks=(2, 16, 32, 32), dtype=crop.dtype)
    stored[:] = crop
    stored.attrs['voxel_offset'] = [8, 0, 16]     # as elektronn2-predict --region 8:40 0:96 16:80
    seeds = ('--seed-threshold', '0.7', '--seed-erosion', '1')
    assert fit_main([str(region), str(tmp_path / 'truth.h5'), str(tmp_path / 'edge.json'),
                     '--truth-key', 'ids', *seeds]) == 0
    expected = fit_edge_model(crop, truth[8:40, :, 16:80], seed_threshold=0.7, seed_erosion=1.0)
    fitted = json.loads((tmp_path / 'edge.json').read_text())
    assert fitted['weights'] == pytest.approx(expected.weights.tolist())
    assert fitted['bias'] == pytest.approx(expected.bias)
    with h5py.File(tmp_path / 'truth.h5', 'a') as out:
        out['small'] = truth[:20]
    capsys.readouterr()
    assert fit_main([str(region), str(tmp_path / 'truth.h5'), str(tmp_path / 'e2.json'),
                     '--truth-key', 'small', *seeds]) == 2
    assert 'voxel_offset (8, 0, 16)) does not lie inside the ground truth' in capsys.readouterr().err
