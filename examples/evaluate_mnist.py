"""Accuracy of a trained MNIST model on the 10,000 MNIST test images.

    python examples/evaluate_mnist.py [MODEL]     (default: examples/results/mnist.mdl)

The test images are the centred crops that the model's input node asks for, scaled to
[0, 1] (``MNISTData.examples('test')``); nothing of the test set is used in training.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / 'results' / 'mnist.mdl'


def evaluate(model_path: str | Path) -> float:
    """Fraction of the MNIST test images that the model at ``model_path`` classifies correctly."""
    import elektronn2.neuromancer as nm
    from elektronn2.data import MNISTData
    from elektronn2.demo import test_accuracy
    model = nm.modelload(model_path)
    return test_accuracy(model, MNISTData(model.input_node, model.target_node))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', nargs='?', default=str(DEFAULT_MODEL), help='model file')
    args = parser.parse_args(argv)
    accuracy = evaluate(args.model)
    print(f"{args.model}: test accuracy {accuracy:.2%} "
          f"({round((1 - accuracy) * 10000)} of 10,000 test images wrong)")
    return 0


if __name__ == '__main__':
    from elektronn2.console import run_script
    sys.exit(run_script(main, Path(__file__).name))
