"""The v1-style scripts in examples/v1 run (short runs)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

V1_EXAMPLES = Path(__file__).resolve().parents[2] / 'examples' / 'v1'


@pytest.mark.parametrize('script, args, expected', [
    ('mnist_cnn.py', ['--steps', '20', '--report-every', '10'], 'Test loss'),
    ('mnist_autoencoder.py', ['--steps', '20'], 'Test loss'),
])
def test_v1_script_runs(script, args, expected, mnist_data, tmp_path):
    env = dict(os.environ, ELEKTRONN2_DATA=str(mnist_data.parent))
    if script == 'mnist_autoencoder.py':
        args = args + ['--params', str(tmp_path / 'ae.param')]
    result = subprocess.run([sys.executable, str(V1_EXAMPLES / script), *args],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout
