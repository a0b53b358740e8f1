"""Seeded watershed from boundaries and affinities, merging, size filter; FIB-25 sanity check."""
import h5py
import numpy as np
import pytest

from elektronn2.data.labels import ids2affinities, ids2barriers
from elektronn2.errors import ConfigError
from elektronn2.inference.metrics import adapted_rand_error, variation_of_information
from elektronn2.inference.segmentation import (boundaries_from_affinities, contact_boundary,
                                               segment_affinities, segment_boundaries)


def three_cells():
    """Ids (8, 20, 30): three slabs along x; boundary maps with a weak and a strong wall."""
    ids = np.ones((8, 20, 30), int)
    ids[:, :, 10:20] = 2
    ids[:, :, 20:] = 3
    boundary = np.full(ids.shape, 0.1, np.float32)
    boundary[:, :, 9:11] = 0.35   # weak wall between 1 and 2
    boundary[:, :, 19:21] = 0.9   # strong wall between 2 and 3
    return ids, boundary


def test_watershed_recovers_cells_and_merges_weak_contacts():
    ids, boundary = three_cells()
    seg = segment_boundaries(boundary, seed_threshold=0.7)
    assert seg.dtype == np.uint32 and variation_of_information(seg, ids) == (0.0, 0.0)
    pairs, mean = contact_boundary(seg.astype(np.int64), boundary)
    assert len(pairs) == 2 and sorted(np.round(mean, 3)) == [0.35, 0.9]
    merged = segment_boundaries(boundary, seed_threshold=0.7, merge_threshold=0.5)
    assert len(np.unique(merged)) == 2
    assert len(np.unique(merged[:, :, :20])) == 1 and merged[0, 0, 0] != merged[0, 0, 25]


def test_small_segments_are_flooded_and_no_seeds_is_an_error():
    ids, boundary = three_cells()
    boundary[:, 5:15, 25] = 0.95   # a pocket inside cell 3 (312 voxels with its walls)
    boundary[:, 5:15, 29] = 0.95
    boundary[:, [5, 14], 25:30] = 0.95
    with_pocket = segment_boundaries(boundary, seed_threshold=0.7)
    assert len(np.unique(with_pocket)) == 4
    cleaned = segment_boundaries(boundary, seed_threshold=0.7, min_size=400)
    assert len(np.unique(cleaned)) == 3 and np.bincount(cleaned.ravel())[1:].min() >= 400
    with pytest.raises(ConfigError, match='No seeds'):
        segment_boundaries(np.ones((4, 4, 4)), seed_threshold=0.5)


def test_affinities_to_boundaries_and_segments():
    ids, _ = three_cells()
    affinities = ids2affinities(ids).astype(np.float32)
    boundary = boundaries_from_affinities(affinities)
    assert boundary[0, 5, 5] == 0 and boundary[0, 5, 9] > 0 and boundary[0, 5, 10] > 0
    seg = segment_affinities(affinities, seed_threshold=0.9)
    assert variation_of_information(seg, ids) == (0.0, 0.0)


def test_fib25_ground_truth_boundaries_give_a_close_segmentation(fib25):
    with h5py.File(fib25) as f:
        gt = f['volumes/labels/neuron_ids'][:32, :100, :100]
    boundary = ids2barriers(gt).astype(np.float32)
    seg = segment_boundaries(boundary, seed_threshold=0.5, min_seed_size=20, min_size=50)
    error, _, _ = adapted_rand_error(seg, gt)
    split, merge = variation_of_information(seg, gt)
    assert error < 0.02 and split < 0.1 and merge < 0.1, (error, split, merge)
