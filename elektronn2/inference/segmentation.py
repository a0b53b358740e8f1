"""Segmentation from boundary or affinity predictions: seeded watershed, size filter, merging.

Pipeline of :func:`segment_boundaries` on a boundary probability map (z, y, x):

1. interior: ``1 - boundary > seed_threshold``, eroded by a ball of radius
   ``seed_erosion`` (so that cells touching through a gap in the boundary narrower than
   twice the radius fall apart), connected components (6-connectivity) smaller than
   ``min_seed_size`` voxels dropped;
2. seeds (:func:`interior_seeds`), either

   * ``'components'``: each connected component of the interior is one seed, or
   * ``'distance'``: the Euclidean distance of every interior voxel to the nearest
     non-interior voxel (in units of ``sampling``, the voxel size per axis),
     optionally Gaussian-smoothed, and one seed per regional maximum of it (plateaus
     count once; with ``seed_h > 0`` only maxima rising at least ``seed_h`` above the
     saddle to a higher one, the h-maxima). Two cells whose interiors touch through a
     gap in the predicted boundary still get a seed each, where components merge them;

3. seeded watershed (scikit-image) of the boundary map, optionally within a mask; with
   ``distance_weight`` w > 0 it floods ``(1 - w) * boundary + w * (1 - d / max d)``
   instead, d the interior distance of step 2, so that fronts meet at narrow necks
   (gaps) rather than pass through them;
4. merging (:func:`merge_segments`): the two neighbours with the lowest mean boundary
   probability along their contact (over all face-adjacent voxel pairs, mean of both
   voxels) are joined, the joined segment's contacts are the unions of its parts', and
   so on while a contact's mean is below ``merge_threshold`` (mean-linkage
   agglomeration);
5. size filter: segments below ``min_size`` voxels are flooded by their neighbours;
6. ids relabelled 1..n (0 only outside the mask).

Affinity maps are first turned into boundary maps (:func:`boundaries_from_affinities`).

All of this runs on the whole volume in memory. :mod:`.blockwise_segmentation` segments
volumes of any size block by block, with a watershed by steepest descent instead of
flooding (so that blocks do not matter) and the same merging; its
:func:`~.blockwise_segmentation.segment_volume` is the in-memory call.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.ndimage as ndi

from ..data.labels import affinity_nhood, offset_slices
from ..errors import ConfigError, ShapeError
from .basins import interior as basin_interior
from .region_graph import RegionGraph, mean_linkage, quantise


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


SEED_METHODS = ('components', 'distance')


def confident_interior(boundary: np.ndarray, seed_threshold: float = 0.5,
                       min_seed_size: int = 1, seed_erosion: float = 0.0,
                       sampling: Sequence[float] | None = None) -> np.ndarray:
    """bool mask of ``1 - boundary > seed_threshold``, eroded by a ball of radius
    ``seed_erosion`` (units of ``sampling``; outside the volume counts as boundary, as in
    :func:`.basins.interior`), without its connected components (6-connectivity) of fewer
    than ``min_seed_size`` voxels."""
    if seed_erosion < 0:
        raise ConfigError(f"seed_erosion={seed_erosion}; it must be >= 0")
    boundary = np.asarray(boundary)
    interior = basin_interior(boundary, seed_threshold, seed_erosion,
                              _sampling(sampling, boundary.ndim))
    if min_seed_size > 1:
        components, _ = ndi.label(interior)
        small = np.bincount(components.ravel()) < min_seed_size
        small[0] = True
        interior[small[components]] = False
    return interior


def interior_distance(interior: np.ndarray, sampling: Sequence[float] | None = None,
                      smoothing: float = 0.0) -> np.ndarray:
    """float32 Euclidean distance of each ``interior`` voxel to the nearest other voxel.

    Args:
        interior: bool mask (z, y, x) or (y, x).
        sampling: voxel size per axis (default 1 each); distances are in its units.
        smoothing: sigma of a Gaussian applied to the distance, in the units of
            ``sampling`` (0: none); the result stays 0 outside the interior.
    """
    sampling = _sampling(sampling, interior.ndim)
    if interior.all():  # no voxel to measure from: every voxel is as deep as any other
        return np.ones(interior.shape, np.float32)
    distance = ndi.distance_transform_edt(interior, sampling=sampling).astype(np.float32)
    if smoothing > 0:
        distance = ndi.gaussian_filter(distance, [smoothing / s for s in sampling])
        distance[~interior] = 0
    return distance


def interior_seeds(boundary: np.ndarray, seed_threshold: float = 0.5,
                   min_seed_size: int = 1, seeds: str = 'components',
                   sampling: Sequence[float] | None = None, seed_smoothing: float = 0.0,
                   seed_h: float = 0.0, seed_erosion: float = 0.0) -> np.ndarray:
    """int64 seeds 1..n (0 elsewhere) in the confident interior of a boundary map.

    Args:
        boundary: (z, y, x) or (y, x) boundary probabilities.
        seed_threshold, min_seed_size, seed_erosion: the interior, see
            :func:`confident_interior`.
        seeds: ``'components'`` (one seed per connected component of the interior) or
            ``'distance'`` (one per regional maximum of :func:`interior_distance`,
            plateaus and 26-connected maxima counting once).
        sampling, seed_smoothing: of the distance (``'distance'`` only).
        seed_h: keep only maxima at least this high above the saddle to a higher one
            (distance units; 0: all regional maxima; ``'distance'`` only).
    """
    _check_seed_options(seeds, seed_h)
    interior = confident_interior(boundary, seed_threshold, min_seed_size, seed_erosion,
                                  sampling)
    distance = (interior_distance(interior, sampling, seed_smoothing)
                if seeds == 'distance' else None)
    return _markers(interior, seeds, distance, seed_h)


def _check_seed_options(seeds: str, seed_h: float) -> None:
    if seeds not in SEED_METHODS:
        raise ConfigError(f"seeds={seeds!r}; valid: {SEED_METHODS}")
    if seed_h < 0:
        raise ConfigError(f"seed_h={seed_h}; it must be >= 0")


def _markers(interior: np.ndarray, seeds: str, distance: np.ndarray | None,
             h: float) -> np.ndarray:
    """Seeds 1..n: the components of ``interior``, or the maxima of its ``distance``."""
    if seeds == 'components':
        return _relabel(ndi.label(interior)[0])
    assert distance is not None, "seeds='distance' needs the interior distance"
    return _distance_maxima(distance, interior, h)


def _distance_maxima(distance: np.ndarray, interior: np.ndarray, h: float) -> np.ndarray:
    """Seeds at the regional maxima (or h-maxima) of ``distance`` inside ``interior``."""
    from skimage.morphology import h_maxima, local_maxima
    if not interior.any():
        return np.zeros(interior.shape, np.int64)
    if h > 0:
        maxima = h_maxima(distance, h).astype(bool)
    else:
        maxima = local_maxima(distance, connectivity=distance.ndim, allow_borders=True)
    maxima &= interior
    return _relabel(ndi.label(maxima, np.ones((3,) * distance.ndim, bool))[0])


def _sampling(sampling: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if sampling is None:
        return (1.0,) * ndim
    sampling = tuple(float(s) for s in np.atleast_1d(sampling))
    if len(sampling) == 1:
        sampling *= ndim
    if len(sampling) != ndim or min(sampling) <= 0:
        raise ConfigError(f"sampling={sampling}: give one positive voxel size per axis "
                          f"({ndim})")
    return sampling


def region_graph(ids: np.ndarray, boundary: np.ndarray) -> RegionGraph:
    """The :class:`~.region_graph.RegionGraph` of neighbouring segments: per contact the
    (quantised) sum of ``boundary[p] + boundary[q]`` over its face-adjacent voxel pairs,
    their number and the pass height (id 0 is never a neighbour)."""
    levels = quantise(boundary)
    graphs = []
    for axis in range(ids.ndim):
        lower = tuple(slice(None, -1) if a == axis else slice(None) for a in range(ids.ndim))
        upper = tuple(slice(1, None) if a == axis else slice(None) for a in range(ids.ndim))
        low, high = levels[lower], levels[upper]
        graphs.append(RegionGraph.of_pairs(ids[lower].ravel(), ids[upper].ravel(),
                                           (low + high).ravel(), np.maximum(low, high).ravel()))
    return RegionGraph.concat(graphs)


def contact_boundary(ids: np.ndarray, boundary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbouring segment pairs and their mean boundary along the contact.

    Returns:
        pairs (n, 2) with pairs[:, 0] < pairs[:, 1] (id 0 is never a neighbour), and
        the mean over all face-adjacent voxel pairs of (boundary[p] + boundary[q]) / 2.
    """
    graph = region_graph(ids, boundary)
    return graph.pairs, graph.means


