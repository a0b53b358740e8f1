"""Every example config validates, builds its model and its data; mnist.py runs as a script."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elektronn2.training.experiment import ExperimentConfig, build_data, build_model

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'
CONFIGS = sorted(p.name for p in EXAMPLES.glob('*.py')
                 if not p.name.startswith(('_', 'evaluate_')))


def test_all_examples_are_listed():
    assert CONFIGS == ['affinities_fib25.py', 'isbi2d.py', 'mnist.py', 'mnist_autoencoder.py',
                       'mnist_mlp.py', 'mnist_rnn.py', 'neuro3d.py', 'neuro3d_lite.py',
                       'unet3d_iso.py', 'unet3d_lite.py']


@pytest.mark.parametrize('name', CONFIGS)
def test_example_config_builds_model_and_data(name, real_data, caplog):
    exp = ExperimentConfig(EXAMPLES / name)
    assert not [r for r in caplog.records if 'unknown setting' in r.getMessage()]
    model = build_model(exp)
    assert model.loss_node is not None and model.prediction_node is not None
    data = build_data(exp, model)
    batch = data.getbatch(min(exp.batch_size, 2), source='valid', **exp.data_batch_args)
    assert batch[0].shape[1:] == model.input_node.shape.shape[1:]
    loss = model.loss(*batch[:2])
    assert np.isfinite(loss)


def test_mnist_example_runs_as_a_script(real_data, tmp_path):
    env = dict(os.environ, ELEKTRONN2_DATA=str(real_data))
    result = subprocess.run([sys.executable, str(EXAMPLES / 'mnist.py'), '--out', str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'Test run on random input: prediction (1, 10)' in result.stdout
    assert "Model 'mnist'" in result.stdout
    drawn = (tmp_path / 'mnist_model-graph.png').exists()
    assert drawn or 'The model drawing was skipped' in result.stdout
