"""Region adjacency graphs with exact edge statistics, and the agglomerations on them.

A graph joins segments ``1..n`` (id 0 is no segment). Each edge ``(a, b)``, ``a < b``,
carries statistics of the face-adjacent voxel pairs along the contact of a and b:

* ``sums``: the sum of the pairs' contact values (int64, in units of ``1 / (2 * QUANTUM)``
  of the boundary probability: a pair (p, q) contributes ``q(b[p]) + q(b[q])`` with
  ``q(v) = round(v * QUANTUM)``), so that the mean contact is ``sums / counts / 2 / QUANTUM``;
* ``counts``: the number of pairs;
* ``saddles``: the lowest ``max(q(b[p]), q(b[q]))`` over the pairs (the pass height);
* ``histograms`` (optional, for :mod:`.edge_model`): per edge the number of pairs whose
  mean ``(q(b[p]) + q(b[q])) / 2 / QUANTUM`` falls in each of ``bins`` equal bins of [0, 1].

Integer sums, counts and minima are exact whatever order the voxel pairs are visited in, so the
statistics of a volume are the same whether they are counted at once or block by block
and added up (:meth:`RegionGraph.concat`). Everything decided on a graph (the order of
merges, ties) is then a function of the volume alone.

Agglomerations (each returns the representative of every id ``0..n``):

* :func:`seeded_cut`: Kruskal on the pass heights; two regions are joined unless both
  hold a seed (a watershed cut of the region graph: unseeded regions flow into the seeded
  region they reach over the lowest pass);
* :func:`mean_linkage`: the pair with the lowest mean contact is joined first and the joined
  region's contacts are the unions of its parts', while that mean is below a threshold;
* :func:`absorb_small`: regions of fewer voxels than a minimum join the neighbour behind
  their lowest pass, the smallest first.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

#: boundary values are counted in steps of 1 / QUANTUM
QUANTUM = 2 ** 23


def quantise(values: np.ndarray) -> np.ndarray:
    """int64 ``round(values * QUANTUM)`` of probabilities in [0, 1] (clipped)."""
    return np.rint(np.clip(np.asarray(values, np.float64), 0, 1) * QUANTUM).astype(np.int64)


@dataclass(frozen=True)
class RegionGraph:
    """Edges ``pairs`` (m, 2) with ``pairs[:, 0] < pairs[:, 1]``, unique, sorted, and their
    ``sums``, ``counts``, ``saddles`` (m,) int64 and ``histograms`` (m, bins) int64 or None;
    see the module docstring."""
    pairs: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    saddles: np.ndarray
    histograms: np.ndarray | None = None

    @classmethod
    def empty(cls, bins: int = 0) -> RegionGraph:
        none = np.zeros(0, np.int64)
        return cls(np.zeros((0, 2), np.int64), none, none, none,
                   np.zeros((0, bins), np.int64) if bins else None)

    @classmethod
    def of_pairs(cls, first: np.ndarray, second: np.ndarray, values: np.ndarray,
                 saddles: np.ndarray, counts: np.ndarray | None = None, bins: int = 0,
                 histograms: np.ndarray | None = None) -> RegionGraph:
        """The graph of voxel pairs (or partial edges) ``first``-``second`` with their
        contact values and pass heights; pairs within one region and with id 0 are dropped.

        ``bins`` > 0: count each voxel pair's mean into the edge's histogram of that many
        bins; ``histograms`` (k, bins): the histograms of partial edges, added up instead.
        """
        first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
        keep = (first != second) & (first != 0) & (second != 0)
        pairs = np.stack([np.minimum(first, second)[keep], np.maximum(first, second)[keep]], 1)
        counts = np.ones(len(pairs), np.int64) if counts is None else np.asarray(counts)[keep]
        if histograms is not None:
            bins = histograms.shape[1]
        if not len(pairs):
            return cls.empty(bins)
        unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        order = np.argsort(inverse, kind='stable')
        starts = np.searchsorted(inverse[order], np.arange(len(unique)))
        values = np.asarray(values, np.int64)[keep]
        summed = None
        if bins:
            summed = np.zeros((len(unique), bins), np.int64)
            if histograms is None:   # a voxel pair's mean (values / 2 / QUANTUM) in [0, 1]
                np.add.at(summed, (inverse, np.minimum(values * bins // (2 * QUANTUM),
                                                       bins - 1)), 1)
            else:
                np.add.at(summed, inverse, np.asarray(histograms, np.int64)[keep])
        return cls(unique, _int_sum(inverse, values, len(unique)),
                   _int_sum(inverse, counts, len(unique)),
                   np.minimum.reduceat(np.asarray(saddles, np.int64)[keep][order], starts),
                   summed)

    @classmethod
    def concat(cls, graphs: list[RegionGraph]) -> RegionGraph:
        """The sum of graphs over disjoint sets of voxel pairs (e.g. of blocks); all with
        histograms of the same bins, or all without."""
        kinds = {None if g.histograms is None else g.histograms.shape[1] for g in graphs}
        if len(kinds) > 1:
            raise ValueError(f"graphs with different histogram bins {sorted(map(str, kinds))}")
        bins = kinds.pop() if kinds else None
        graphs = [g for g in graphs if len(g.pairs)]
        if not graphs:
            return cls.empty(bins or 0)
        pairs = np.concatenate([g.pairs for g in graphs])
        return cls.of_pairs(pairs[:, 0], pairs[:, 1], np.concatenate([g.sums for g in graphs]),
                            np.concatenate([g.saddles for g in graphs]),
                            np.concatenate([g.counts for g in graphs]),
                            histograms=None if bins is None else
                            np.concatenate([g.histograms for g in graphs]))

    def relabel(self, mapping: np.ndarray) -> RegionGraph:
        """The graph between the regions ``mapping[id]`` (edges inside one region vanish)."""
        return self.of_pairs(mapping[self.pairs[:, 0]], mapping[self.pairs[:, 1]], self.sums,
                             self.saddles, self.counts, histograms=self.histograms)

    @property
    def means(self) -> np.ndarray:
        """Mean contact value of every edge, as a probability."""
        return self.sums / np.maximum(self.counts, 1) / (2 * QUANTUM)


def _int_sum(inverse: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Exact int64 sums of ``values`` per group ``inverse`` (no float rounding)."""
    out = np.zeros(n, np.int64)
    np.add.at(out, inverse, np.asarray(values, np.int64))
    return out


