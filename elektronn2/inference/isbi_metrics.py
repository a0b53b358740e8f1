"""The ISBI 2012 challenge's scores of 2-D membrane maps: V_rand and V_info after thinning.

Definitions (Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image
segmentation algorithms for connectomics", Front. Neuroanat. 9:142; the challenge's
evaluation in Fiji's trainableSegmentation metrics, ``RandError`` /
``VariationOfInformation``, "maximal foreground-restricted score after thinning").
S is the proposed segmentation, T the ground truth; p_ij is the fraction of scored pixels
in segment i of S and object j of T, s_i = sum_j p_ij and t_j = sum_i p_ij:

* Foreground restriction: only pixels inside a ground-truth object are scored (the
  ground-truth membrane, id 0, is left out; n = the number of the others).
* Proposal boundary pixels (segment id 0) inside the scored pixels each count as a
  segment of their own (a singleton), so a thick proposed membrane costs split score.
* V_rand_split = sum p_ij^2 / sum t_j^2, V_rand_merge = sum p_ij^2 / sum s_i^2, and
  V_rand = their harmonic mean (1 = perfect).
* V_info_split = I(S;T) / H(S), V_info_merge = I(S;T) / H(T), V_info = their harmonic
  mean. Where an entropy is 0 (one segment, or one object) nothing can be split (or
  merged) and that part is 1; Fiji instead scores 0 when either entropy is 0.
* A membrane probability map is thresholded (membrane where p >= threshold); the
  objects are the 4-connected components of non-membrane pixels, each z slice on its
  own; "after thinning" the proposed membrane is first thinned to 1-pixel-wide lines by
  a watershed (4-connected) of the flat membrane from those components, so only pixels
  where two regions meet stay boundary (isolated membrane specks and dangling ends
  join the region around them). A slice without non-membrane pixels becomes one region.
* Scores are computed per z slice and averaged over the slices (the challenge's
  "per-slice average"); the final score of a map is the best over thresholds (Fiji:
  0.0, 0.1, ..., 1.0 on the non-membrane map 1 - p, the same cuts as here).
* The challenge's (deprecated) "pixel error", the figure of its first leader board
  and of the U-Net paper (0.0611), is 1 - the maximal F-score of pixel similarity
  (Fiji's ``PixelError``): the positive class is the cell interior (label > 0, the
  proposal 1 - p > t), true and false positives and negatives counted over the whole
  stack, the best F-score over the thresholds. It is not the fraction of misclassified
  pixels (``pixel_error`` below).

Arrays are 2-D ``(y, x)`` images or ``(z, y, x)`` stacks of 2-D slices; membrane = True/1.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from ..errors import ShapeError
from .metrics import Contingency

#: Thresholds of the challenge's evaluation (0.0 to 1.0 in steps of 0.1).
ISBI_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


class SplitMerge(NamedTuple):
    """A score (harmonic mean of ``split`` and ``merge``), 1 = perfect."""
    score: float
    split: float
    merge: float


def _harmonic(split: float, merge: float) -> SplitMerge:
    score = 2 * split * merge / (split + merge) if split + merge > 0 else 0.0
    return SplitMerge(float(score), float(split), float(merge))


def _ids_table(seg: np.ndarray | Contingency, gt: np.ndarray | None) -> Contingency:
    if isinstance(seg, Contingency):
        return seg
    if gt is None:
        raise ShapeError("gt: a segmentation array needs a ground-truth id array gt (or pass "
                         "a Contingency table as seg)")
    seg, gt = np.asarray(seg), np.asarray(gt)
    if seg.shape != gt.shape:
        raise ShapeError(f"seg has shape {seg.shape} but gt has shape {gt.shape}; they must "
                         f"be equal")
    return Contingency.of(seg, gt, ignore_gt=(0,))


def _parts(table: Contingency) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Over the scored pixels: joint counts and segment sizes without the proposal-boundary
    pixels, object sizes with them, the number of proposal-boundary (singleton) pixels, n."""
    _, gt_size, _, _ = table.sizes()
    single = table.seg_ids == 0
    rest = Contingency(table.seg_ids[~single], table.gt_ids[~single], table.counts[~single])
    return (rest.counts.astype(np.float64), rest.sizes()[0].astype(np.float64),
            gt_size.astype(np.float64), float(table.counts[single].sum()), float(table.n_voxels))


