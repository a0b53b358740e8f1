"""Pixel-wise membrane F1 of a trained ISBI 2012 model on the held-out slices 25-29.

    python examples/evaluate_isbi.py MODEL [--threshold T]

isbi2d.py trains on slices 0-21 and validates on 22-24 of the labelled ISBI 2012 stack.
The model predicts the whole 512 x 512 slices 22-29 (mirrored at the borders, blockwise
with elektronn2.inference); a pixel is membrane where the membrane probability exceeds
the threshold. Unless given, the threshold is the one with the best F1 on the
validation slices 22-24; the test slices 25-29 are scored once with it (and with 0.5).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

VALID, TEST = slice(22, 25), slice(25, 30)
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.91, 0.05), 2))


def pixel_scores(membrane: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of boolean membrane predictions."""
    hits = np.count_nonzero(membrane & truth)
    precision = hits / max(np.count_nonzero(membrane), 1)
    recall = hits / max(np.count_nonzero(truth), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {'precision': float(precision), 'recall': float(recall), 'f1': float(f1),
            'accuracy': float(np.mean(membrane == truth))}


def evaluate(model_path: str, threshold: float | None = None) -> dict:
    """Test scores at the chosen (or given) threshold and at 0.5 (labels: 0 = membrane)."""
    from elektronn2.data.datasets import get_path
    from elektronn2.inference import predict_volume
    with h5py.File(get_path('isbi2012') / 'isbi2012.h5', 'r') as f:
        raw = f['train/raw'][VALID.start:TEST.stop]
        truth = f['train/labels'][VALID.start:TEST.stop] == 0
    membrane = predict_volume(model_path, raw, block_shape=(1, 256, 256))[1]
    n_valid = VALID.stop - VALID.start
    if threshold is None:
        threshold = max(THRESHOLDS, key=lambda t: pixel_scores(
            membrane[:n_valid] > t, truth[:n_valid])['f1'])
    return {'threshold': float(threshold),
            'test': pixel_scores(membrane[n_valid:] > threshold, truth[n_valid:]),
            'test_at_0.5': pixel_scores(membrane[n_valid:] > 0.5, truth[n_valid:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='model file trained by examples/isbi2d.py')
    parser.add_argument('--threshold', type=float,
                        help='membrane probability threshold (default: best F1 on slices 22-24)')
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.model, args.threshold), indent=1))
    return 0


if __name__ == '__main__':
    from elektronn2.console import run_script
    sys.exit(run_script(main, Path(__file__).name))
