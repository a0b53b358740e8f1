"""Segmentation from boundary or affinity predictions: seeded watershed, size filter, merging.

Pipeline of :func:`segment_boundaries` on a boundary probability map (z, y, x):

1. seeds: connected components (6-connectivity) of ``1 - boundary > seed_threshold``
   (confident interior), components smaller than ``min_seed_size`` dropped;
2. seeded watershed (scikit-image) of the boundary map, optionally within a mask;
3. merging: neighbouring segments whose mean boundary probability along their contact
   (over all face-adjacent voxel pairs, mean of both voxels) is below ``merge_threshold``
   are joined (all such contacts at once, i.e. single linkage);
4. size filter: segments below ``min_size`` voxels are flooded by their neighbours;
5. ids relabelled 1..n (0 only outside the mask).

Affinity maps are first turned into boundary maps (:func:`boundaries_from_affinities`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sparse
from scipy.sparse.csgraph import connected_components

from ..data.labels import affinity_nhood, offset_slices
from ..errors import ConfigError, ShapeError


def boundaries_from_affinities(affinities: np.ndarray,
                               nhood: np.ndarray | Sequence[Sequence[int]] | None = None,
                               ) -> np.ndarray:
    """(z, y, x) boundary map: 1 - mean affinity of the edges touching each voxel.

    Args:
        affinities: (k, *spatial) probabilities; edge k of voxel p joins p and
            p + nhood[k] (the convention of :func:`elektronn2.data.labels.ids2affinities`).
        nhood: (k, ndim) offsets; default: the predecessor along every axis.
    """
    affinities = np.asarray(affinities, np.float32)
    spatial = affinities.shape[1:]
    nhood = affinity_nhood(len(spatial)) if nhood is None else np.asarray(nhood, int)
    if nhood.shape != (affinities.shape[0], len(spatial)):
        raise ShapeError(f"affinities of shape {affinities.shape} need an nhood of shape "
                         f"({affinities.shape[0]}, {len(spatial)}), got {nhood.shape}")
    total = np.zeros(spatial, np.float32)
    count = np.zeros(spatial, np.float32)
    for aff, offset in zip(affinities, nhood):
        here, there = offset_slices(spatial, offset)
        for end in (here, there):
            total[end] += aff[here]
            count[end] += 1
    return 1 - np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def interior_seeds(boundary: np.ndarray, seed_threshold: float = 0.5,
                   min_seed_size: int = 1) -> np.ndarray:
    """int32 seeds 1..n: components of ``1 - boundary > seed_threshold`` of at least
    ``min_seed_size`` voxels; 0 elsewhere."""
    seeds, _ = ndi.label(1 - np.asarray(boundary) > seed_threshold)
    if min_seed_size > 1:
        sizes = np.bincount(seeds.ravel())
        small = sizes < min_seed_size
        small[0] = True
        seeds[small[seeds]] = 0
    return _relabel(seeds)


def contact_boundary(ids: np.ndarray, boundary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbouring segment pairs and their mean boundary along the contact.

    Returns:
        pairs (n, 2) with pairs[:, 0] < pairs[:, 1] (id 0 is never a neighbour), and
        the mean over all face-adjacent voxel pairs of (boundary[p] + boundary[q]) / 2.
    """
    firsts, seconds, values = [], [], []
    for axis in range(ids.ndim):
        lower = tuple(slice(None, -1) if a == axis else slice(None) for a in range(ids.ndim))
        upper = tuple(slice(1, None) if a == axis else slice(None) for a in range(ids.ndim))
        a, b = ids[lower], ids[upper]
        contact = (a != b) & (a != 0) & (b != 0)
        firsts.append(np.minimum(a, b)[contact])
        seconds.append(np.maximum(a, b)[contact])
        values.append((boundary[lower][contact] + boundary[upper][contact]) / 2)
    pairs = np.stack([np.concatenate(firsts), np.concatenate(seconds)], 1)
    if not len(pairs):
        return pairs.reshape(0, 2), np.zeros(0)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    sums = np.bincount(inverse, np.concatenate(values))
    return unique, sums / np.bincount(inverse)


def merge_segments(ids: np.ndarray, boundary: np.ndarray, merge_threshold: float) -> np.ndarray:
    """Join neighbouring segments whose mean contact boundary is below ``merge_threshold``."""
    pairs, mean = contact_boundary(ids, boundary)
    joined = pairs[mean < merge_threshold]
    n = int(ids.max()) + 1
    graph = sparse.coo_array((np.ones(len(joined)), (joined[:, 0], joined[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    component = component + 1
    component[0] = 0
    return _relabel(component[ids])


def remove_small_segments(ids: np.ndarray, boundary: np.ndarray, min_size: int,
                          mask: np.ndarray | None = None) -> np.ndarray:
    """Segments under ``min_size`` voxels are flooded (watershed of ``boundary``) by the rest."""
    from skimage.segmentation import watershed
    sizes = np.bincount(ids.ravel())
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return ids
    kept = np.where(small[ids], 0, ids)
    if not kept.any():
        return ids
    return _relabel(watershed(boundary, kept, mask=mask))


def segment_boundaries(boundary: np.ndarray, seed_threshold: float = 0.5,
                       min_seed_size: int = 1, merge_threshold: float | None = None,
                       min_size: int = 0, mask: np.ndarray | None = None) -> np.ndarray:
    """uint32 segment ids (z, y, x) from a boundary probability map; see the module docstring.

    Args:
        boundary: (z, y, x) or (y, x) boundary probabilities in [0, 1].
        seed_threshold: interior probability a seed voxel must exceed.
        min_seed_size: smallest seed (voxels).
        merge_threshold: join neighbours with a lower mean contact boundary (None: no merging).
        min_size: smallest segment kept (voxels); smaller ones are flooded by neighbours.
        mask: where to segment (default everywhere).
    """
    from skimage.segmentation import watershed
    boundary = np.asarray(boundary, np.float32)
    if mask is not None and np.shape(mask) != boundary.shape:
        raise ShapeError(f"mask shape {np.shape(mask)} differs from the boundary map's "
                         f"{boundary.shape}")
    if not 0 <= seed_threshold < 1:
        raise ConfigError(f"seed_threshold={seed_threshold}; it must be in [0, 1)")
    seeds = interior_seeds(boundary, seed_threshold, min_seed_size)
    if mask is not None:
        seeds[~np.asarray(mask, bool)] = 0
    if not seeds.any():
        raise ConfigError(f"No seeds: no voxel has interior probability above "
                          f"seed_threshold={seed_threshold} (boundary min {boundary.min():.3f}); "
                          f"lower the threshold")
    ids = watershed(boundary, seeds, mask=mask)
    if merge_threshold is not None:
        ids = merge_segments(ids, boundary, merge_threshold)
    if min_size > 1:
        ids = remove_small_segments(ids, boundary, min_size, mask)
    return ids.astype(np.uint32)


def segment_affinities(affinities: np.ndarray,
                       nhood: np.ndarray | Sequence[Sequence[int]] | None = None,
                       **options) -> np.ndarray:
    """:func:`segment_boundaries` of :func:`boundaries_from_affinities`; options as there."""
    return segment_boundaries(boundaries_from_affinities(affinities, nhood), **options)


def _relabel(ids: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..n in increasing order (0 stays 0)."""
    values, inverse = np.unique(ids, return_inverse=True)
    if values[0] == 0:
        return inverse.reshape(ids.shape).astype(np.int64)
    return (inverse + 1).reshape(ids.shape).astype(np.int64)
