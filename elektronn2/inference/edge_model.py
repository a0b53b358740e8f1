"""Learned agglomeration: a logistic model of whether a contact separates two neurons.

Mean linkage (:func:`.region_graph.mean_linkage`) joins regions by one number, the mean
boundary along their contact. An edge model looks at more of the contact and of the two
regions (:data:`FEATURES`): the mean, spread and quantiles of the contact's values (from
its histogram, :class:`~.region_graph.RegionGraph`), its size, the sizes of both regions
and the contact's size relative to the smaller one; a logistic regression on the
standardised features gives the probability that the two regions belong to different
neurons (agglomeration by a classifier of region pairs, as gala, Nunez-Iglesias et al.
2013; a linear model carried over from training to test volumes better than boosted
trees and random forests on FIB-25).

* :func:`learned_linkage`: join the pair of lowest probability first; the joined region's
  contacts are the unions of its parts' (histograms and sizes add up), and those that
  came from the absorbed part are scored again (the others keep their score, computed
  with the smaller size, until they change); stop at a threshold. The statistics are
  exact integers, so the result does not depend on the blocks they were counted in.
* :func:`training_examples`: features and labels from a volume with ground truth: every
  contact of the initial regions and every contact made while the regions are joined as
  the truth says (each region labelled by the neuron most of its voxels belong to).
* :func:`fit`: the L2-regularised logistic regression (scipy's L-BFGS).
* :class:`EdgeModel`: saved as JSON (:meth:`EdgeModel.save`): feature names and numbers
  only; loading checks every key and value, nothing in the file is executed.
"""
from __future__ import annotations

import heapq
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.special import expit

from ..errors import ConfigError, DataError
from .region_graph import QUANTUM, RegionGraph, find, roots

#: histogram bins of the contact values an edge model is fitted with
HISTOGRAM_BINS = 32
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
FEATURES = ('mean', 'std', *(f'quantile_{q}' for q in QUANTILES), 'log_contact',
            'log_smaller_size', 'log_larger_size', 'contact_per_smaller_surface')
FORMAT = 'elektronn2-edge-model'
VERSION = 1


