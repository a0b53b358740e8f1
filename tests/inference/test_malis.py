"""MALIS pair counts against brute force; the loss and its gradient."""
import itertools

import numpy as np
import pytest
import scipy.sparse as sparse
import torch
from scipy.sparse.csgraph import connected_components

from elektronn2.data.labels import ids2affinities, offset_slices
from elektronn2.errors import ShapeError
from elektronn2.inference.malis import malis_loss, malis_weights


def brute_force_counts(affinities, ids, nhood):
    """For each edge in order of decreasing affinity, recompute the components of the graph
    of all edges so far; pairs of labelled voxels that it newly joins count at that edge."""
    shape, n = ids.shape, ids.size
    voxel = np.arange(n).reshape(shape)
    edges = []  # (affinity, flat index into affinities, u, v)
    flat_index = np.arange(affinities.size).reshape(affinities.shape)
    for k, offset in enumerate(nhood):
        here, there = offset_slices(shape, offset)
        edges += zip(affinities[k][here].ravel(), flat_index[k][here].ravel(),
                     voxel[here].ravel(), voxel[there].ravel())
    edges.sort(key=lambda e: -e[0])
    labels = ids.ravel()
    pos, neg = np.zeros(affinities.size, int), np.zeros(affinities.size, int)
    before = np.arange(n)
    for t in range(len(edges)):
        u = [e[2] for e in edges[:t + 1]]
        v = [e[3] for e in edges[:t + 1]]
        _, comp = connected_components(sparse.coo_array((np.ones(t + 1), (u, v)), shape=(n, n)),
                                       directed=False)
        for a, b in itertools.combinations(np.flatnonzero(labels), 2):
            if comp[a] == comp[b] and before[a] != before[b]:
                if labels[a] == labels[b]:
                    pos[edges[t][1]] += 1
                else:
                    neg[edges[t][1]] += 1
        before = comp
    return pos.reshape(affinities.shape), neg.reshape(affinities.shape)


@pytest.mark.parametrize('shape, nhood', [
    ((4, 5), None),
    ((2, 3, 4), None),
    ((3, 5), [[-1, 0], [0, -1], [0, -2]]),   # with a long-range edge
])
def test_pair_counts_equal_brute_force(shape, nhood):
    rng = np.random.default_rng(sum(shape))
    ids = rng.integers(0, 4, shape)  # 0 = unlabelled
    n_edges = len(shape) if nhood is None else len(nhood)
    affinities = rng.random((n_edges,) + shape)
    pos, neg = malis_weights(affinities, ids, nhood)
    nhood_array = -np.eye(len(shape), dtype=int) if nhood is None else np.array(nhood)
    expected_pos, expected_neg = brute_force_counts(affinities, ids, nhood_array)
    np.testing.assert_array_equal(pos, expected_pos)
    np.testing.assert_array_equal(neg, expected_neg)
    labelled = ids[ids > 0]
    same = sum(c * (c - 1) // 2 for c in np.bincount(labelled))
    assert pos.sum() == same and neg.sum() == len(labelled) * (len(labelled) - 1) // 2 - same


def test_loss_is_zero_for_true_affinities_and_descends():
    rng = np.random.default_rng(0)
    ids = np.repeat(rng.integers(1, 4, (1, 3, 3)), 2, axis=1).repeat(2, axis=2)  # 6x6 blobs
    true_aff = ids2affinities(ids[0]).astype(np.float32)[None]
    assert malis_loss(torch.tensor(true_aff), ids).item() == 0
    pred = torch.tensor(rng.random(true_aff.shape, dtype=np.float32), requires_grad=True)
    for constrained in (True, False):
        loss = malis_loss(pred, torch.as_tensor(ids), constrained=constrained)
        loss.backward()
        with torch.no_grad():
            stepped = (pred - 0.5 * pred.grad).clamp(0, 1)
        assert malis_loss(stepped, ids, constrained=constrained) < loss
        pred.grad = None


def test_shape_errors():
    with pytest.raises(ShapeError, match='do not fit'):
        malis_weights(np.zeros((2, 4, 4)), np.zeros((4, 5), int))
    with pytest.raises(ShapeError, match=r'pred \(b, k, \*spatial\)'):
        malis_loss(torch.zeros(2, 4, 4), np.zeros((4, 4), int))