def merge_segments(ids: np.ndarray, boundary: np.ndarray, merge_threshold: float) -> np.ndarray:
    """Agglomerate neighbouring segments while their mean contact boundary is below
    ``merge_threshold`` (:func:`~.region_graph.mean_linkage`: weakest contact first, a
    joined segment's contacts are the unions of its parts')."""
    ids = np.asarray(ids, np.int64)
    parent = mean_linkage(int(ids.max(initial=0)), region_graph(ids, boundary), merge_threshold)
    return _relabel(parent[ids])


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
                       min_size: int = 0, mask: np.ndarray | None = None,
                       seeds: str = 'components', sampling: Sequence[float] | None = None,
                       seed_smoothing: float = 0.0, seed_h: float = 0.0,
                       distance_weight: float = 0.0, seed_erosion: float = 0.0) -> np.ndarray:
    """uint32 segment ids (z, y, x) from a boundary probability map; see the module docstring.

    Args:
        boundary: (z, y, x) or (y, x) boundary probabilities in [0, 1].
        seed_threshold: interior probability (1 - boundary) a seed region must exceed.
        min_seed_size: smallest connected interior region that gets seeds (voxels).
        merge_threshold: agglomerate neighbours while their mean contact boundary is
            lower (mean linkage, :func:`merge_segments`; None: no merging).
        min_size: smallest segment kept (voxels); smaller ones are flooded by neighbours.
        mask: where to segment (default everywhere).
        seeds: ``'components'``: one seed per connected interior region;
            ``'distance'``: one per maximum of the interior's distance transform, which
            separates cells joined by a gap in the boundary (:func:`interior_seeds`).
        sampling: voxel size per axis (z, y, x) for distances, e.g. ``(5, 1, 1)`` for
            z sections five times thicker than a pixel (default isotropic).
        seed_smoothing: Gaussian sigma for the distance before its maxima are taken
            (units of ``sampling``; 0: none); fewer, more robust seeds.
        seed_h: only maxima at least this much deeper than the saddle to a deeper one
            (units of ``sampling``; 0: every maximum).
        distance_weight: in [0, 1]; the watershed floods ``(1 - w) * boundary +
            w * (1 - d / max d)`` with d the interior distance (0: the boundary map).
        seed_erosion: erode the interior by a ball of this radius (units of
            ``sampling``; 0: none) before the seeds are taken: cells touching through a
            gap in the boundary narrower than twice the radius get a seed each.
    """
    from skimage.segmentation import watershed
    boundary = np.asarray(boundary, np.float32)
    if mask is not None and np.shape(mask) != boundary.shape:
        raise ShapeError(f"mask shape {np.shape(mask)} differs from the boundary map's "
                         f"{boundary.shape}")
    if not 0 <= seed_threshold < 1:
        raise ConfigError(f"seed_threshold={seed_threshold}; it must be in [0, 1)")
    if not 0 <= distance_weight <= 1:
        raise ConfigError(f"distance_weight={distance_weight}; it must be in [0, 1]")
    _check_seed_options(seeds, seed_h)
    _sampling(sampling, boundary.ndim)  # an invalid one is an error whatever the method
    interior = confident_interior(boundary, seed_threshold, min_seed_size, seed_erosion,
                                  sampling)
    distance = (interior_distance(interior, sampling, seed_smoothing)
                if seeds == 'distance' or distance_weight > 0 else None)
    markers = _markers(interior, seeds, distance, seed_h)
    if mask is not None:
        markers[~np.asarray(mask, bool)] = 0
    if not markers.any():
        raise ConfigError(f"No seeds: no voxel has interior probability above "
                          f"seed_threshold={seed_threshold} (boundary min {boundary.min():.3f}); "
                          f"lower the threshold")
    landscape = boundary
    if distance_weight > 0:
        assert distance is not None  # computed above whenever distance_weight > 0
        depth = distance / max(float(distance.max()), 1e-6)
        landscape = (1 - distance_weight) * boundary + distance_weight * (1 - depth)
    ids = watershed(landscape, markers, mask=mask)
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
