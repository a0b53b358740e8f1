"""Basins of steepest descent on a boundary map: what one block computes on its own.

On a boundary map ``b`` (z, y, x) every voxel p is either

* interior: ``1 - b[p] > seed_threshold``, and with a ``seed_erosion`` r > 0 no voxel
  within distance r of p fails that (the interior eroded by a ball of radius r, voxels
  outside the volume counting as boundary); face-adjacent interior voxels belong
  together, or
* drains to its lowest face neighbour q, i.e. the neighbour with the smallest
  ``(b[q], raster index of q)``, if that is smaller than ``(b[p], raster index of p)``
  (a strict total order: no cycles); otherwise p is a minimum.

A basin is a connected component of these links. Every link depends only on a voxel and
its six neighbours, so a block finds the basins inside itself (:func:`block_basins`, from
the block and a rim of one voxel), and the links across its faces
(:func:`face_links`) join them into the basins of the volume, whatever the block size.
A basin holds at most one interior component (interior voxels do not drain), its seed.

All arrays here are ``(z, y, x)``; ``rim`` arrays have one voxel more on each side than
the box they describe, ``+inf`` where the volume ends; with a ``seed_erosion`` r the rim
is :func:`rim_width` voxels wide, as the erosion needs to see r voxels further.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.ndimage as ndi

from .region_graph import RegionGraph, quantise, roots

#: face neighbours in raster order of their index: -z, -y, -x, +x, +y, +z
DIRECTIONS = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
#: ``DIRECTIONS`` index of the step towards lower / higher coordinates along z, y, x
LOWER = (0, 1, 2)
HIGHER = (5, 4, 3)
NO_LINK = -1


def erosion_ball(radius: float, sampling: Sequence[float]) -> np.ndarray:
    """bool structuring element, one axis per ``sampling`` entry (the voxel size): the
    offsets d with ``|d * sampling| <= radius``."""
    reach = [int(radius // s) for s in sampling]
    grids = np.meshgrid(*[np.arange(-r, r + 1) * s for r, s in zip(reach, sampling)],
                        indexing='ij')
    return sum(g ** 2 for g in grids) <= radius ** 2


def interior(boundary: np.ndarray, seed_threshold: float, seed_erosion: float = 0.0,
             sampling: Sequence[float] | None = None) -> np.ndarray:
    """bool ``1 - boundary > seed_threshold``, eroded by :func:`erosion_ball` of radius
    ``seed_erosion`` (0: not eroded) with everything outside the array counting as not
    interior (the rim's ``inf`` is never interior)."""
    inside = 1 - boundary > seed_threshold
    if seed_erosion > 0:
        ball = erosion_ball(seed_erosion, sampling or (1.0,) * inside.ndim)
        inside = ndi.binary_erosion(inside, ball, border_value=0)
    return inside


def rim_width(seed_erosion: float) -> int:
    """Voxels the rim of a box needs on each side: one, and the reach of the erosion."""
    return 1 + int(seed_erosion)


def rim_interior(rim: np.ndarray, seed_threshold: float, seed_erosion: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A rim of :func:`rim_width` voxels cut to one, and the :func:`interior` of that."""
    extra = rim_width(seed_erosion) - 1
    cut = tuple(slice(extra, n - extra) for n in rim.shape)
    return rim[cut], interior(rim, seed_threshold, seed_erosion)[cut]


def descent(rim: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """int8 direction (index into :data:`DIRECTIONS`) each voxel drains to, or NO_LINK for
    interior voxels (``inside``, the rim's interior) and minima; shape of ``rim`` less one
    voxel on each side."""
    inner = tuple(slice(1, -1) for _ in range(3))
    here = rim[inner]
    neighbours = np.stack([rim[tuple(slice(1 + d, n - 1 + d) for d, n in zip(step, rim.shape))]
                           for step in DIRECTIONS])
    best = np.argmin(neighbours, axis=0)   # the first minimum: lowest raster index on ties
    lowest = np.take_along_axis(neighbours, best[None], 0)[0]
    drains = (lowest < here) | ((lowest == here) & (best < 3))
    drains &= ~inside[inner]
    return np.where(drains, best, NO_LINK).astype(np.int8)


def block_basins(rim: np.ndarray, seed_threshold: float, seed_erosion: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Basins inside a box: int64 ids 1..m (box shape), their interior voxel counts
    (m + 1,) and the flat index in the box of each one's first voxel (m,).

    A voxel draining out of the box ends its basin here; :func:`face_links` continues it.
    Ids are numbered in the raster order of each basin's first voxel.
    """
    rim, rim_inside = rim_interior(rim, seed_threshold, seed_erosion)
    inner = tuple(slice(1, -1) for _ in range(3))
    shape = tuple(n - 2 for n in rim.shape)
    inside = rim_inside[inner]
    direction = descent(rim, rim_inside)
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    parent = index.copy()
    seeds, _ = ndi.label(inside)
    if seeds.max():
        first = np.full(int(seeds.max()) + 1, index.size, np.int64)
        np.minimum.at(first, seeds[inside], index[inside])
        parent[inside] = first[seeds[inside]]
    for d, step in enumerate(DIRECTIONS):
        target = np.pad(index, [(max(-s, 0), max(s, 0)) for s in step], constant_values=-1)
        target = target[tuple(slice(max(s, 0), max(s, 0) + n) for s, n in zip(step, shape))]
        linked = (direction == d) & (target >= 0)
        parent[linked] = target[linked]
    _, first, inverse = np.unique(roots(parent.ravel()), return_index=True,
                                  return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind='stable')] = np.arange(1, len(first) + 1)
    ids = rank[inverse.ravel()].reshape(shape)
    return ids, np.bincount(ids[inside], minlength=len(first) + 1), np.sort(first)


def face_links(ids: np.ndarray, rim: np.ndarray, axis: int, seed_threshold: float,
               seed_erosion: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of basin ids (k,), (k,) joined across a face: ``ids`` (2 planes along ``axis``:
    the lower block's last, the upper block's first) and their ``rim``."""
    rim, rim_inside = rim_interior(rim, seed_threshold, seed_erosion)
    inner = tuple(slice(1, -1) for _ in range(3))
    inside = rim_inside[inner]
    direction = descent(rim, rim_inside)
    low, high = (tuple(slice(i, i + 1) if a == axis else slice(None) for a in range(3))
                 for i in (0, 1))
    joined = ((inside[low] & inside[high]) | (direction[low] == HIGHER[axis])
              | (direction[high] == LOWER[axis]))
    return ids[low][joined], ids[high][joined]


def contact_graph(ids: np.ndarray, boundary: np.ndarray, origin: Sequence[int],
                  edge_boundary: Sequence[np.ndarray] | None = None, bins: int = 0
                  ) -> RegionGraph:
    """Contacts of the voxel pairs whose upper voxel lies at or beyond ``origin``.

    ``ids`` and ``boundary`` cover a box whose first ``origin[a]`` planes along axis a
    belong to the lower neighbour (0 or 1 per axis); pairs along an axis are counted
    within the box's own extent on the other axes, so every pair of the volume is
    counted by exactly one block. With ``edge_boundary`` (one array per axis of the same
    shape: 1 - the affinity of the edge from each voxel to its predecessor) the edge
    values replace the voxel mean (mean-affinity agglomeration). ``bins`` > 0: with the
    histogram of every contact's values (:class:`~.region_graph.RegionGraph`).
    """
    levels = quantise(boundary)
    graphs = []
    for axis in range(3):
        lower = tuple(slice(0, -1) if a == axis else slice(o, None) for a, o in enumerate(origin))
        upper = tuple(slice(1, None) if a == axis else slice(o, None) for a, o in enumerate(origin))
        if edge_boundary is None:
            low, high = levels[lower], levels[upper]
            values, saddles = low + high, np.maximum(low, high)
        else:
            saddles = quantise(edge_boundary[axis][upper])
            values = 2 * saddles
        graphs.append(RegionGraph.of_pairs(ids[lower].ravel(), ids[upper].ravel(),
                                           values.ravel(), saddles.ravel(), bins=bins))
    return RegionGraph.concat(graphs)
