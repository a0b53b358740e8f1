"""Segment held-out FIB-25 with a trained boundary net and a seeded watershed; score it
(variation of information, adapted Rand error) against a thresholded-raw baseline.

    python examples/evaluate_fib25.py MODEL [--json results.json] [--predictions FILE.npz]
        [--blockwise]

The FIB-25 examples (unet3d_iso.py, neuro3d_lite.py, neuro3d.py, unet3d_lite.py) train
on z 0-159 and validate on z 160-199; z 200-249 is the test volume. The model predicts
z 160-249 in one piece, with the raw slices before z 160 as its context (not mirrored
ones), and the two volumes are cut from it. Both methods segment a boundary map with the
same seeded watershed (elektronn2.inference.segmentation.segment_boundaries):

* boundary net: the boundary probability the model predicts (elektronn2.inference);
* baseline: one minus the raw grey values (membranes are dark), scaled to [0, 1] by
  their 1st and 99th percentiles, i.e. seeds are thresholded raw data.

Both get the same choices, made on the validation volume (lowest VOI): Gaussian
smoothing of the map, the seeds (connected components of the confident interior, or
h-maxima of its distance transform), the interior threshold, the merge threshold of
the mean-linkage agglomeration (or none), and the smallest segment. The test volume is
scored once with each method's choice; the JSON file also lists the validation scores
of every candidate. ``--predictions`` keeps the prediction in a file and reuses it
when it was made by the same model file.

``--blockwise`` scores the test volume as elektronn2-segment computes it: block by block
(64^3 blocks, elektronn2.inference.blockwise_segmentation.segment_volume). Its watershed
floods steepest-descent basins of seeds that are connected components of the interior,
so the candidates are those without smoothing and with component seeds; they are
chosen on the validation volume with the whole-volume watershed (the two differ by a
VOI below 0.1, see docs/segmentation.rst), and the JSON file gives the test scores of
both.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import scipy.ndimage as ndi

SPLITS = {'valid': slice(160, 200), 'test': slice(200, 250)}
SMOOTHING = (0.0, 1.0)
SEEDINGS = ({'seeds': 'components'}, {'seeds': 'distance', 'seed_h': 2.0},
            {'seeds': 'distance', 'seed_h': 4.0})
SEED_THRESHOLDS = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99, 0.995)
MERGE_THRESHOLDS = (None, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
MIN_SIZES = (0, 200)
BLOCKWISE_BLOCK = (64, 64, 64)


def smoothed(volume: np.ndarray, sigma: float) -> np.ndarray:
    """float32 volume, Gaussian-smoothed with ``sigma`` (0: unchanged)."""
    volume = volume.astype(np.float32)
    return ndi.gaussian_filter(volume, sigma) if sigma else volume


def raw_boundary(raw: np.ndarray, sigma: float) -> np.ndarray:
    """The baseline's boundary map: one minus smoothed raw, scaled to [0, 1] by percentiles."""
    interior = smoothed(raw, sigma)
    low, high = np.percentile(interior, (1, 99))
    return 1 - np.clip((interior - low) / (high - low), 0, 1)


def settings_label(settings: dict) -> str:
    """Short text of a choice of settings, e.g. 'sigma 1.0, distance h 2.0 > 0.9, ...'."""
    seeds = settings['seeds'] + (f" h {settings['seed_h']}" if 'seed_h' in settings else '')
    merge = settings['merge_threshold']
    return (f"sigma {settings['sigma']}, {seeds} > {settings['seed_threshold']}, "
            f"merge {'-' if merge is None else merge}, min {settings['min_size']}")


