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
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..data.labels import offset_slices
from ..errors import ShapeError

if TYPE_CHECKING:
    import torch


def _edges(shape: tuple[int, ...], nhood: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every in-volume edge: (flat index into the affinity array, voxel u, voxel v)."""
    voxel = np.arange(int(np.prod(shape))).reshape(shape)
    index = np.arange(len(nhood) * voxel.size).reshape((len(nhood),) + tuple(shape))
    flat, u, v = [], [], []
    for k, offset in enumerate(nhood):
        here, there = offset_slices(shape, offset)
        flat.append(index[k][here].ravel())
        u.append(voxel[here].ravel())
        v.append(voxel[there].ravel())
    return np.concatenate(flat), np.concatenate(u), np.concatenate(v)


def _check(affinities: np.ndarray, gt_ids: np.ndarray, nhood) -> np.ndarray:
    from ..data.labels import affinity_nhood
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
        of same-id and different-id pairs of labelled voxels that are connected at all.
    """
    affinity_pred, gt_ids = np.asarray(affinity_pred), np.asarray(gt_ids)
    nhood = _check(affinity_pred, gt_ids, nhood)
    flat, u, v = _edges(gt_ids.shape, nhood)
    order = np.argsort(-affinity_pred.ravel()[flat], kind='stable')
    labels = gt_ids.ravel()
    parent = np.arange(labels.size)
    # per component root: {gt id: voxel count} of its labelled voxels
    members: dict[int, dict] = {i: {int(labels[i]): 1} for i in np.flatnonzero(labels)}
    pos = np.zeros(affinity_pred.size, np.int64)
    neg = np.zeros(affinity_pred.size, np.int64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for e in order:
        a, b = root(u[e]), root(v[e])
        if a == b:
            continue
        ca, cb = members.pop(a, {}), members.pop(b, {})
        if len(ca) < len(cb):
            a, b, ca, cb = b, a, cb, ca
        if cb:
            same = sum(n * ca.get(i, 0) for i, n in cb.items())
            pos[flat[e]] = same
            neg[flat[e]] = sum(ca.values()) * sum(cb.values()) - same
            for i, n in cb.items():
                ca[i] = ca.get(i, 0) + n
        parent[b] = a
        if ca:
            members[a] = ca
    return pos.reshape(affinity_pred.shape), neg.reshape(affinity_pred.shape)


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
    from ..data.labels import ids2affinities
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
    pos, neg = (torch.as_tensor(np.stack(c), dtype=pred.dtype, device=pred.device)
                for c in zip(*counts))
    total = (pos + neg).sum().clamp(min=1)
    return (pos * (1 - pred) ** 2 + neg * pred ** 2).sum() / total
