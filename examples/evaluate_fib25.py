"""Segment held-out FIB-25 with a trained boundary net and a seeded watershed; score it
(variation of information, adapted Rand error) against a thresholded-raw baseline.

    python examples/evaluate_fib25.py MODEL [--json results.json]

The FIB-25 examples (unet3d_iso.py, neuro3d_lite.py, neuro3d.py, unet3d_lite.py) train
on z 0-159 and validate on z 160-199; z 200-249 is the test volume. Both methods
segment a boundary map with the same seeded watershed
(elektronn2.inference.segmentation.segment_boundaries):

* boundary net: the boundary probability the model predicts (elektronn2.inference);
* baseline: one minus the raw grey values (membranes are dark), scaled to [0, 1] by
  their 1st and 99th percentiles, i.e. seeds are thresholded raw data.

Both get the same choices, made on the validation volume (lowest VOI): Gaussian
smoothing of the map, the seed threshold and the smallest segment. The test volume
is scored once with each method's choice.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys

import h5py
import numpy as np
import scipy.ndimage as ndi

SPLITS = {'valid': slice(160, 200), 'test': slice(200, 250)}
SEED_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
MIN_SIZES = (0, 200)
SMOOTHING = (0.0, 1.0, 2.0)


def smoothed(volume: np.ndarray, sigma: float) -> np.ndarray:
    """float32 volume, Gaussian-smoothed with ``sigma`` (0: unchanged)."""
    volume = volume.astype(np.float32)
    return ndi.gaussian_filter(volume, sigma) if sigma else volume


def raw_boundary(raw: np.ndarray, sigma: float) -> np.ndarray:
    """The baseline's boundary map: one minus smoothed raw, scaled to [0, 1] by percentiles."""
    interior = smoothed(raw, sigma)
    low, high = np.percentile(interior, (1, 99))
    return 1 - np.clip((interior - low) / (high - low), 0, 1)


def segmentation_scores(boundary: np.ndarray, truth: np.ndarray, seed_threshold: float,
                        min_size: int) -> dict[str, float]:
    """Watershed of a boundary map and its scores against the neuron ids."""
    from elektronn2.inference.metrics import Contingency, scores
    from elektronn2.inference.segmentation import segment_boundaries
    segments = segment_boundaries(boundary, seed_threshold=seed_threshold, min_size=min_size)
    return {**scores(Contingency.of(segments, truth)), 'segments': int(segments.max())}


def tuned_scores(boundaries: dict[str, dict], truth: dict[str, np.ndarray]) -> dict:
    """Pick the settings with the lowest validation VOI; return them with the test scores.

    ``boundaries``: variant name -> {'valid': map, 'test': map}.
    """
    from elektronn2.errors import ConfigError
    best = None
    for variant, (threshold, min_size) in itertools.product(
            boundaries, itertools.product(SEED_THRESHOLDS, MIN_SIZES)):
        try:
            valid = segmentation_scores(boundaries[variant]['valid'], truth['valid'],
                                        threshold, min_size)
        except ConfigError:  # no seeds at this threshold
            continue
        if best is None or valid['voi'] < best['valid']['voi']:
            best = {'variant': variant, 'seed_threshold': threshold, 'min_size': min_size,
                    'valid': valid}
    best['test'] = segmentation_scores(boundaries[best['variant']]['test'], truth['test'],
                                       best['seed_threshold'], best['min_size'])
    return best


def evaluate(model_path: str) -> dict:
    """Test scores of the boundary net and of the baseline, with the chosen settings."""
    from elektronn2.data.datasets import get_path
    from elektronn2.inference import predict_volume
    with h5py.File(get_path('fib25_training_sample2') / 'fib25_training_sample2.h5', 'r') as f:
        raw = {name: f['volumes/raw'][z] for name, z in SPLITS.items()}
        truth = {name: f['volumes/labels/neuron_ids'][z] for name, z in SPLITS.items()}
    predicted = {name: predict_volume(model_path, volume)[1] for name, volume in raw.items()}
    net = tuned_scores({f"sigma {s}": {name: smoothed(p, s) for name, p in predicted.items()}
                        for s in SMOOTHING}, truth)
    baseline = tuned_scores({f"sigma {s}": {name: raw_boundary(volume, s)
                                            for name, volume in raw.items()}
                             for s in SMOOTHING}, truth)
    return {'boundary_net': net, 'thresholded_raw': baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='boundary model trained on FIB-25 (e.g. unet3d_iso.py)')
    parser.add_argument('--json', help='also write the results to this JSON file')
    args = parser.parse_args(argv)
    results = evaluate(args.model)
    print(f"{'method':<18} {'settings':<32} {'VOI split':>9} {'VOI merge':>9} {'VOI':>7} "
          f"{'ARAND':>7} {'segments':>8}")
    for method, result in results.items():
        test = result['test']
        settings = (f"{result['variant']}, seeds > {result['seed_threshold']}, "
                    f"min {result['min_size']}")
        print(f"{method:<18} {settings:<32} {test['voi_split']:>9.3f} {test['voi_merge']:>9.3f} "
              f"{test['voi']:>7.3f} {test['adapted_rand_error']:>7.3f} {test['segments']:>8d}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
