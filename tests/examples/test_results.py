"""The trained MNIST model in examples/results reaches the documented test accuracy."""
import runpy
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / 'examples' / 'results'


def test_saved_mnist_model_reaches_99_5_percent(real_data):
    evaluate = runpy.run_path(str(RESULTS.parent / 'evaluate_mnist.py'))['evaluate']
    assert evaluate(RESULTS / 'mnist.mdl') >= 0.995
