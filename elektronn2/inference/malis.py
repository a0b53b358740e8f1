"""MALIS: a loss on affinity predictions that counts the voxel pairs each edge decides.

Two voxels are connected in an affinity graph as strongly as the weakest edge on their
best path (the *maximin* edge; Turaga et al. 2009). Adding the edges in order of
decreasing affinity (Kruskal, with a union-find) merges two components at each maximin
edge; every pair of labelled voxels across the two components is decided there:
a *positive* pair if both carry the same ground-truth id, else a *negative* pair.
The loss pulls each edge's affinity up by its positive count and down by its negative
count.

Edge convention (as :func:`elektronn2.data.labels.ids2affinities`): channel k of voxel p
joins p and p + nhood[k]. Ground-truth id 0 is unlabelled: its voxels are in the graph
but count in no pair.

The same graph gives a segmentation by :func:`affinity_watershed` (seeded watershed: edges
in order of decreasing affinity join unlabelled regions to seeds, never two seeds; for
connected components see :func:`elektronn2.data.labels.affinity_components`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numba
import numpy as np

from ..data.labels import affinity_nhood, ids2affinities
from ..errors import ShapeError
from ..neuromancer.malis import affinity_edges as _edges
from ..neuromancer.malis import malis_pair_counts

if TYPE_CHECKING:
    import torch


def _check(affinities: np.ndarray, gt_ids: np.ndarray, nhood) -> np.ndarray:
    nhood = affinity_nhood(gt_ids.ndim) if nhood is None else np.asarray(nhood, int)
    if affinities.shape != (len(nhood),) + gt_ids.shape or nhood.shape[1:] != (gt_ids.ndim,):
        raise ShapeError(f"affinities {affinities.shape}, gt_ids {gt_ids.shape} and nhood "
                         f"{nhood.shape} do not fit: affinities must be (k, *gt_ids.shape) for "
                         f"an nhood of k offsets with {gt_ids.ndim} entries each")
    return nhood


def malis_weights(affinity_pred: np.ndarray, gt_ids: np.ndarray,
                  nhood: np.ndarray | Sequence[Sequence[int]] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative pair counts per edge (the maximin edges of all labelled pairs).

    Args:
        affinity_pred: (k, *spatial) predicted affinities.
        gt_ids: (*spatial) ground-truth ids; 0 = unlabelled.
        nhood: (k, ndim) edge offsets (default: the predecessor along each axis).
    Returns:
        (pos, neg): int64 arrays of ``affinity_pred``'s shape; their sums are the numbers
        of same-id and different-id pairs of labelled voxels that are connected at all
        (:func:`elektronn2.neuromancer.malis.malis_pair_counts`).
    """
    affinity_pred, gt_ids = np.asarray(affinity_pred), np.asarray(gt_ids)
    return malis_pair_counts(affinity_pred, gt_ids, _check(affinity_pred, gt_ids, nhood))


