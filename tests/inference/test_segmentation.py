"""Seeded watershed from boundaries and affinities, merging, size filter; FIB-25 sanity check."""
import h5py
import numpy as np
import pytest

from elektronn2.data.labels import ids2affinities, ids2barriers
from elektronn2.errors import ConfigError
from elektronn2.inference.blockwise_segmentation import segment_volume
from elektronn2.inference.metrics import adapted_rand_error, variation_of_information
from elektronn2.inference.segmentation import (
    boundaries_from_affinities,
    confident_interior,
    contact_boundary,
    interior_distance,
    interior_seeds,
    merge_segments,
    segment_affinities,
    segment_boundaries,
)


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


def test_merging_agglomerates_by_mean_contact_and_does_not_chain_through_gaps():
    """Fragments A (y < 10, x < 25) and B (y < 10, x >= 25) of one neuron, weak contact;
    neuron C (y >= 10) touches A along a clear boundary (0.9) and B through a gap (0.1).
    Joining every contact under 0.3 at once would chain A-B-C; joining A and B first
    makes their contact with C the mean of both parts (0.77), which stays."""
    ids = np.full((4, 20, 30), 3)
    ids[:, :10] = 1
    ids[:, :10, 25:] = 2
    boundary = np.full(ids.shape, 0.05, np.float32)
    boundary[:, 9:11, :25] = 0.9
    boundary[:, 9:11, 25:] = 0.1
    pairs, mean = contact_boundary(ids, boundary)
    assert pairs.tolist() == [[1, 2], [1, 3], [2, 3]] and np.all(mean[[0, 2]] < 0.3)
    merged = merge_segments(ids, boundary, 0.3)
    assert merged[0, 0, 0] == merged[0, 0, 29] != merged[0, 19, 0]
    assert len(np.unique(merged)) == 2
    assert len(np.unique(merge_segments(ids, boundary, 0.8))) == 1
    assert len(np.unique(merge_segments(ids, boundary, 0.05))) == 3


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


def two_cells_with_a_gap():
    """Ids (10, 40, 60): two touching cells (x < 25, x >= 25) in a closed box; the wall
    between them (0.9) has a 6-voxel gap (0.1) at y 10-15, off-centre."""
    ids = np.ones((10, 40, 60), int)
    ids[:, :, 25:] = 2
    boundary = np.full(ids.shape, 0.05, np.float32)
    boundary[:, :, 24:26] = 0.9
    boundary[:, [0, -1], :] = 0.9
    boundary[:, :, [0, -1]] = 0.9
    boundary[:, 10:16, 24:26] = 0.1
    return ids, boundary


def test_distance_seeds_separate_cells_joined_by_a_gap():
    ids, boundary = two_cells_with_a_gap()
    merged = segment_boundaries(boundary, seed_threshold=0.5)   # one interior component
    assert len(np.unique(merged)) == 1
    for options in ({}, {'seed_smoothing': 2.0}, {'seed_h': 2.0}, {'distance_weight': 0.5}):
        seg = segment_boundaries(boundary, seed_threshold=0.5, seeds='distance', **options)
        assert len(np.unique(seg)) == 2, options
        split, merge = variation_of_information(seg, ids)
        assert split < 0.1 and merge < 0.1, (options, split, merge)
    seeds = interior_seeds(boundary, seed_threshold=0.5, seeds='distance')
    assert seeds.max() == 2 and seeds[:, :, :25].max() != seeds[:, :, 25:].max()


def test_eroded_seeds_separate_cells_joined_by_a_gap_blockwise_too():
    """The 6-voxel gap (y 10-15) lets the interiors touch through a neck whose middle
    voxels lie 3 voxels from the wall: an erosion by a ball of radius 3 cuts it (and keeps
    each cell's interior), radius 2 does not."""
    ids, boundary = two_cells_with_a_gap()
    assert segment_boundaries(boundary, 0.5, seed_erosion=2.0).max() == 1
    seg = segment_boundaries(boundary, 0.5, seed_erosion=3.0)
    assert seg.max() == 2
    split, merge = variation_of_information(seg, ids)
    assert split < 0.1 and merge < 0.1
    blockwise = segment_volume(boundary, (4, 16, 16), seed_threshold=0.5, seed_erosion=3.0)
    split, merge = variation_of_information(blockwise, ids)
    assert blockwise.max() == 2 and split < 0.1 and merge < 0.1


def test_the_erosion_ball_follows_the_voxel_size():
    interior = np.zeros((9, 9, 9), bool)
    interior[1:8, 1:8, 1:8] = True
    eroded = confident_interior(np.where(interior, 0.0, 1.0), 0.5, seed_erosion=2.0)
    assert eroded.sum() == 27 and eroded[3:6, 3:6, 3:6].all()
    # z five times thicker: radius 2 reaches no slice along z, two voxels along y and x
    thick = confident_interior(np.where(interior, 0.0, 1.0), 0.5, seed_erosion=2.0,
                               sampling=(5, 1, 1))
    assert thick.sum() == 7 * 9 and thick[1:8, 3:6, 3:6].all()
    assert confident_interior(np.zeros((5, 5)), 0.5, seed_erosion=1.0).sum() == 9  # 2-D
    with pytest.raises(ConfigError, match='seed_erosion=-1'):
        confident_interior(np.zeros((5, 5)), 0.5, seed_erosion=-1)


def test_interior_distance_respects_sampling_and_smoothing():
    interior = np.ones((9, 9, 9), bool)
    interior[4] = False                 # a wall across z
    distance = interior_distance(interior)
    assert distance[0, 4, 4] == 4 and distance[4].max() == 0
    assert interior_distance(interior, sampling=(5, 1, 1))[0, 4, 4] == 20
    smooth = interior_distance(interior, smoothing=1.0)
    assert smooth[4].max() == 0 and 2 < smooth[1, 4, 4] < distance[1, 4, 4] + 1
    assert np.all(interior_distance(np.ones((3, 3), bool)) == 1)


def test_anisotropic_sampling_changes_the_seeds():
    """A box cell (5 slices, 29 x 10 voxels inside) with a flat obstacle in its middle
    slice. Isotropic voxels: the deepest points lie in the middle slice on either side of
    the obstacle (two seeds). Slices five times thicker than a pixel: the slices above
    and below the obstacle are as deep as the middle, one ridge runs past it (one seed)."""
    boundary = np.zeros((7, 31, 12), np.float32)
    boundary[[0, -1]] = 1
    boundary[:, [0, -1]] = 1
    boundary[:, :, [0, -1]] = 1
    boundary[3, 10:21, 3:9] = 1
    assert interior_seeds(boundary, seeds='distance').max() == 2
    assert interior_seeds(boundary, seeds='distance', sampling=(5, 1, 1)).max() == 1
    assert segment_boundaries(boundary, seeds='distance', sampling=(5, 1, 1)).max() == 1


def test_seed_options_are_checked():
    _, boundary = two_cells_with_a_gap()
    with pytest.raises(ConfigError, match="seeds='maxima'; valid: .'components', 'distance'."):
        segment_boundaries(boundary, seeds='maxima')
    with pytest.raises(ConfigError, match='seed_h'):
        segment_boundaries(boundary, seeds='distance', seed_h=-1)
    with pytest.raises(ConfigError, match='sampling'):
        segment_boundaries(boundary, sampling=(1, 1))
    with pytest.raises(ConfigError, match='distance_weight'):
        segment_boundaries(boundary, distance_weight=2)
    with pytest.raises(ConfigError, match='No seeds'):
        segment_boundaries(np.ones((4, 4, 4)), seeds='distance')


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
