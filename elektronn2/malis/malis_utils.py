"""ELEKTRONN2's ``elektronn2.malis.malis_utils`` on this package's affinity-graph code.

Affinity graphs are ``(k, *spatial)`` arrays: edge k of voxel p joins p and p + nhood[k]
(``nhood`` is ``(k, ndim)``; the convention of :func:`elektronn2.data.labels.ids2affinities`).
Where ELEKTRONN2 handled only 3-D volumes, these functions take any number of axes.

Where the original's compiled code differed from its evident intent, the intent is kept:
the neighbourhoods of :func:`mknhood2d` / :func:`mknhood3d` leave out the zero offset;
the seeded watershed visits edges in order of affinity; segment sizes are indexed by the
returned ids (``sizes[0]``: background, also when there is none).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.labels import affinity_components, ids2affinities, offset_slices
from ..errors import ConfigError, ShapeError
from ..inference import malis as _malis
from ..inference.metrics import Contingency

__all__ = ['compute_V_rand_N2', 'mknhood2d', 'mknhood3d', 'mknhood3d_aniso', 'nodelist_from_shape',
           'bmap_to_affgraph', 'bmappred_to_affgraph', 'seg_to_affgraph', 'AffgraphToSeg',
           'affgraph_to_seg', 'MalisWeights', 'malis_weights', 'affgraph_to_edgelist',
           'watershed_from_affgraph']

#: affinities at most this large count as "no edge" (the original's float zero test)
_ZERO = 1e-5


def compute_V_rand_N2(seg_true: np.ndarray, seg_pred: np.ndarray  # noqa: N802
                      ) -> tuple[float, float, float]:
    """Rand scores over all voxel pairs (self-pairs included, hence N²); larger is better.

    Voxels with ``seg_true == 0`` are left out; ``seg_pred`` id 0 is an ordinary segment.
    With p_ij the joint frequency of (true id i, predicted id j):
    split = Σp² / Σ(predicted segment frequency)², merge = Σp² / Σ(true object frequency)²,
    V_rand = their harmonic mean.

    Returns:
        (V_rand, V_rand_split, V_rand_merge)
    """
    table = Contingency.of(seg_pred, seg_true, ignore_gt=(0,))
    n = table.n_voxels
    seg_size, gt_size, _, _ = table.sizes()
    joint = np.sum((table.counts / n) ** 2)
    pred_sq, true_sq = np.sum((seg_size / n) ** 2), np.sum((gt_size / n) ** 2)
    return float(2 * joint / (pred_sq + true_sq)), float(joint / pred_sq), float(joint / true_sq)


def _half_ball(radius: float, ndim: int) -> np.ndarray:
    """Integer offsets within ``radius`` that precede 0 when ordered by their reversed
    coordinates, last first (the order of ELEKTRONN2's neighbourhoods)."""
    r = int(np.ceil(radius))
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * ndim, indexing='ij'), -1).reshape(-1, ndim)
    inside = grid[(grid ** 2).sum(1) <= radius ** 2]
    ordered = inside[np.lexsort(inside.T)]        # last column is the primary key
    before_zero = ordered[:len(ordered) // 2]
    return np.ascontiguousarray(before_zero[::-1], dtype=np.int32)


def mknhood2d(radius: float = 1) -> np.ndarray:
    """(k, 2) int32 offsets of a 2-D dense affinity graph: one of each ± pair within
    ``radius`` (radius 1: [[-1, 0], [0, -1]])."""
    return _half_ball(radius, 2)


def mknhood3d(radius: float = 1) -> np.ndarray:
    """(k, 3) int32 offsets of a 3-D dense affinity graph: one of each ± pair within
    ``radius`` (radius 1: the predecessor along z, y, x)."""
    return _half_ball(radius, 3)


def mknhood3d_aniso(radiusxy: float = 1, radiusxy_zminus1: float = 1.8) -> np.ndarray:
    """(k, 3) int32 offsets for anisotropic volumes (z, y, x): :func:`mknhood3d` of
    ``radiusxy``, plus edges to the previous z slice at every in-plane offset (both signs)
    of :func:`mknhood2d` of ``radiusxy_zminus1``."""
    same = mknhood3d(radiusxy)
    plane = mknhood2d(radiusxy_zminus1)
    previous = np.concatenate([plane, -plane])
    return np.ascontiguousarray(np.concatenate(
        [same, np.concatenate([np.full((len(previous), 1), -1), previous], 1)]), dtype=np.int32)


def _nhood(nhood, ndim: int) -> np.ndarray:
    nhood = np.asarray(nhood, dtype=np.int64)
    if nhood.ndim != 2 or nhood.shape[1] != ndim:
        raise ShapeError(f"nhood of shape {nhood.shape} does not fit a {ndim}-D volume; "
                         f"it needs one row of {ndim} offsets per edge, e.g. mknhood3d()")
    return nhood


def nodelist_from_shape(shape: Sequence[int], nhood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both ends of every edge of the affinity graph of a volume of ``shape``.

    Returns:
        (node1, node2): int32 arrays (k, *shape) of flat voxel indices; node1 is the voxel
        itself, node2 the voxel at + nhood[k] (-1 where that lies outside the volume).
    """
    shape = tuple(int(s) for s in shape)
    nhood = _nhood(nhood, len(shape))
    nodes = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    node1 = np.broadcast_to(nodes, (len(nhood),) + shape).copy()
    node2 = np.full(node1.shape, -1, dtype=np.int32)
    for k, offset in enumerate(nhood):
        here, there = offset_slices(shape, offset)
        node2[k][here] = nodes[there]
    return node1, node2


def _pairwise_max(volume: np.ndarray, nhood: np.ndarray, fill, dtype) -> np.ndarray:
    """(k, *shape): max(volume[p], volume[p + nhood[k]]) in the volume, ``fill`` outside."""
    out = np.full((len(nhood),) + volume.shape, fill, dtype=dtype)
    for k, offset in enumerate(nhood):
        here, there = offset_slices(volume.shape, offset)
        out[k][here] = np.maximum(volume[here], volume[there])
    return out


def bmap_to_affgraph(bmap: np.ndarray, nhood: np.ndarray) -> np.ndarray:
    """int32 affinities (k, *shape) from a boundary map (1: boundary/ECS, 0: interior):
    1 where neither end of the edge is boundary; 0 across boundaries and outside."""
    bmap = np.asarray(bmap)
    nhood = _nhood(nhood, bmap.ndim)
    if np.abs(nhood).max(initial=0) > 1:
        raise ConfigError("bmap_to_affgraph: edges longer than one voxel cross boundaries a "
                          "boundary map cannot show; make the affinities from ids with "
                          "seg_to_affgraph")
    return 1 - _pairwise_max(bmap.astype(np.int32), nhood, 1, np.int32)


def bmappred_to_affgraph(pred: np.ndarray, nhood: np.ndarray) -> np.ndarray:
    """float32 affinities (k, *shape) from a boundary probability map: 1 - the larger
    boundary probability of the two ends, 0 outside. Integer maps are read as /255."""
    pred = np.asarray(pred)
    nhood = _nhood(nhood, pred.ndim)
    pred = pred.astype(np.float32) / 255 if np.issubdtype(pred.dtype, np.integer) else pred
    aff = 1 - _pairwise_max(pred.astype(np.float32), nhood, 1, np.float32)
    return aff


def seg_to_affgraph(seg_gt: np.ndarray, nhood: np.ndarray) -> np.ndarray:
    """int16 affinities (k, *shape) from ids: 1 where both ends have the same id > 0."""
    seg_gt = np.asarray(seg_gt)
    return ids2affinities(seg_gt, _nhood(nhood, seg_gt.ndim), background_id=0).astype(np.int16)


def _with_background(ids: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 ids and int64 sizes indexed by id (sizes[0]: background voxels)."""
    background = ids.size - int(np.sum(sizes))
    return ids.astype(np.int32), np.concatenate([[background], sizes]).astype(np.int64)


class AffgraphToSeg:
    """``AffgraphToSeg()(affinity_gt, nhood, size_thresh=1)`` -> (ids, sizes): connected
    components of the edges with non-zero affinity
    (:func:`elektronn2.data.labels.affinity_components`); components of <= ``size_thresh``
    voxels become 0. ids are int32 (*spatial), sizes[i] the voxels of id i."""

    def __call__(self, affinity_gt: np.ndarray, nhood: np.ndarray,
                 size_thresh: int = 1) -> tuple[np.ndarray, np.ndarray]:
        affinity_gt = np.asarray(affinity_gt)
        edges = np.where(np.abs(affinity_gt) > _ZERO, affinity_gt, 0)
        return _with_background(*affinity_components(edges, nhood, int(size_thresh)))


affgraph_to_seg = AffgraphToSeg()


class MalisWeights:
    """``MalisWeights()(affinity_pred, affinity_gt, seg_gt, nhood, unrestrict_neg=False)``
    -> (pos_counts, neg_counts), each of ``affinity_pred``'s shape (k, *spatial).

    Positive counts are taken on min(pred, gt affinities), negative counts on
    max(pred, gt affinities), or on the predictions alone with ``unrestrict_neg``
    (:func:`elektronn2.inference.malis.malis_weights`; id 0 is unlabelled).
    """

    def __call__(self, affinity_pred: np.ndarray, affinity_gt: np.ndarray, seg_gt: np.ndarray,
                 nhood: np.ndarray, unrestrict_neg: bool = False) -> tuple[np.ndarray, np.ndarray]:
        pred = np.asarray(affinity_pred, dtype=np.float32)
        gt = np.asarray(affinity_gt, dtype=np.float32)
        pos, _ = _malis.malis_weights(np.minimum(pred, gt), seg_gt, nhood)
        _, neg = _malis.malis_weights(pred if unrestrict_neg else np.maximum(pred, gt), seg_gt, nhood)
        return pos, neg


malis_weights = MalisWeights()


def affgraph_to_edgelist(aff: np.ndarray, nhood: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (node1, node2, affinity) of every edge (:func:`nodelist_from_shape`; node2 is
    -1 for edges leaving the volume)."""
    aff = np.asarray(aff)
    node1, node2 = nodelist_from_shape(aff.shape[1:], nhood)
    return node1.ravel(), node2.ravel(), aff.ravel()


def watershed_from_affgraph(aff: np.ndarray, seeds: np.ndarray,
                            nhood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seeded watershed on affinities (:func:`elektronn2.inference.malis.affinity_watershed`):
    seeds > 0 grow along the edges of highest affinity, < 0 are masked out. Returns
    int32 ids (*spatial) and sizes[i], the voxels of id i; segments of one voxel become 0."""
    return _with_background(*_malis.affinity_watershed(aff, seeds, nhood, size_thresh=1,
                                                       threshold=_ZERO))