def malis_loss(pred: torch.Tensor, gt_ids: np.ndarray | torch.Tensor,
               nhood: np.ndarray | Sequence[Sequence[int]] | None = None,
               constrained: bool = True) -> torch.Tensor:
    """MALIS loss (torch scalar) of affinity predictions, differentiable in ``pred``.

    ``sum(pos * (1 - pred)**2 + neg * pred**2) / sum(pos + neg)`` with the pair counts of
    :func:`malis_weights`. ``constrained`` (Funke et al. 2018) counts positive pairs on
    min(pred, true affinities) and negative pairs on max(pred, true affinities), so each
    pass only sees errors of its own kind.

    Args:
        pred: torch tensor (b, k, *spatial) of affinities in [0, 1].
        gt_ids: array or tensor (b, *spatial) of ids; 0 = unlabelled.
        nhood: (k, ndim) edge offsets (default: the predecessor along each axis).
    """
    import torch
    gt = gt_ids.detach().cpu().numpy() if torch.is_tensor(gt_ids) else np.asarray(gt_ids)
    if pred.ndim != gt.ndim + 1 or pred.shape[0] != gt.shape[0]:
        raise ShapeError(f"malis_loss needs pred (b, k, *spatial) and gt_ids (b, *spatial); "
                         f"got {tuple(pred.shape)} and {gt.shape}")
    counts = []
    for p, g in zip(pred.detach().cpu().numpy(), gt):
        if constrained:
            true_aff = ids2affinities(g, nhood).astype(p.dtype)
            pos, _ = malis_weights(np.minimum(p, true_aff), g, nhood)
            _, neg = malis_weights(np.maximum(p, true_aff), g, nhood)
        else:
            pos, neg = malis_weights(p, g, nhood)
        counts.append((pos, neg))
    pos_t, neg_t = (torch.as_tensor(np.stack(c), dtype=pred.dtype, device=pred.device)
                    for c in zip(*counts))
    total = (pos_t + neg_t).sum().clamp(min=1)
    return (pos_t * (1 - pred) ** 2 + neg_t * pred ** 2).sum() / total


def _size_filtered(ids: np.ndarray, size_thresh: int) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` (0 = background) with segments of <= ``size_thresh`` voxels set to 0 and the
    rest renumbered 1..n in the order of their ids; and the sizes (n,) of ids 1..n."""
    labels, inverse, counts = np.unique(ids.ravel(), return_inverse=True, return_counts=True)
    keep = (counts > size_thresh) & (labels != 0)
    new_id = np.zeros(len(labels), np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1)
    return new_id[inverse].reshape(ids.shape), counts[keep]


@numba.njit(cache=True, nogil=True)
def _flood(order, u, v, labels):
    """Kruskal over edges ``order`` (decreasing affinity): join two sets unless both carry
    a seed label; a joined set takes the seed label. Writes each voxel's final label."""
    parent = np.arange(len(labels))
    for e in order:
        a, b = u[e], v[e]
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a != b and (labels[a] == 0 or labels[b] == 0):
            parent[b] = a
            labels[a] = max(labels[a], labels[b])
    for i in range(len(labels)):
        r = i
        while parent[r] != r:
            r = parent[r]
        labels[i] = labels[r]


def affinity_watershed(affinities: np.ndarray, seeds: np.ndarray,
                       nhood: np.ndarray | Sequence[Sequence[int]] | None = None,
                       size_thresh: int = 0, threshold: float = 0.0,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded watershed on the affinity graph (a maximin flooding from the seeds).

    Edges with affinity > ``threshold`` are visited in order of decreasing affinity; each
    joins the regions of its two voxels unless both already hold a seed, so every voxel
    goes to the seed it is connected to by the path of highest minimal affinity.

    Args:
        affinities: (k, *spatial) affinities (edge k of voxel p joins p and p + nhood[k]).
        seeds: (*spatial) ints: > 0 seed ids, 0 to be flooded, < 0 masked out (no edges).
        nhood: (k, ndim) edge offsets (default: the predecessor along each axis).
        size_thresh: segments of at most this many voxels become background 0.
    Returns:
        (ids, sizes): int32 ids of shape ``spatial`` (0: reached by no seed, masked or too
        small), renumbered 1..n in the order of the seed ids; the sizes (n,) of ids 1..n.
    """
    affinities, seeds = np.asarray(affinities), np.asarray(seeds)
    nhood = _check(affinities, seeds, nhood)
    flat, u, v = _edges(seeds.shape, nhood)
    marker = seeds.ravel().astype(np.int64)
    weight = affinities.ravel()[flat]
    keep = (weight > threshold) & (marker[u] >= 0) & (marker[v] >= 0)
    u, v, weight = u[keep], v[keep], weight[keep]
    order = np.argsort(-weight, kind='stable')
    labels = np.maximum(marker, 0)
    _flood(order, u, v, labels)
    return _size_filtered(labels.reshape(seeds.shape), size_thresh)
