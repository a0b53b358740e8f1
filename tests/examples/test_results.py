"""The trained models in examples/results reach their documented results."""
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / 'examples' / 'results'
FIB25 = Path('em') / 'fib25_training_sample2.h5'


def test_saved_mnist_model_reaches_99_5_percent(real_data):
    evaluate = runpy.run_path(str(RESULTS.parent / 'evaluate_mnist.py'))['evaluate']
    assert evaluate(RESULTS / 'mnist.mdl') >= 0.995


def _command(module: str, function: str = 'main') -> list[str]:
    return [sys.executable, '-c', f'import sys; from elektronn2.inference.{module} import '
                                  f'{function}; sys.exit({function}())']


def _run(command: list[str], *args) -> str:
    done = subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{args}:\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_fib25_ensemble_reaches_its_test_voi_with_the_commands(data_dir, tmp_path):
    """docs/results.rst, "An ensemble of two nets": the shipped boundary nets as an
    ensemble through elektronn2-predict, -fit-edge-model, -segment (64^3 blocks) and
    -evaluate give the documented test VOI 1.444, 40.6 % below the baseline's 2.43."""
    volume = data_dir / FIB25
    if not volume.exists():
        pytest.skip(f"{volume} not found")
    models = [RESULTS / 'fib25_boundaries.mdl', RESULTS / 'fib25_boundaries_2.mdl']
    predict = _command('cli')
    for name, z in (('train', '0:100'), ('test', '200:250')):
        _run(predict, *models, volume, tmp_path / f'{name}.zarr', '--key', 'volumes/raw',
             '--region', z, '0:250', '0:250', '--quiet')
    seeds = ('--seed-threshold', '0.9', '--seed-erosion', '1')
    truth = ('--truth-key', 'volumes/labels/neuron_ids')
    _run(_command('segment_cli', 'fit_main'), tmp_path / 'train.zarr', volume,
         tmp_path / 'edge.json', *truth, *seeds)
    _run(_command('segment_cli'), tmp_path / 'test.zarr', tmp_path / 'seg.zarr', *seeds,
         '--edge-model', tmp_path / 'edge.json', '--merge-threshold', '0.6',
         '--block-shape', 64, 64, 64, '--quiet')
    printed = _run(_command('cli', 'evaluate_main'), tmp_path / 'seg.zarr', volume,
                   '--gt-key', 'volumes/labels/neuron_ids', '--quiet')
    scores = {line.split()[0]: float(line.split()[1]) for line in printed.splitlines()}
    assert scores['voi'] == pytest.approx(1.444, abs=0.01)
    assert scores['voi'] <= 0.6 * 2.43
