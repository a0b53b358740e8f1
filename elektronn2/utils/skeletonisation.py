"""Skeletons of the objects of an id volume: :func:`skeletonise`.

Two methods:

* ``'skimage'``: thinning by scikit-image's ``skeletonize`` per object (checked for the
  parts it can lose, see :func:`_thin`); the skeleton voxels
  are joined to their 26-neighbours and reduced to a tree by a minimum spanning tree;
  radii are the distance of each skeleton voxel to the object's surface.
* ``'kimimaro'``: the TEASAR skeletons of kimimaro (``pip install kimimaro``), faster on
  large volumes and smoother. Its radii do not count the faces of the volume as surface
  (an object cut by the volume's edge gets the radius it would have beyond it).

``'auto'`` takes kimimaro when it is installed.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from ..errors import ConfigError, DataError
from .optional import import_optional
from .skeleton import Skeleton

logger = logging.getLogger('elektronn2')

METHODS = ('auto', 'skimage', 'kimimaro')
#: Axes trimmed by one voxel layer, in turn, when thinning loses part of an object.
_TRIM_AXES = ((), (0, 1, 2), (0,), (1,), (2,), (1, 2), (0, 2), (0, 1))


def skeletonise(ids: np.ndarray, object_ids: Iterable[int] | None = None,
                voxel_size: Sequence[float] = (1.0, 1.0, 1.0), method: str = 'auto',
                min_voxels: int = 100, **kimimaro_options) -> dict[int, Skeleton]:
    """Skeletons of the objects in a ``(z, y, x)`` id volume (0 is background).

    Args:
        ids: integer volume.
        object_ids: ids to skeletonise (default all but 0).
        voxel_size: physical voxel size ``(z, y, x)`` for radii, lengths and directions.
        method: 'auto', 'skimage' or 'kimimaro'.
        min_voxels: smaller objects are skipped.
        kimimaro_options: passed to ``kimimaro.skeletonize`` (e.g. ``teasar_params``).

    Returns:
        id -> :class:`Skeleton` with node coordinates in voxels.
    """
    ids = np.asarray(ids)
    if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"skeletonise needs a 3-D integer id volume (z, y, x), got "
                        f"{ids.dtype} of shape {ids.shape}")
    if method not in METHODS:
        raise ConfigError(f"skeletonise(method={method!r}): choose one of {METHODS}")
    if method == 'auto':
        method = 'kimimaro' if importlib.util.find_spec('kimimaro') else 'skimage'
    voxel_size = tuple(float(v) for v in voxel_size)
    wanted = None if object_ids is None else sorted({int(i) for i in object_ids} - {0})
    if method == 'kimimaro':
        skeletons = _kimimaro_skeletons(ids, wanted, voxel_size, min_voxels, kimimaro_options)
    elif kimimaro_options:
        raise ConfigError(f"skeletonise: options {sorted(kimimaro_options)} are for "
                          f"method='kimimaro' only")
    else:
        skeletons = _thinning_skeletons(ids, wanted, voxel_size, min_voxels)
    logger.info("Skeletonised %d objects (%s)", len(skeletons), method)
    return skeletons


def _thinning_skeletons(ids: np.ndarray, wanted: list[int] | None, voxel_size: tuple,
                        min_voxels: int) -> dict[int, Skeleton]:
    uniq = np.unique(ids)
    uniq = uniq[uniq != 0]
    if wanted is not None:
        uniq = uniq[np.isin(uniq, wanted)]
    compact = np.zeros(ids.shape, np.int32)
    inside = np.isin(ids, uniq)
    compact[inside] = np.searchsorted(uniq, ids[inside]) + 1
    skeletons = {}
    for j, box in enumerate(ndimage.find_objects(compact)):
        if box is None:
            continue
        mask = np.pad(compact[box] == j + 1, 1)
        if mask.sum() < min_voxels:
            continue
        origin = np.array([s.start - 1 for s in box])
        skeletons[int(uniq[j])] = _mask_skeleton(mask, origin, voxel_size, int(uniq[j]))
    return skeletons


def _count_parts(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]


def _trim(mask: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``mask`` less one voxel layer on the low side of each of ``axes``."""
    trimmed = mask.copy()
    for axis in axes:
        trimmed[(slice(None),) * axis + (slice(1, None),)] &= mask[(slice(None),) * axis
                                                                   + (slice(None, -1),)]
    return trimmed


def _thin(mask: np.ndarray, object_id: int) -> np.ndarray:
    """scikit-image's ``skeletonize``, checked for lost parts.

    It can erase objects of even width (scikit-image issue #3757). When the skeleton has
    another number of 26-connected parts than the object, the object is thinned again
    after trimming one voxel layer off some axes, which changes the parity of its widths.
    """
    from skimage.morphology import skeletonize
    n_parts = _count_parts(mask)
    attempts = []
    for axes in _TRIM_AXES:
        skeleton = skeletonize(_trim(mask, axes))
        if _count_parts(skeleton) == n_parts:
            return skeleton
        attempts.append(skeleton)
    logger.warning("Object %d: thinning does not keep its %d connected parts; its skeleton "
                   "may have gaps (method='kimimaro' avoids this)", object_id, n_parts)
    return max(attempts, key=np.count_nonzero)


def _mask_skeleton(mask: np.ndarray, origin: np.ndarray, voxel_size: tuple,
                   object_id: int) -> Skeleton:
    """Skeleton of one binary object (padded by one voxel); coordinates shifted by ``origin``."""
    distance = ndimage.distance_transform_edt(mask, sampling=voxel_size)
    voxels = np.argwhere(_thin(mask, object_id))
    if not len(voxels):
        voxels = np.array([np.unravel_index(np.argmax(distance), mask.shape)])
    scaled = voxels * np.asarray(voxel_size)
    pairs = cKDTree(voxels).query_pairs(r=np.sqrt(3) + 1e-6, output_type='ndarray')
    weights = np.linalg.norm(scaled[pairs[:, 0]] - scaled[pairs[:, 1]], axis=1)
    graph = sparse.coo_matrix((weights, (pairs[:, 0], pairs[:, 1])), shape=(len(voxels),) * 2)
    tree = csgraph.minimum_spanning_tree(graph).tocoo()
    return Skeleton(nodes=voxels + origin, edges=np.stack([tree.row, tree.col], axis=1),
                    radii=distance[tuple(voxels.T)], voxel_size=voxel_size, id=object_id)


def _kimimaro_skeletons(ids: np.ndarray, wanted: list[int] | None, voxel_size: tuple,
                        min_voxels: int, options: dict) -> dict[int, Skeleton]:
    kimimaro = import_optional('kimimaro', 'kimimaro', 'skeleton', "skeletonise(method='kimimaro')")
    options = {'parallel': 1, 'progress': False, **options}
    found = kimimaro.skeletonize(ids, anisotropy=voxel_size, object_ids=wanted,
                                 dust_threshold=min_voxels, **options)
    scale = np.asarray(voxel_size)
    return {int(label): Skeleton(nodes=np.asarray(sk.vertices) / scale, edges=sk.edges,
                                 radii=sk.radius, voxel_size=voxel_size, id=int(label))
            for label, sk in found.items()}