def score(segments: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """VOI (split, merge) and adapted Rand error of ``segments``, and their number."""
    from elektronn2.inference.metrics import Contingency, scores
    return {**scores(Contingency.of(segments, truth)), 'segments': int(segments.max())}


def candidates(boundary: np.ndarray, seedings: Sequence[dict] = SEEDINGS):
    """(settings, segments) for every choice of seeds, threshold, merging and min size.

    Runs each watershed once: merging and the size filter are the later steps of
    segment_boundaries, applied here to its watershed as it applies them, so every
    candidate equals ``segment_boundaries(boundary, **settings)``.
    """
    from elektronn2.errors import ConfigError
    from elektronn2.inference.segmentation import merge_segments, remove_small_segments, segment_boundaries
    for seeding, threshold in itertools.product(seedings, SEED_THRESHOLDS):
        try:
            watershed = segment_boundaries(boundary, seed_threshold=threshold,
                                           **seeding).astype(np.int64)
        except ConfigError:  # no seeds at this threshold
            continue
        for merge in MERGE_THRESHOLDS:
            merged = watershed if merge is None else merge_segments(watershed, boundary, merge)
            for min_size in MIN_SIZES:
                segments = remove_small_segments(merged, boundary, min_size) \
                    if min_size > 1 else merged
                yield ({**seeding, 'seed_threshold': threshold, 'merge_threshold': merge,
                        'min_size': min_size}, segments)


def tuned_scores(boundaries: dict[float, dict[str, np.ndarray]],
                 truth: dict[str, np.ndarray], blockwise: bool = False) -> dict:
    """The settings with the lowest validation VOI, and the test scores with them.

    ``boundaries``: smoothing sigma -> {'valid': map, 'test': map}. Returns
    {'settings', 'valid', 'test', 'all_valid'}: the choice, its scores, and the
    validation scores of every candidate; with ``blockwise`` (component seeds only),
    'test' is the blockwise segmentation's and 'test_whole_volume' the flooding's.
    """
    from elektronn2.inference.segmentation import segment_boundaries
    seedings = SEEDINGS[:1] if blockwise else SEEDINGS
    table = [{'settings': {'sigma': sigma, **settings},
              'valid': score(segments, truth['valid'])}
             for sigma, maps in boundaries.items()
             for settings, segments in candidates(maps['valid'], seedings)]
    best = dict(min(table, key=lambda row: row['valid']['voi']))
    settings = dict(best['settings'])
    sigma = settings.pop('sigma')
    best['test'] = score(segment_boundaries(boundaries[sigma]['test'], **settings),
                         truth['test'])
    if blockwise:
        from elektronn2.inference.blockwise_segmentation import segment_volume
        best['test_whole_volume'] = best['test']
        settings.pop('seeds')
        best['test'] = score(segment_volume(boundaries[sigma]['test'], BLOCKWISE_BLOCK,
                                            **settings).astype(np.int64), truth['test'])
        best['test']['block_shape'] = list(BLOCKWISE_BLOCK)
    best['all_valid'] = table
    return best


def predict_boundaries(model_path: str, raw: np.ndarray, cache: str | None = None) -> np.ndarray:
    """Boundary probability of z 160-249, predicted with the raw data before as context.

    ``raw``: the whole FIB-25 volume. With ``cache``, a file written before by the
    same model file is reused, else the prediction is written to it.
    """
    from elektronn2.inference import predict_volume
    from elektronn2.inference.predictors import load_model, model_digest
    from elektronn2.neuromancer.footprint import Footprint
    digest = model_digest(model_path)
    if cache and Path(cache).exists():
        with np.load(cache) as stored:
            if str(stored['model_sha256']) == digest:
                return stored['boundary']
    geometry = Footprint.of(load_model(model_path).prediction_node)
    first, last = SPLITS['valid'].start, SPLITS['test'].stop
    start = max(first - geometry.context[0][0], 0)
    boundary = predict_volume(model_path, raw[start:last])[1, first - start:]
    if cache:
        np.savez(cache, boundary=boundary, model_sha256=digest)
    return boundary


def evaluate(model_path: str, cache: str | None = None, blockwise: bool = False) -> dict:
    """Test scores of the boundary net and of the baseline, with the chosen settings
    (``blockwise``: see the module docstring)."""
    from elektronn2.data.datasets import get_path
    with h5py.File(get_path('fib25_training_sample2') / 'fib25_training_sample2.h5', 'r') as f:
        raw = f['volumes/raw'][:]
        truth = {name: f['volumes/labels/neuron_ids'][z] for name, z in SPLITS.items()}
    predicted = predict_boundaries(model_path, raw, cache)
    first = SPLITS['valid'].start
    net_maps = {name: predicted[z.start - first:z.stop - first] for name, z in SPLITS.items()}
    sigmas = (0.0,) if blockwise else SMOOTHING
    net = tuned_scores({s: {name: smoothed(p, s) for name, p in net_maps.items()}
                        for s in sigmas}, truth, blockwise)
    baseline = tuned_scores({s: {name: raw_boundary(raw[z], s) for name, z in SPLITS.items()}
                             for s in sigmas}, truth, blockwise)
    return {'boundary_net': net, 'thresholded_raw': baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='boundary model trained on FIB-25 (e.g. unet3d_iso.py)')
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--predictions', help='.npz file that keeps the prediction (reused '
                                              'when made by the same model file)')
    parser.add_argument('--blockwise', action='store_true',
                        help='segment the test volume block by block as elektronn2-segment does '
                             '(component seeds, no smoothing)')
    args = parser.parse_args(argv)
    results = evaluate(args.model, args.predictions, args.blockwise)
    print(f"{'method':<16} {'VOI split':>9} {'VOI merge':>9} {'VOI':>6} {'ARAND':>6} "
          f"{'segments':>8}  settings (chosen on valid)")
    for method, result in results.items():
        test = result['test']
        print(f"{method:<16} {test['voi_split']:>9.3f} {test['voi_merge']:>9.3f} "
              f"{test['voi']:>6.3f} {test['adapted_rand_error']:>6.3f} {test['segments']:>8d}  "
              f"{settings_label(result['settings'])}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    from elektronn2.console import run_script
    sys.exit(run_script(main, Path(__file__).name))
