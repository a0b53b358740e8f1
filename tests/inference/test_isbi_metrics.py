"""ISBI 2012 scores (V_rand, V_info after thinning): hand-computed cases and the ISBI stack."""
import os
from pathlib import Path

import numpy as np
import pytest

from elektronn2.errors import ShapeError
from elektronn2.inference.isbi_metrics import (
    ISBI_THRESHOLDS,
    challenge_pixel_error,
    foreground_restricted_info,
    foreground_restricted_rand,
    isbi_scores,
    segment_membrane_map,
)
from elektronn2.inference.metrics import Contingency

ISBI = Path(os.environ.get('ELEKTRONN2_DATA', '')) / 'em' / 'isbi2012.h5'


def test_perfect_segmentation_scores_one():
    gt = np.array([[1, 1, 0, 2]] * 4)
    relabelled = np.array([[7, 7, 0, 3]] * 4)
    assert foreground_restricted_rand(relabelled, gt) == (1.0, 1.0, 1.0)
    assert foreground_restricted_info(relabelled, gt) == (1.0, 1.0, 1.0)


def test_merge_by_hand():
    # gt objects A (columns 0-1, 8 px) and B (column 3, 4 px), column 2 is gt boundary: n = 12.
    # One segment covers everything: sum p^2 = (8^2 + 4^2) / 12^2 = 80/144 = sum t^2, sum s^2 = 1.
    # split = 1, merge = 80/144 = 5/9, V_rand = 2 * 5/9 / (1 + 5/9) = 5/7.
    gt = np.array([[1, 1, 0, 2]] * 4)
    seg = np.full(gt.shape, 5)
    score, split, merge = foreground_restricted_rand(seg, gt)
    assert (split, merge) == pytest.approx((1.0, 5 / 9))
    assert score == pytest.approx(5 / 7)
    # H(S) = 0 (nothing split: split part 1), I(S;T) = 0, H(T) > 0: merge 0, V_info 0.
    assert foreground_restricted_info(seg, gt) == pytest.approx((0.0, 1.0, 0.0))


def test_split_by_hand():
    # gt objects A (columns 0-1) and B (columns 2-3), 8 px each; the segmentation cuts B into
    # a top and a bottom half of 4 px: sum p^2 = (64 + 16 + 16) / 256 = 3/8 = sum s^2,
    # sum t^2 = (64 + 64) / 256 = 1/2. split = 3/4, merge = 1, V_rand = 1.5 / 1.75 = 6/7.
    gt = np.array([[1, 1, 2, 2]] * 4)
    seg = np.array([[1, 1, 2, 2]] * 2 + [[1, 1, 3, 3]] * 2)
    assert foreground_restricted_rand(seg, gt) == pytest.approx((6 / 7, 0.75, 1.0))
    # H(T) = 1 bit, H(S) = 1/2 * 1 + 2 * 1/4 * 2 = 1.5 bits, H(S,T) = H(S) (S refines T),
    # I = 1 + 1.5 - 1.5 = 1: split = 1 / 1.5 = 2/3, merge = 1, V_info = (4/3) / (5/3) = 4/5.
    assert foreground_restricted_info(seg, gt) == pytest.approx((0.8, 2 / 3, 1.0))


def test_proposal_boundary_pixels_are_singletons():
    # gt A = columns 0-1, B = columns 2-3 (n = 16); the proposal marks column 1 as boundary (0):
    # segment a = column 0 (4 px), 4 singletons in A, segment b = columns 2-3 (8 px).
    # sum p^2 = (16 + 4 * 1 + 64) / 256 = 84/256 = sum s^2 (merge = 1);
    # sum t^2 = 128/256: split = 84/128 = 21/32, V_rand = (42/32) / (53/32) = 42/53.
    gt = np.array([[1, 1, 2, 2]] * 4)
    seg = np.array([[1, 0, 2, 2]] * 4)
    assert foreground_restricted_rand(seg, gt) == pytest.approx((42 / 53, 21 / 32, 1.0))
    # H(S) = 1/4 * 2 + 4 * 1/16 * 4 + 1/2 * 1 = 2 bits = H(S,T), H(T) = 1, I = 1:
    # split = 1/2, merge = 1, V_info = 1 / 1.5 = 2/3.
    assert foreground_restricted_info(seg, gt) == pytest.approx((2 / 3, 0.5, 1.0))


