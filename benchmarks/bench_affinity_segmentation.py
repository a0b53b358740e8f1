"""Segmentation from affinities on FIB-25: what exists, mean-affinity agglomeration, mutex.

    python benchmarks/bench_affinity_segmentation.py

Affinities of real data without a trained affinity net: from the thresholded-raw
baseline's boundary map b (one minus smoothed raw, scaled by percentiles), the edge of
voxel p along offset o has affinity ``1 - max(b[p], b[p + o])``, for the three nearest
offsets and three long-range ones (z 3, y 9, x 9), elektronn2's convention (edge k of
voxel p joins p and p + nhood[k]). Each method's settings are chosen on the validation
volume (z 160-199, lowest VOI) and scored once on the test volume (z 200-249):

* ``flood``: :func:`~elektronn2.inference.segmentation.segment_affinities` (the in-memory
  seeded watershed of the boundary map of the affinities, mean-boundary merging);
* ``drain/boundary``, ``drain/affinities``: :func:`~elektronn2.inference.
  blockwise_segmentation.segment_volume` in 64³ blocks, merging by the mean boundary of
  the voxel pairs, or by the mean affinity of the edges (Lee et al. 2017);
* ``mutex``: the mutex watershed of ``mwatershed`` (pip install mwatershed; whole volume,
  in memory) on ``affinity - bias``.
"""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.ndimage as ndi

from elektronn2.inference.blockwise_segmentation import segment_volume
from elektronn2.inference.metrics import Contingency, scores
from elektronn2.inference.segmentation import segment_affinities

NHOOD = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-3, 0, 0], [0, -9, 0], [0, 0, -9]])
SEED_THRESHOLDS = (0.5, 0.7, 0.9)
MERGES = (None, 0.2, 0.3, 0.4, 0.5)
BIASES = (0.5, 0.7, 0.9, 0.95, 0.99)


def affinities_of(boundary: np.ndarray) -> np.ndarray:
    """float32 (k, z, y, x): 1 - max(b[p], b[p + o]) per offset o (0 beyond the volume)."""
    out = np.zeros((len(NHOOD),) + boundary.shape, np.float32)
    for k, offset in enumerate(NHOOD):
        shifted = np.full(boundary.shape, np.inf, np.float32)
        src = tuple(slice(max(0, o), n + min(0, o)) for o, n in zip(offset, boundary.shape))
        dst = tuple(slice(max(0, -o), n + min(0, -o)) for o, n in zip(offset, boundary.shape))
        shifted[dst] = boundary[src]
        out[k] = np.clip(1 - np.maximum(boundary, shifted), 0, 1)
    return out


def candidates(affinities: np.ndarray):
    """(method, settings, segmentation) of every method and setting."""
    for threshold, merge in itertools.product(SEED_THRESHOLDS, MERGES):
        settings = {'seed_threshold': threshold, 'merge_threshold': merge, 'min_size': 200}
        yield 'flood', settings, segment_affinities(affinities, NHOOD, **settings)
        for edges in ('boundary', 'affinities'):
            yield f'drain/{edges}', settings, segment_volume(
                affinities, (64, 64, 64), affinities=True, nhood=NHOOD, edge_values=edges,
                **settings)
    try:
        import mwatershed
    except ImportError:
        return
    for bias in BIASES:
        labels = mwatershed.agglom(affinities.astype(np.float64) - bias, NHOOD.tolist())
        yield 'mutex', {'bias': bias}, labels


def main() -> None:
    data = Path(os.environ.get('ELEKTRONN2_DATA', 'data')) / 'em' / 'fib25_training_sample2.h5'
    with h5py.File(data, 'r') as f:
        raw = f['volumes/raw'][160:250].astype(np.float32)
        truth = f['volumes/labels/neuron_ids'][160:250]
    smooth = ndi.gaussian_filter(raw, 1.0)
    low, high = np.percentile(smooth, (1, 99))
    boundary = (1 - np.clip((smooth - low) / (high - low), 0, 1)).astype(np.float32)
    volumes = {'valid': slice(0, 40), 'test': slice(40, 90)}
    best: dict[str, tuple] = {}
    for method, settings, labels in candidates(affinities_of(boundary[volumes['valid']])):
        voi = scores(Contingency.of(labels, truth[volumes['valid']]))['voi']
        if method not in best or voi < best[method][0]:
            best[method] = (voi, settings)
    test = affinities_of(boundary[volumes['test']])
    print(f"{'method':<18} {'valid VOI':>9} {'test VOI':>9} {'ARAND':>6} {'segs':>5} {'s':>6}  "
          f"settings")
    for method, (valid_voi, settings) in best.items():
        t0 = time.perf_counter()
        labels = next(lab for m, s, lab in _one(method, settings, test))
        seconds = time.perf_counter() - t0
        result = scores(Contingency.of(labels, truth[volumes['test']]))
        print(f"{method:<18} {valid_voi:9.3f} {result['voi']:9.3f} "
              f"{result['adapted_rand_error']:6.3f} {len(np.unique(labels)):5d} {seconds:6.1f}  "
              f"{settings}")


def _one(method: str, settings: dict, affinities: np.ndarray):
    """The candidate of ``method`` with ``settings`` only."""
    if method == 'mutex':
        import mwatershed
        yield method, settings, mwatershed.agglom(affinities.astype(np.float64) -
                                                  settings['bias'], NHOOD.tolist())
    elif method == 'flood':
        yield method, settings, segment_affinities(affinities, NHOOD, **settings)
    else:
        yield method, settings, segment_volume(affinities, (64, 64, 64), affinities=True,
                                               nhood=NHOOD, edge_values=method.split('/')[1],
                                               **settings)


if __name__ == '__main__':
    main()
