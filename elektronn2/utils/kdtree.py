"""Nearest-neighbour search over a point set that grows: :class:`DynamicKDT`.

Points live in a static ``scipy.spatial.cKDTree`` plus a small buffer of recent appends
that is searched by brute force; when the buffer passes ``rebuild_threshold`` points the
tree is rebuilt over everything. Indices always refer to the order of appending.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..errors import DataError


class DynamicKDT:
    """k-nearest-neighbour and radius queries over appendable points.

    Args:
        points: initial points ``(n, d)``, or None to start empty (the first append then
            sets the dimension ``d``).
        rebuild_threshold: buffer size at which the tree is rebuilt.
        aniso_scale: per-dimension factors applied to coordinates (points and queries)
            before distances are measured, e.g. the voxel size ``(z, y, x)``; distances
            are returned in the scaled space.
        n_jobs: worker threads for tree queries (-1: all cores).
    """

    def __init__(self, points: np.ndarray | Sequence | None = None, rebuild_threshold: int = 256,
                 aniso_scale: Sequence[float] | None = None, n_jobs: int = 1):
        if rebuild_threshold < 1:
            raise DataError(f"DynamicKDT: rebuild_threshold={rebuild_threshold} must be >= 1")
        self.rebuild_threshold = int(rebuild_threshold)
        self.n_jobs = n_jobs
        self.scale = None if aniso_scale is None else np.asarray(aniso_scale, dtype=np.float64)
        self._data = np.empty((0, 0 if self.scale is None else len(self.scale)))
        self._n = 0
        self._tree: cKDTree | None = None
        self._n_tree = 0
        if points is not None:
            self.append(points)

    # --- points ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._data.shape[1]

    @property
    def _points(self) -> np.ndarray:
        return self._data[:self._n]

    @property
    def points(self) -> np.ndarray:
        """All points in appended order (unscaled, read-only view)."""
        view = self._points.view()
        view.flags.writeable = False
        return view

    @property
    def n_buffered(self) -> int:
        """Points not yet in the tree (searched by brute force)."""
        return self._n - self._n_tree

    def _as_points(self, points, what: str) -> np.ndarray:
        arr = np.asarray(points, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or (self.dim and arr.shape[1] != self.dim):
            raise DataError(f"DynamicKDT: {what} of shape {np.shape(points)} do not fit points "
                            f"of dimension {self.dim or 'd'}; pass (n, {self.dim or 'd'}) or "
                            f"({self.dim or 'd'},)")
        return arr

    def _scaled(self, arr: np.ndarray) -> np.ndarray:
        return arr if self.scale is None else arr * self.scale

    def append(self, points: np.ndarray | Sequence) -> None:
        """Add one point ``(d,)`` or several ``(n, d)``; rebuilds the tree when due."""
        arr = self._as_points(points, 'appended points')
        if self._n + len(arr) > len(self._data):          # grow the storage geometrically
            grown = np.empty((max(2 * len(self._data), self._n + len(arr), 64), arr.shape[1]))
            if self._n:
                grown[:self._n] = self._points
            self._data = grown
        self._data[self._n:self._n + len(arr)] = arr
        self._n += len(arr)
        if self.n_buffered > self.rebuild_threshold or self._tree is None:
            self.rebuild()

    def rebuild(self) -> None:
        """Put all points into the tree (empties the buffer)."""
        self._tree = cKDTree(self._scaled(self._points)) if self._n else None
        self._n_tree = self._n

    # --- queries ------------------------------------------------------------------------
    def knn(self, queries: np.ndarray | Sequence, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest points of each query: (distances, indices), each ``(n, k)``.

        Sorted by distance; where fewer than ``k`` points exist, distances are ``inf``
        and indices ``-1``. A single query ``(d,)`` gives results of shape ``(k,)``.
        """
        single = np.ndim(queries) == 1
        q = self._scaled(self._as_points(queries, 'queries'))
        dist = np.full((len(q), k), np.inf)
        idx = np.full((len(q), k), -1, dtype=np.int64)
        if self._tree is not None:
            k_tree = min(k, self._n_tree)
            d, i = self._tree.query(q, k=k_tree, workers=self.n_jobs)
            dist[:, :k_tree], idx[:, :k_tree] = d.reshape(len(q), -1), i.reshape(len(q), -1)
        if self.n_buffered:
            dist, idx = self._merge_buffer(q, dist, idx, k)
        return (dist[0], idx[0]) if single else (dist, idx)

    def _merge_buffer(self, q: np.ndarray, dist: np.ndarray, idx: np.ndarray, k: int):
        buffer = self._scaled(self._points[self._n_tree:])
        d_buf = np.linalg.norm(q[:, None, :] - buffer[None], axis=-1)
        i_buf = np.broadcast_to(np.arange(self._n_tree, self._n), d_buf.shape)
        all_d = np.concatenate([dist, d_buf], axis=1)
        all_i = np.concatenate([idx, i_buf], axis=1)
        order = np.argsort(all_d, axis=1, kind='stable')[:, :k]
        return np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)

    def radius(self, queries: np.ndarray | Sequence,
               r: float) -> list[tuple[np.ndarray, np.ndarray]] | tuple[np.ndarray, np.ndarray]:
        """Points within distance ``r`` of each query: per query (distances, indices) sorted
        by distance. A single query ``(d,)`` gives one pair instead of a list."""
        single = np.ndim(queries) == 1
        q = self._scaled(self._as_points(queries, 'queries'))
        hits = (self._tree.query_ball_point(q, r, workers=self.n_jobs) if self._tree is not None
                else [[] for _ in q])
        buffer = self._scaled(self._points[self._n_tree:])
        results = []
        for query, tree_hits in zip(q, hits):
            tree_hits = np.asarray(tree_hits, dtype=np.int64)
            d_tree = np.linalg.norm(self._scaled(self._points[tree_hits]) - query, axis=1)
            d_buf = np.linalg.norm(buffer - query, axis=1)
            near = np.flatnonzero(d_buf <= r)
            d = np.concatenate([d_tree, d_buf[near]])
            i = np.concatenate([tree_hits, near + self._n_tree])
            order = np.argsort(d, kind='stable')
            results.append((d[order], i[order]))
        return results[0] if single else results

    def __repr__(self) -> str:
        return (f"DynamicKDT({len(self)} points of dimension {self.dim}, "
                f"{self.n_buffered} buffered)")
