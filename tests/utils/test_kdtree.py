"""DynamicKDT against brute force: knn and radius queries while points are appended."""
import numpy as np
import pytest

from elektronn2.errors import DataError
from elektronn2.utils.kdtree import DynamicKDT


def brute_knn(points, queries, k, scale=None):
    s = np.ones(points.shape[1]) if scale is None else np.asarray(scale)
    d = np.linalg.norm((queries[:, None] - points[None]) * s, axis=-1)
    order = np.argsort(d, axis=1, kind='stable')[:, :k]
    return np.take_along_axis(d, order, 1), order


@pytest.mark.parametrize('scale', [None, (2.0, 1.0, 0.5)])
def test_knn_matches_brute_force_while_appending(scale):
    rng = np.random.default_rng(1)
    tree = DynamicKDT(rebuild_threshold=50, aniso_scale=scale)
    points = np.empty((0, 3))
    queries = rng.uniform(0, 10, (40, 3))
    buffered = []
    for _ in range(12):
        new = rng.uniform(0, 10, (int(rng.integers(1, 30)), 3))
        tree.append(new)
        points = np.concatenate([points, new])
        assert len(tree) == len(points)
        k = min(5, len(points))
        dist, idx = tree.knn(queries, k=k)
        want_d, want_i = brute_knn(points, queries, k, scale)
        np.testing.assert_allclose(dist, want_d, rtol=1e-12)
        # indices may differ only between points at equal distance
        np.testing.assert_allclose(np.linalg.norm((points[idx] - queries[:, None]) *
                                                  (1 if scale is None else np.asarray(scale)),
                                                  axis=-1), want_d, rtol=1e-12)
        buffered.append(tree.n_buffered)
    assert max(buffered) > 0 and 0 in buffered[1:], f"buffer and rebuilds exercised: {buffered}"
    assert max(buffered) <= 50
    np.testing.assert_array_equal(tree.points, points)


def test_radius_matches_brute_force():
    rng = np.random.default_rng(2)
    tree = DynamicKDT(rng.uniform(0, 5, (200, 2)), rebuild_threshold=100, aniso_scale=(1.0, 3.0))
    tree.append(rng.uniform(0, 5, (60, 2)))
    assert tree.n_buffered == 60
    queries = rng.uniform(0, 5, (25, 2))
    results = tree.radius(queries, 1.2)
    scaled = tree.points * [1.0, 3.0]
    for q, (dist, idx) in zip(queries * [1.0, 3.0], results):
        d = np.linalg.norm(scaled - q, axis=1)
        assert set(idx) == set(np.flatnonzero(d <= 1.2))
        np.testing.assert_allclose(dist, d[idx])
        assert np.all(np.diff(dist) >= 0)


def test_single_queries_fewer_points_than_k_and_empty_tree():
    empty = DynamicKDT()
    dist, idx = empty.knn([0.0, 0.0], k=2)
    assert np.all(np.isinf(dist)) and np.all(idx == -1)
    tree = DynamicKDT([[0.0, 0.0], [3.0, 4.0]])
    tree.append([1.0, 0.0])
    dist, idx = tree.knn([0.0, 0.0], k=4)
    np.testing.assert_allclose(dist, [0.0, 1.0, 5.0, np.inf])
    np.testing.assert_array_equal(idx, [0, 2, 1, -1])
    dist, idx = tree.radius([0.0, 0.0], 1.5)
    np.testing.assert_array_equal(idx, [0, 2])
    tree.rebuild()
    assert tree.n_buffered == 0
    np.testing.assert_array_equal(tree.knn([0.9, 0.0], k=1)[1], [2])


def test_dimension_mismatch_is_an_error():
    tree = DynamicKDT(np.zeros((3, 3)))
    with pytest.raises(DataError, match='dimension 3'):
        tree.append(np.zeros((2, 2)))
    with pytest.raises(DataError, match='dimension 3'):
        tree.knn(np.zeros(2))
    with pytest.raises(DataError, match='rebuild_threshold'):
        DynamicKDT(rebuild_threshold=0)
