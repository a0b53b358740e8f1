"""The v1-style scripts in examples/v1 run (short runs on the real MNIST data)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

V1_EXAMPLES = Path(__file__).resolve().parents[2] / 'examples' / 'v1'


@pytest.mark.parametrize('script, args, expected, files', [
    ('mnist_cnn.py', ['--steps', '12', '--report-every', '10'], ['update: 10;', 'Test loss'], []),
    ('mnist_autoencoder.py', ['--steps', '12'], ['Validation reconstruction', 'Test loss'],
     ['reconstruction.png', 'AE-pretraining.param']),
    ('mnist_rnn.py', ['--steps', '6', '--report-every', '5'], ['update: 5;', 'Test loss'], []),
    ('mnist_gabor.py', ['--steps', '12'], ['Rebuilt network', 'Activation images'],
     ['gabor-cnn.param', 'filters_layer0.png', 'param_histograms.png']),
])
def test_v1_script_runs(script, args, expected, files, mnist_data, tmp_path):
    env = dict(os.environ, ELEKTRONN2_DATA=str(mnist_data.parent))
    if files:
        args = args + ['--out', str(tmp_path)]
    result = subprocess.run([sys.executable, str(V1_EXAMPLES / script), *args],
                            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for text in expected:
        assert text in result.stdout
    for name in files:
        assert (tmp_path / name).exists()