def foreground_restricted_rand(seg: np.ndarray | Contingency,
                               gt: np.ndarray | None = None) -> SplitMerge:
    """V_rand (score, split, merge) of segment ids ``seg`` against object ids ``gt``
    (equal shapes; gt 0 = boundary, not scored; seg 0 = boundary, singletons); or of a
    :class:`Contingency` of the two (built with ``ignore_gt=(0,)``). NaN parts when gt
    has no object pixel. Ids are taken as given: label stack slices with distinct ids."""
    joint, seg_size, gt_size, singles, n = _parts(_ids_table(seg, gt))
    if n == 0:
        return SplitMerge(float('nan'), float('nan'), float('nan'))
    sum_p2 = np.sum(joint ** 2) + singles         # in pixels^2; the n^2 cancels
    return _harmonic(sum_p2 / np.sum(gt_size ** 2), sum_p2 / (np.sum(seg_size ** 2) + singles))


def foreground_restricted_info(seg: np.ndarray | Contingency,
                               gt: np.ndarray | None = None) -> SplitMerge:
    """V_info (score, split, merge) of ``seg`` against ``gt``; arguments and conventions as
    in :func:`foreground_restricted_rand`."""
    joint, seg_size, gt_size, singles, n = _parts(_ids_table(seg, gt))
    if n == 0:
        return SplitMerge(float('nan'), float('nan'), float('nan'))

    def entropy(sizes: np.ndarray, singletons: float = 0.0) -> float:     # bits
        p = sizes[sizes > 0] / n
        return float(-np.sum(p * np.log2(p)) + singletons / n * np.log2(n))

    h_seg, h_joint, h_gt = entropy(seg_size, singles), entropy(joint, singles), entropy(gt_size)
    mutual = max(0.0, h_seg + h_gt - h_joint)
    eps = 1e-12
    split = min(1.0, mutual / h_seg) if h_seg > eps else 1.0
    merge = min(1.0, mutual / h_gt) if h_gt > eps else 1.0
    return _harmonic(split, merge)