def test_foreground_restriction_ignores_ground_truth_boundary():
    # the segmentations differ from gt only on the gt boundary column, which is not scored
    gt = np.array([[1, 1, 0, 2, 2]] * 4)
    for seg in (np.array([[1, 1, 1, 2, 2]] * 4), np.array([[1, 1, 3, 2, 2]] * 4),
                np.array([[1, 1, 0, 2, 2]] * 4)):
        assert foreground_restricted_rand(seg, gt) == (1.0, 1.0, 1.0)
        assert foreground_restricted_info(seg, gt) == (1.0, 1.0, 1.0)


def test_contingency_table_gives_the_same_scores():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (12, 12))
    seg = rng.integers(0, 5, (12, 12))
    table = Contingency.of(seg, gt, ignore_gt=(0,))
    assert foreground_restricted_rand(table) == foreground_restricted_rand(seg, gt)
    assert foreground_restricted_info(table) == foreground_restricted_info(seg, gt)


def test_thinning_makes_a_three_pixel_membrane_one_pixel_wide():
    prob = np.zeros((5, 9))
    prob[:, 3:6] = 1.0                   # 3-pixel-wide membrane, columns 3..5
    prob[2, 1] = 1.0                     # an isolated membrane speck inside the left region
    thick = segment_membrane_map(prob, 0.5, thin=False)
    assert np.array_equal(thick == 0, prob >= 0.5)
    thin = segment_membrane_map(prob, 0.5)
    line = np.zeros(prob.shape, bool)
    line[:, 4] = True                    # the middle column stays boundary, the speck is gone
    assert np.array_equal(thin == 0, line)
    left, right = np.unique(thin[:, :4]), np.unique(thin[:, 5:])
    assert len(left) == len(right) == 1 and left[0] != right[0]
    # the regions are those of the unthinned map, grown: every labelled pixel keeps its region
    assert np.array_equal(thin[thick > 0] == left[0], thick[thick > 0] == thick[0, 0])


def test_segmentation_is_four_connected_and_slice_wise():
    diagonal = np.array([[0.0, 1.0], [1.0, 0.0]])   # two cells touching at a corner only
    ids = segment_membrane_map(diagonal, 0.5, thin=False)
    assert ids[0, 0] != ids[1, 1] and ids[0, 0] > 0 and ids[1, 1] > 0
    stack = np.zeros((2, 4, 5))
    stack[:, :, 2] = 1.0
    ids = segment_membrane_map(stack, 0.5)
    assert ids.shape == stack.shape
    first, second = set(np.unique(ids[0])) - {0}, set(np.unique(ids[1])) - {0}
    assert len(first) == len(second) == 2 and not first & second   # ids distinct per slice
    # a slice without any non-membrane pixel is one region after thinning, all boundary before
    full = np.ones((3, 3))
    assert np.array_equal(segment_membrane_map(full, 0.5), np.ones((3, 3), np.int64))
    assert not segment_membrane_map(full, 0.5, thin=False).any()


def test_isbi_scores_by_hand():
    # 4 x 5 image, true membrane in column 2; the map says membrane in columns 2 and 3.
    truth = np.zeros((4, 5), bool)
    truth[:, 2] = True
    prob = np.zeros((4, 5))
    prob[:, 2:4] = 0.8
    result = isbi_scores(prob, truth, thresholds=(0.5, 0.9), thin=False)
    # threshold 0.5, unthinned: gt A = columns 0-1, B = columns 3-4 (8 px each, n = 16);
    # segments a = columns 0-1 (8 px), b = column 4 (4 px), column 3 (4 px of B) singletons.
    # In px^2: sum p^2 = 8^2 + 4^2 + 4 = 84, sum s^2 = 64 + 16 + 4 = 84, sum t^2 = 64 + 64 = 128:
    # split = 84/128 = 21/32, merge = 1, V_rand = 42/53.
    assert result['v_rand_split'][0] == pytest.approx(21 / 32)
    assert result['v_rand_merge'][0] == pytest.approx(1.0)
    # threshold 0.9: no membrane, one region over A and B: sum p^2 = 128 = sum t^2, sum s^2 = 256:
    # split 1, merge 1/2, V_rand = 2/3; V_info: H(S) = 0, I = 0: split 1, merge 0.
    assert result['v_rand'][1] == pytest.approx(2 / 3)
    assert (result['v_info_split'][1], result['v_info_merge'][1]) == pytest.approx((1.0, 0.0))
    assert result['best_v_rand'] == pytest.approx(2 * 21 / 32 / (1 + 21 / 32))
    assert result['best_v_rand_threshold'] == 0.5
    # pixel error at 0.5: column 3 wrong, 4 of 20 = 0.2; membrane F1: tp 4, fp 4, fn 0 -> 2/3
    assert result['pixel_error'] == pytest.approx(0.2)
    assert result['membrane_f1'] == pytest.approx(2 / 3)
    # after thinning the two-column membrane becomes one line: columns 2 or 3, and the
    # scored pixels (all but column 2) are then split at most by that line
    thinned = isbi_scores(prob, truth, thresholds=(0.5,))
    assert thinned['v_rand'][0] >= result['v_rand'][0]
    perfect = isbi_scores(truth.astype(float), truth)
    assert perfect['best_v_rand'] == perfect['best_v_info'] == 1.0