def contact_features(sums: np.ndarray, counts: np.ndarray, histograms: np.ndarray,
                     size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """(k, len(FEATURES)) float64 features of k contacts.

    Args:
        sums, counts: (k,) the contacts' :class:`~.region_graph.RegionGraph` sums and
            voxel pair counts (the exact mean).
        histograms: (k, bins) the contacts' value histograms.
        size_a, size_b: (k,) voxels of the two regions of each contact.
    """
    histograms = np.atleast_2d(histograms).astype(np.float64)
    counts = np.asarray(counts, np.float64)
    bins = histograms.shape[1]
    centres = (np.arange(bins) + 0.5) / bins
    mean = np.asarray(sums, np.float64) / counts / (2 * QUANTUM)
    spread = np.sqrt(np.maximum(histograms @ centres ** 2 / counts - mean ** 2, 0))
    cumulative = np.cumsum(histograms, 1) / counts[:, None]
    quantiles = [(np.argmax(cumulative >= q, 1) + 0.5) / bins for q in QUANTILES]
    smaller = np.minimum(size_a, size_b).astype(np.float64)
    larger = np.maximum(size_a, size_b).astype(np.float64)
    return np.column_stack([mean, spread, *quantiles, np.log(counts), np.log(smaller),
                            np.log(larger), counts / smaller ** (2 / 3)])


@dataclass(frozen=True)
class EdgeModel:
    """Logistic regression on standardised :data:`FEATURES`: P(different neurons) =
    sigmoid(((features - mean) / scale) @ weights + bias); ``bins``: of the histograms."""
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    bins: int = HISTOGRAM_BINS
    info: dict = field(default_factory=dict)

    def probability(self, features: np.ndarray) -> np.ndarray:
        """(k,) probability that each contact separates two neurons."""
        return expit((np.atleast_2d(features) - self.mean) / self.scale @ self.weights
                     + self.bias)

    def save(self, path: str | os.PathLike) -> None:
        """The model as JSON (numbers and feature names only)."""
        Path(path).write_text(json.dumps({
            'format': FORMAT, 'version': VERSION, 'features': list(FEATURES),
            'bins': self.bins, 'mean': self.mean.tolist(), 'scale': self.scale.tolist(),
            'weights': self.weights.tolist(), 'bias': float(self.bias), 'info': self.info},
            indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> EdgeModel:
        """A model saved by :meth:`save`; DataError naming the file and key if it is not one."""
        try:
            stored = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"edge model {str(path)!r}: not readable as JSON ({err})") from None
        if not isinstance(stored, dict) or stored.get('format') != FORMAT:
            raise DataError(f"edge model {str(path)!r}: 'format' is not {FORMAT!r}; fit one with "
                            f"elektronn2-fit-edge-model")
        if stored.get('version') != VERSION:
            raise DataError(f"edge model {str(path)!r}: 'version' {stored.get('version')!r}; "
                            f"this elektronn2 reads version {VERSION}")
        if stored.get('features') != list(FEATURES):
            raise DataError(f"edge model {str(path)!r}: 'features' {stored.get('features')!r} "
                            f"differ from this elektronn2's {list(FEATURES)}")
        bins = stored.get('bins')
        if not isinstance(bins, int) or not 2 <= bins <= 1024:
            raise DataError(f"edge model {str(path)!r}: 'bins' {bins!r}; an integer in [2, 1024]")
        vectors = {key: _finite_vector(path, stored, key) for key in ('mean', 'scale', 'weights')}
        if (vectors['scale'] <= 0).any():
            raise DataError(f"edge model {str(path)!r}: 'scale' must be positive")
        bias = stored.get('bias')
        if not isinstance(bias, (int, float)) or not np.isfinite(bias):
            raise DataError(f"edge model {str(path)!r}: 'bias' {bias!r} is not a finite number")
        info = stored.get('info', {})
        return cls(**vectors, bias=float(bias), bins=bins,
                   info=info if isinstance(info, dict) else {})


def _finite_vector(path, stored: dict, key: str) -> np.ndarray:
    value = stored.get(key)
    if (not isinstance(value, list) or len(value) != len(FEATURES)
            or not all(isinstance(v, (int, float)) for v in value)
            or not np.isfinite(value).all()):
        raise DataError(f"edge model {str(path)!r}: {key!r} must be a list of "
                        f"{len(FEATURES)} finite numbers, one per feature")
    return np.asarray(value, np.float64)


def fit(features: np.ndarray, different: np.ndarray, l2: float = 1.0,
        info: dict | None = None) -> EdgeModel:
    """Logistic regression of ``different`` (k,) bool on ``features`` (k, len(FEATURES)),
    standardised, with the penalty ``l2 / 2 * |weights|^2`` (scikit-learn's C = 1 / l2)."""
    features = np.asarray(features, np.float64)
    target = np.asarray(different, np.float64)
    if len(np.unique(target)) < 2:
        raise ConfigError(f"the training contacts are all {'different' if target.any() else 'same'}"
                          f"-neuron pairs ({len(target)}); a model needs both kinds")
    mean, scale = features.mean(0), features.std(0)
    scale[scale == 0] = 1
    standard = (features - mean) / scale

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = standard @ theta[:-1] + theta[-1]
        residual = expit(z) - target
        value = np.sum(np.logaddexp(0, z) - target * z) + l2 / 2 * theta[:-1] @ theta[:-1]
        gradient = np.append(standard.T @ residual + l2 * theta[:-1], residual.sum())
        return float(value), gradient

    result = minimize(loss, np.zeros(features.shape[1] + 1), jac=True, method='L-BFGS-B')
    return EdgeModel(mean, scale, result.x[:-1], float(result.x[-1]),
                     info={'examples': int(len(target)),
                           'different_fraction': float(target.mean()), **(info or {})})


def region_labels(regions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(n + 1,) the truth id most voxels of each region 1..n carry (truth 0, unlabelled,
    not counted; 0 for a region without labelled voxels); ``regions``, ``truth`` (z, y, x)."""
    regions = np.asarray(regions, np.int64).ravel()
    truth = np.asarray(truth, np.int64).ravel()
    labelled = truth != 0
    _, truth_index = np.unique(truth[labelled], return_inverse=True)
    ids = np.unique(truth[labelled])
    n = int(regions.max(initial=0)) + 1
    table = coo_matrix((np.ones(int(labelled.sum())), (regions[labelled], truth_index.ravel())),
                       shape=(n, max(len(ids), 1))).tocsr()
    best = np.asarray(table.argmax(1)).ravel()
    has = np.asarray(table.sum(1)).ravel() > 0
    return np.where(has, ids[best] if len(ids) else 0, 0)


class _Contacts:
    """The contacts of a growing agglomeration: per region its neighbours and per contact
    ``[sum, count, histogram]``, shared by both directions; region sizes."""

    def __init__(self, graph: RegionGraph, sizes: np.ndarray):
        self.sizes = np.asarray(sizes, np.int64).copy()
        self.of: dict[int, dict[int, list]] = {}
        for (a, b), total, count, histogram in zip(graph.pairs.tolist(), graph.sums.tolist(),
                                                    graph.counts.tolist(), _histograms(graph)):
            self.of.setdefault(a, {})[b] = self.of.setdefault(b, {})[a] = [
                total, count, histogram.copy()]

    def features(self, a: int, others: list[int]) -> np.ndarray:
        edges = [self.of[a][c] for c in others]
        return contact_features(np.array([e[0] for e in edges]), np.array([e[1] for e in edges]),
                                np.stack([e[2] for e in edges]), np.full(len(others), self.sizes[a]),
                                self.sizes[others])

    def join(self, a: int, b: int) -> list[int]:
        """Region b into a; the neighbours whose contact with a changed."""
        self.sizes[a] += self.sizes[b]
        del self.of[a][b]
        changed = []
        for c, edge in self.of.pop(b).items():
            if c == a:
                continue
            del self.of[c][b]
            joined = self.of[a].get(c)
            if joined is None:
                self.of[a][c] = self.of[c][a] = edge
            else:
                joined[0] += edge[0]
                joined[1] += edge[1]
                joined[2] = joined[2] + edge[2]
            changed.append(c)
        return changed


def _histograms(graph: RegionGraph) -> np.ndarray:
    if graph.histograms is None:
        raise ConfigError("learned agglomeration needs the contacts' histograms "
                          "(a region graph counted with bins > 0)")
    return graph.histograms


def learned_linkage(n: int, graph: RegionGraph, sizes: np.ndarray, model: EdgeModel,
                    threshold: float) -> np.ndarray:
    """Representatives (n + 1,) after joining the pair the ``model`` finds least likely to
    be two neurons first, while that probability is below ``threshold``.

    ``graph``: between regions 1..n, with histograms of ``model.bins``; ``sizes`` (n + 1,)
    voxels per region. A joined region's contacts are the unions of its parts'; those
    that came from the absorbed part are scored again (ties: smaller ids first).
    """
    histograms = _histograms(graph)
    if histograms.shape[1] != model.bins:
        raise ConfigError(f"the region graph's histograms have {histograms.shape[1]} "
                          f"bins, the edge model was fitted with {model.bins}")
    contacts = _Contacts(graph, sizes)
    sizes = contacts.sizes
    first = model.probability(contact_features(graph.sums, graph.counts, histograms,
                                               sizes[graph.pairs[:, 0]],
                                               sizes[graph.pairs[:, 1]])).tolist()
    pairs = [tuple(pair) for pair in graph.pairs.tolist()]
    score = dict(zip(pairs, first))
    heap = [(p, a, b) for (a, b), p in zip(pairs, first)]
    heapq.heapify(heap)
    parent = np.arange(n + 1)
    while heap and heap[0][0] < threshold:
        p, a, b = heapq.heappop(heap)
        if score.get((a, b)) != p:
            continue                     # joined already, or scored again since
        if len(contacts.of[a]) < len(contacts.of[b]):
            a, b = b, a                  # keep the region with more neighbours
        parent[b] = a
        for c in contacts.of[b]:
            score.pop((min(b, c), max(b, c)), None)
        changed = contacts.join(a, b)
        if changed:
            for c, q in zip(changed, model.probability(contacts.features(a, changed)).tolist()):
                key = (min(a, c), max(a, c))
                score[key] = q
                heapq.heappush(heap, (q, *key))
    return roots(parent)


def training_examples(graph: RegionGraph, sizes: np.ndarray, labels: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Features (k, len(FEATURES)) and ``different`` (k,) bool of the contacts between
    labelled regions, as they are at first and as they become while regions of the same
    label are joined (in the order of ``graph.pairs``). ``labels`` (n + 1,): each
    region's neuron (0: unknown, never joined, no examples)."""
    contacts = _Contacts(graph, sizes)
    labels = np.asarray(labels, np.int64)
    known = (labels[graph.pairs[:, 0]] > 0) & (labels[graph.pairs[:, 1]] > 0)
    pairs = graph.pairs[known]
    features = [contact_features(graph.sums[known], graph.counts[known],
                                 _histograms(graph)[known], contacts.sizes[pairs[:, 0]],
                                 contacts.sizes[pairs[:, 1]])]
    different = [labels[pairs[:, 0]] != labels[pairs[:, 1]]]
    parent = list(range(len(labels)))
    for a, b in graph.pairs.tolist():
        if labels[a] == 0 or labels[a] != labels[b]:
            continue
        a, b = find(parent, a), find(parent, b)
        if a == b:
            continue
        if len(contacts.of[a]) < len(contacts.of[b]):
            a, b = b, a
        parent[b] = a
        changed = [c for c in contacts.join(a, b) if labels[c] > 0]
        if changed:
            features.append(contacts.features(a, changed))
            different.append(labels[changed] != labels[a])
    return np.concatenate(features), np.concatenate(different)