def _slices(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as a (z, y, x) stack, or a ValueError naming the argument."""
    if array.ndim not in (2, 3) or min(array.shape) < 1:
        raise ShapeError(f"{name} has shape {array.shape}; give a (y, x) image or a (z, y, x) "
                         f"stack of 2-D slices")
    return array if array.ndim == 3 else array[None]


def segment_membrane_map(membrane_probability: np.ndarray, threshold: float = 0.5,
                         thin: bool = True) -> np.ndarray:
    """Region ids (int64, shape of the input) of a membrane map, slice by slice.

    Membrane where ``membrane_probability >= threshold``; regions are the 4-connected
    components of the other pixels of each (y, x) slice; with ``thin`` the membrane is
    thinned to 1-pixel watershed lines between regions (see the module docstring).
    Boundary pixels are 0; ids are distinct across the slices of a stack.
    """
    prob = np.asarray(membrane_probability)
    stack = _slices(prob, 'membrane_probability')
    out = np.zeros(stack.shape, np.int64)
    next_id = 0
    for z, plane in enumerate(stack):
        membrane = plane >= threshold
        labels, count = ndimage.label(~membrane, structure=_FOUR_CONNECTED)
        if thin and count == 0:
            labels, count = np.ones(plane.shape, np.int64), 1
        elif thin and membrane.any():
            labels = watershed(membrane.astype(np.uint8), labels, connectivity=1,
                               watershed_line=True)
        out[z] = np.where(labels > 0, labels + next_id, 0)
        next_id += count
    return out.reshape(prob.shape)


def _check_maps(membrane_probability: np.ndarray,
                truth_membrane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = _slices(np.asarray(membrane_probability, dtype=np.float64), 'membrane_probability')
    truth = np.asarray(truth_membrane)
    if truth.shape != np.shape(membrane_probability):
        raise ShapeError(f"truth_membrane has shape {truth.shape} but membrane_probability "
                         f"{np.shape(membrane_probability)}; they must be equal")
    if truth.dtype != bool:
        if not np.isin(truth, (0, 1)).all():
            raise ValueError("truth_membrane must be boolean or 0/1 (membrane = True/1); "
                             "for ISBI labels (0 = membrane, 255 = cell) pass labels == 0")
        truth = truth.astype(bool)
    if not np.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise ValueError(f"membrane_probability must lie in [0, 1] (found "
                         f"{np.nanmin(prob):g} .. {np.nanmax(prob):g}); scale uint8 maps by "
                         f"1/255")
    return prob, _slices(truth, 'truth_membrane')


def isbi_scores(membrane_probability: np.ndarray, truth_membrane: np.ndarray,
                thresholds: Sequence[float] = ISBI_THRESHOLDS, thin: bool = True,
                pixel_threshold: float = 0.5) -> dict:
    """The ISBI 2012 scores of a membrane probability map against a true membrane mask.

    ``membrane_probability``: floats in [0, 1], (y, x) or (z, y, x); ``truth_membrane``:
    the same shape, membrane = True/1. For each threshold in ``thresholds`` the map is
    segmented by :func:`segment_membrane_map` (``thin``: after thinning, the challenge's
    final metric) and scored per slice against the 4-connected objects of the truth;
    lists ``v_rand``, ``v_rand_split``, ``v_rand_merge``, ``v_info``, ... hold the slice
    averages per threshold. ``best_v_rand`` / ``best_v_info`` are the maxima over the
    thresholds, with their threshold and split and merge parts. ``pixel_error`` (fraction
    of pixels misclassified) and ``membrane_f1`` (F1 of the membrane class) use
    membrane = ``membrane_probability >= pixel_threshold``.
    """
    prob, truth = _check_maps(membrane_probability, truth_membrane)
    thresholds = [float(t) for t in thresholds]
    if not thresholds or min(thresholds) < 0 or max(thresholds) > 1:
        raise ValueError(f"thresholds must be a non-empty sequence of values in [0, 1], "
                         f"got {thresholds}")
    if truth.all():
        raise ValueError("truth_membrane is membrane everywhere: there is no object to score")
    truth_ids = segment_membrane_map(truth.astype(np.float64), 0.5, thin=False)
    result: dict = {'thresholds': thresholds, 'thin': thin}
    names = ('v_rand', 'v_rand_split', 'v_rand_merge', 'v_info', 'v_info_split', 'v_info_merge')
    for name in names:
        result[name] = []
    for threshold in thresholds:
        seg = segment_membrane_map(prob, threshold, thin)
        rand, info = [], []
        for seg_z, truth_z in zip(seg, truth_ids):
            table = Contingency.of(seg_z, truth_z, ignore_gt=(0,))
            rand.append(foreground_restricted_rand(table))
            info.append(foreground_restricted_info(table))
        for prefix, values in (('v_rand', rand), ('v_info', info)):
            mean = np.nanmean(np.array(values, dtype=np.float64), axis=0)
            for name, value in zip(('', '_split', '_merge'), mean):
                result[prefix + name].append(float(value))
    for prefix in ('v_rand', 'v_info'):
        best = int(np.nanargmax(result[prefix]))
        result[f'best_{prefix}'] = result[prefix][best]
        result[f'best_{prefix}_threshold'] = thresholds[best]
        result[f'best_{prefix}_split'] = result[f'{prefix}_split'][best]
        result[f'best_{prefix}_merge'] = result[f'{prefix}_merge'][best]
    challenge = _challenge_pixel_error(prob, truth, thresholds)
    result['challenge_pixel_error'] = challenge['pixel_error']
    result['challenge_pixel_error_threshold'] = challenge['threshold']
    predicted = prob >= pixel_threshold
    true_pos = float(np.sum(predicted & truth))
    positives = float(predicted.sum() + truth.sum())
    result['pixel_threshold'] = float(pixel_threshold)
    result['pixel_error'] = float(np.mean(predicted != truth))
    result['membrane_f1'] = 2 * true_pos / positives if positives else 1.0
    return result


def challenge_pixel_error(membrane_probability: np.ndarray, truth_membrane: np.ndarray,
                          thresholds: Sequence[float] = ISBI_THRESHOLDS) -> dict[str, float]:
    """The ISBI 2012 challenge's "pixel error": 1 - the maximal F-score of the cell pixels.

    ``membrane_probability`` (y, x) or (z, y, x) in [0, 1], ``truth_membrane`` the same
    shape (membrane = True/1). For each threshold t the proposal's cell pixels are
    ``1 - membrane_probability > t``; precision and recall against the true cell pixels
    are counted over all slices together. Returns ``pixel_error`` (1 - the best F-score),
    its ``threshold`` (on the cell map 1 - p) and ``f_score``.
    """
    prob, truth = _check_maps(membrane_probability, truth_membrane)
    return _challenge_pixel_error(prob, truth, thresholds)


def _challenge_pixel_error(prob: np.ndarray, truth: np.ndarray,
                           thresholds: Sequence[float]) -> dict[str, float]:
    """:func:`challenge_pixel_error` of maps checked by ``_check_maps``."""
    cell, true_cell = 1 - prob, ~truth
    n_true = int(np.count_nonzero(true_cell))
    best = {'pixel_error': 1.0, 'threshold': float(thresholds[0]), 'f_score': 0.0}
    for threshold in thresholds:
        proposed = cell > threshold
        hits = int(np.count_nonzero(proposed & true_cell))
        n_proposed = int(np.count_nonzero(proposed))
        f_score = 2 * hits / (n_proposed + n_true) if n_proposed + n_true else 1.0
        if f_score > best['f_score']:
            best = {'pixel_error': 1 - f_score, 'threshold': float(threshold), 'f_score': f_score}
    return best