def test_challenge_pixel_error_by_hand():
    """1 - the best F-score of the cell pixels (the challenge's pixel error), not the
    fraction of wrong pixels."""
    # two 1 x 5 slices; true membrane at x = 2 in both: 8 cell pixels
    truth = np.zeros((2, 1, 5), bool)
    truth[:, :, 2] = True
    prob = np.array([[[0.0, 0.3, 0.9, 0.6, 0.0]], [[0.0, 0.0, 0.2, 0.0, 0.0]]])
    # cell map 1 - p: [1, .7, .1, .4, 1], [1, 1, .8, 1, 1]
    # t = 0.5: cells {0, 1, 4} + {0, 1, 2, 3, 4}: 8 proposed, 7 hits -> F = 14/16
    # t = 0.3: also x = 3 of slice 0: 9 proposed, 8 hits -> F = 16/17 (the best)
    # t = 0.9: {0, 4} + {0, 1, 3, 4}: 6 proposed, 6 hits -> F = 12/14
    result = challenge_pixel_error(prob, truth, thresholds=(0.3, 0.5, 0.9))
    assert result['f_score'] == pytest.approx(16 / 17)
    assert result['pixel_error'] == pytest.approx(1 / 17) and result['threshold'] == 0.3
    assert challenge_pixel_error(prob, truth, (0.5,))['pixel_error'] == pytest.approx(2 / 16)
    # the fraction of misclassified pixels differs: 2 of 10 at p >= 0.5
    scores = isbi_scores(prob, truth, thresholds=(0.3, 0.5, 0.9), thin=False)
    assert scores['pixel_error'] == pytest.approx(0.2)
    assert scores['challenge_pixel_error'] == pytest.approx(1 / 17)
    assert scores['challenge_pixel_error_threshold'] == 0.3
    assert challenge_pixel_error(truth.astype(float), truth)['pixel_error'] == 0.0


def test_bad_arguments_are_named():
    truth = np.zeros((4, 5), bool)
    with pytest.raises(ShapeError, match='truth_membrane'):
        isbi_scores(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match='membrane_probability'):
        isbi_scores(np.full((4, 5), 255.0), truth)
    with pytest.raises(ValueError, match='membrane_probability'):
        isbi_scores(np.zeros(5), np.zeros(5, bool))
    with pytest.raises(ValueError, match='labels == 0'):
        isbi_scores(np.zeros((4, 5)), np.full((4, 5), 255))
    with pytest.raises(ValueError, match='thresholds'):
        isbi_scores(np.zeros((4, 5)), truth, thresholds=())
    with pytest.raises(ValueError, match='seg has shape'):
        foreground_restricted_rand(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match='gt'):
        foreground_restricted_info(np.zeros((2, 2)))


@pytest.mark.skipif(not ISBI.exists(), reason='ISBI 2012 stack not in $ELEKTRONN2_DATA/em')
def test_isbi_stack_truth_against_itself_and_thresholded_raw():
    h5py = pytest.importorskip('h5py')
    with h5py.File(ISBI, 'r') as f:
        labels = f['train/labels'][:2]          # 0 = membrane, 255 = cell
        raw = f['train/raw'][:2]
    truth = labels == 0
    perfect = isbi_scores(truth.astype(np.float64), truth)
    assert perfect['thresholds'] == list(ISBI_THRESHOLDS)
    assert perfect['best_v_rand'] == pytest.approx(1.0, abs=1e-12)
    assert perfect['best_v_info'] == pytest.approx(1.0, abs=1e-12)
    assert perfect['pixel_error'] == 0.0 and perfect['membrane_f1'] == 1.0
    dark_is_membrane = 1.0 - raw / 255.0          # membranes are dark in EM
    raw_scores = isbi_scores(dark_is_membrane, truth)
    assert 0.0 < raw_scores['best_v_rand'] < 0.95
    assert 0.0 < raw_scores['best_v_info'] < 0.95
    assert raw_scores['pixel_error'] > 0.0
