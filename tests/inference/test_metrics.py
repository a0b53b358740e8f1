"""Variation of information and adapted Rand error: hand-computed cases, scikit-image, slabs."""
import numpy as np
import pytest
from skimage.metrics import adapted_rand_error as skimage_are
from skimage.metrics import variation_of_information as skimage_voi

from elektronn2.errors import ShapeError
from elektronn2.inference.metrics import (
    Contingency,
    adapted_rand_error,
    evaluate_sources,
    variation_of_information,
)


def test_identical_segmentations_score_perfectly():
    gt = np.array([[1, 1, 2], [2, 3, 3]])
    relabelled = np.array([[7, 7, 5], [5, 9, 9]])
    assert variation_of_information(relabelled, gt) == (0.0, 0.0)
    assert adapted_rand_error(relabelled, gt) == (0.0, 1.0, 1.0)


def test_split_by_hand():
    # one object of 4 voxels split 2 + 2: H(seg|gt) = 1 bit, nothing merged
    gt = np.array([1, 1, 1, 1])
    seg = np.array([1, 1, 2, 2])
    assert variation_of_information(seg, gt) == (1.0, 0.0)
    # ordered pairs of distinct voxels: together in both 2*1 + 2*1 = 4; in seg 4; in gt 4*3
    error, precision, recall = adapted_rand_error(seg, gt)
    assert (precision, recall) == (1.0, 4 / 12)
    assert error == pytest.approx(1 - 2 * (1 / 3) / (1 + 1 / 3))


def test_merge_by_hand_with_ignored_background():
    # gt objects of 2 and 1 voxels merged into one segment; gt 0 voxels are not scored
    gt = np.array([0, 1, 1, 2, 0])
    seg = np.array([5, 3, 3, 3, 6])
    split, merge = variation_of_information(seg, gt)
    p = np.array([2 / 3, 1 / 3])
    assert split == 0.0 and merge == pytest.approx(-(p * np.log2(p)).sum())
    error, precision, recall = adapted_rand_error(seg, gt)
    assert (precision, recall) == (2 / 6, 1.0)
    assert variation_of_information(seg, gt, ignore_gt=()) != (split, merge)


def test_agrees_with_scikit_image():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 6, (10, 12, 14))
    seg = np.where(rng.random(gt.shape) < 0.8, gt, rng.integers(0, 9, gt.shape)) * 3 + 1
    split, merge = variation_of_information(seg, gt)
    np.testing.assert_allclose([split, merge], skimage_voi(gt, seg, ignore_labels=[0]))
    assert adapted_rand_error(seg, gt)[0] == pytest.approx(
        skimage_are(gt, seg, ignore_labels=[0])[0])


def test_tables_of_slabs_add_up():
    rng = np.random.default_rng(4)
    gt = rng.integers(0, 5, (9, 8, 8))
    seg = rng.integers(0, 4, gt.shape)
    whole = Contingency.of(seg, gt)
    summed = Contingency.of(seg[:4], gt[:4]) + Contingency.of(seg[4:], gt[4:])
    assert whole.n_voxels == summed.n_voxels == (gt != 0).sum()
    assert variation_of_information(summed) == pytest.approx(variation_of_information(whole))
    scores = evaluate_sources(seg, gt, block_shape=(2, 3, 5))
    assert scores['adapted_rand_error'] == pytest.approx(adapted_rand_error(whole)[0])
    with pytest.raises(ShapeError, match='must be equal'):
        evaluate_sources(seg[:3], gt)


def test_the_table_does_not_depend_on_how_ids_are_numbered():
    """Small non-negative ids are counted, others (large, negative) sorted: same table."""
    rng = np.random.default_rng(3)
    seg = rng.integers(0, 40, (20, 30, 30))
    gt = rng.integers(0, 25, seg.shape)
    table = Contingency.of(seg, gt)
    for seg_ids, gt_ids in ((seg + 10 ** 12, gt), (seg - 20, gt * 10 ** 9 + 7),
                            (seg.astype(np.uint8), gt.astype(np.uint64))):
        other = Contingency.of(seg_ids, gt_ids, ignore_gt=(gt_ids.ravel()[gt.ravel() == 0][0],))
        order = np.lexsort((other.gt_ids, other.seg_ids))
        np.testing.assert_array_equal(other.counts[order], table.counts)
        assert len(other.seg_ids) == len(table.seg_ids) and table.n_voxels == other.n_voxels
    assert Contingency.of(np.zeros(0, int), np.zeros(0, int)).n_voxels == 0
