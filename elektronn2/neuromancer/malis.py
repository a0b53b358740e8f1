"""MALIS pair counts: for every edge of an affinity graph, the voxel pairs it decides.

Two voxels are connected in an affinity graph as strongly as the weakest edge on their
best path (the *maximin* edge; Turaga et al. 2009). Adding the edges in order of
decreasing affinity (Kruskal, with a union-find) merges two components at each maximin
edge; every pair of labelled voxels across the two components is decided there:
a *positive* pair if both carry the same ground-truth id, else a *negative* pair.

Edge convention (as :func:`elektronn2.data.labels.ids2affinities`): channel k of voxel p
joins p and p + nhood[k]. Ground-truth id 0 is unlabelled: its voxels are in the graph
but count in no pair. Used by :class:`.loss.MalisNLL` and
:mod:`elektronn2.inference.malis`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ShapeError


def affinity_edges(shape: tuple[int, ...], nhood: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """Every in-volume edge: (flat index into a (k, *shape) affinity array, voxel u, voxel v)."""
    coords = np.indices(shape).reshape(len(shape), -1)
    voxel = np.arange(coords.shape[1])
    flat, u, v = [], [], []
    for k, offset in enumerate(np.asarray(nhood, int)):
        there = coords + offset[:, None]
        inside = np.all((there >= 0) & (there < np.array(shape)[:, None]), axis=0)
        flat.append(k * voxel.size + voxel[inside])
        u.append(voxel[inside])
        v.append(np.ravel_multi_index(tuple(there[:, inside]), shape))
    return np.concatenate(flat), np.concatenate(u), np.concatenate(v)


def malis_pair_counts(affinity_pred: np.ndarray, gt_ids: np.ndarray,
                      nhood: np.ndarray | Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative pair counts per edge (the maximin edges of all labelled pairs).

    Args:
        affinity_pred: (k, *spatial) affinities.
        gt_ids: (*spatial) ground-truth ids; 0 = unlabelled.
        nhood: (k, ndim) edge offsets.
    Returns:
        (pos, neg): int64 arrays of ``affinity_pred``'s shape; their sums are the numbers
        of same-id and different-id pairs of labelled voxels that are connected at all.
    """
    affinity_pred, gt_ids = np.asarray(affinity_pred), np.asarray(gt_ids)
    nhood = np.asarray(nhood, int)
    if (nhood.ndim != 2 or affinity_pred.shape != (len(nhood),) + gt_ids.shape
            or nhood.shape[1] != gt_ids.ndim):
        raise ShapeError(f"affinities {affinity_pred.shape}, gt_ids {gt_ids.shape} and nhood "
                         f"{nhood.shape} do not fit: affinities must be (k, *gt_ids.shape) for "
                         f"an nhood of k offsets with {gt_ids.ndim} entries each")
    flat, u, v = affinity_edges(gt_ids.shape, nhood)
    order = np.argsort(-affinity_pred.ravel()[flat], kind='stable')
    labels = gt_ids.ravel()
    parent = np.arange(labels.size)
    # per component root: {gt id: voxel count} of its labelled voxels
    members: dict[int, dict] = {int(i): {int(labels[i]): 1} for i in np.flatnonzero(labels)}
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