def roots(parent: np.ndarray) -> np.ndarray:
    """Every index followed to the end of its ``parent`` chain (pointer jumping)."""
    parent = parent.copy()
    while True:
        jumped = parent[parent]
        if np.array_equal(jumped, parent):
            return parent
        parent = jumped


def find(parent: list[int], a: int) -> int:
    """The root of ``a`` in the union-find forest ``parent`` (halving the path on the way)."""
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def seeded_cut(n: int, graph: RegionGraph, seeded: np.ndarray) -> np.ndarray:
    """Representatives (n + 1,) after joining regions over their passes, lowest first
    (ties: smaller ids first), never two seeded ones; ``seeded`` (n + 1,) bool."""
    parent = list(range(n + 1))
    has_seed = [bool(s) for s in seeded]
    order = np.lexsort((graph.pairs[:, 1], graph.pairs[:, 0], graph.saddles))
    for a, b in graph.pairs[order].tolist():
        a, b = find(parent, a), find(parent, b)
        if a == b or (has_seed[a] and has_seed[b]):
            continue
        if b < a:
            a, b = b, a
        parent[b] = a
        has_seed[a] = has_seed[a] or has_seed[b]
    return roots(np.asarray(parent, np.int64))


def mean_linkage(n: int, graph: RegionGraph, threshold: float) -> np.ndarray:
    """Representatives (n + 1,) after mean-linkage agglomeration below ``threshold``.

    The pair with the weakest mean contact is joined first; the joined region's contact
    with each neighbour is the union of both parts' contacts (mean over all their voxel
    pairs), and the weakest pair is looked up again. A neuron that touches another
    through a small gap in the boundary and along a wide, clear boundary elsewhere is
    therefore not chained to it, as joining every weak contact at once would do.
    """
    contacts: dict[int, dict[int, list[int]]] = {}
    heap = []
    for (a, b), total, count in zip(graph.pairs.tolist(), graph.sums.tolist(),
                                    graph.counts.tolist()):
        edge = [total, count]  # shared by both directions
        contacts.setdefault(a, {})[b] = contacts.setdefault(b, {})[a] = edge
        heap.append((total / count, a, b))
    heapq.heapify(heap)
    limit = threshold * 2 * QUANTUM
    parent = np.arange(n + 1)
    while heap and heap[0][0] < limit:
        mean, a, b = heapq.heappop(heap)
        current = contacts.get(a, {}).get(b)
        if current is None or current[0] / current[1] != mean:  # joined already or outdated
            continue
        if len(contacts[a]) < len(contacts[b]):
            a, b = b, a                  # keep the region with more neighbours
        parent[b] = a
        del contacts[a][b]
        for c, (total, count) in contacts.pop(b).items():
            if c == a:
                continue
            del contacts[c][b]
            joined = contacts[a].get(c)
            if joined is None:
                joined = contacts[a][c] = contacts[c][a] = [total, count]
            else:
                joined[0] += total
                joined[1] += count
            heapq.heappush(heap, (joined[0] / joined[1], min(a, c), max(a, c)))
    return roots(parent)


def absorb_small(n: int, graph: RegionGraph, sizes: np.ndarray, min_size: int) -> np.ndarray:
    """Representatives (n + 1,) after every region under ``min_size`` voxels joined the
    neighbour behind its lowest pass (ties: the smaller id), the smallest region first
    (ties: the smaller id); a region without neighbours stays. ``sizes`` (n + 1,)."""
    passes: dict[int, dict[int, int]] = {}
    for (a, b), saddle in zip(graph.pairs.tolist(), graph.saddles.tolist()):
        passes.setdefault(a, {})[b] = passes.setdefault(b, {})[a] = saddle
    size = [int(s) for s in sizes]
    heap = [(size[i], i) for i in range(1, n + 1) if size[i] < min_size and i in passes]
    heapq.heapify(heap)
    parent = np.arange(n + 1)
    while heap:
        current, a = heapq.heappop(heap)
        if parent[a] != a or current != size[a] or a not in passes:
            continue                     # joined already, grown since, or isolated
        b = min(passes[a], key=lambda c: (passes[a][c], c))
        parent[a] = b
        size[b] += size[a]
        for c, saddle in passes.pop(a).items():
            del passes[c][a]
            if c != b:
                low = min(saddle, passes[b].get(c, saddle))
                passes[b][c] = passes[c][b] = low
        if size[b] < min_size and passes.get(b):
            heapq.heappush(heap, (size[b], b))
    return roots(parent)


def first_member_numbering(representative: np.ndarray) -> np.ndarray:
    """Ids 1..m per id 0..n (0 stays 0), numbered in the order of each group's smallest id."""
    out = np.zeros(len(representative), np.int64)
    groups = representative[1:]
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind='stable')] = np.arange(1, len(first) + 1)
    out[1:] = rank[inverse.ravel()]
    return out
