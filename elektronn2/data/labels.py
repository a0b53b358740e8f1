"""Label conversions: object ids -> boundaries, affinities, neighbourhood targets.

Id volumes are integer arrays (z, y, x) or (y, x) where each object has its own id;
id 0 is background / extracellular space (ECS).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError


def affinity_nhood(ndim: int) -> np.ndarray:
    """Default affinity neighbourhood: each voxel to its predecessor along every axis."""
    return -np.eye(ndim, dtype=int)


def target_nhood(ndim: int) -> np.ndarray:
    """Default neighbourhood of :func:`nhood_targets`: the voxel and its 2*ndim neighbours."""
    steps = np.eye(ndim, dtype=int)
    neighbours = np.stack([steps, -steps], 1).reshape(-1, ndim)  # +z, -z, +y, -y, ...
    return np.concatenate([np.zeros((1, ndim), int), neighbours])


def _per_axis(value: bool | Sequence[bool], ndim: int, name: str) -> list[bool]:
    if isinstance(value, (bool, np.bool_)):
        return [bool(value)] * ndim
    value = [bool(v) for v in value]
    if len(value) != ndim:
        raise ConfigError(f"{name}={value} needs one entry per axis of the {ndim}-D id volume")
    return value


def _along(ndim: int, axis: int, start: int | None, stop: int | None) -> tuple[slice, ...]:
    """Index selecting ``start:stop`` along ``axis`` and everything along the others."""
    index = [slice(None)] * ndim
    index[axis] = slice(start, stop)
    return tuple(index)


def ids2barriers(ids: np.ndarray, dilute: bool | Sequence[bool] = False,
                 connectivity: bool | Sequence[bool] = True,
                 ecs_as_barr: bool | str = True, smoothen: bool = False) -> np.ndarray:
    """Boundary labels from an id volume: 1 where a neighbour has another id, else 0.

    Args:
        ids: (z, y, x) or (y, x) integer ids.
        dilute: per axis (or for all), widen each boundary by one more voxel on both
            sides (4 voxels across instead of 2).
        connectivity: per axis (or for all), whether id changes along it make boundaries.
        ecs_as_barr: True: id 0 (extracellular space) counts as boundary too;
            False: id 0 is only boundary next to other ids; 'new_class': id 0 away
            from boundaries becomes class 2.
        smoothen: (z, y, x) ids only: round the boundaries off before id 0 is added, by
            a 3x3x3 weighted vote (:func:`smoothen_barriers`).
    Returns:
        int16 array of ``ids.shape`` with values 0, 1 (and 2 for 'new_class').
    """
    ids = np.asarray(ids)
    if ecs_as_barr not in (True, False, 'new_class'):
        raise ConfigError(f"ecs_as_barr={ecs_as_barr!r} is invalid; use True, False or 'new_class'")
    dilute = _per_axis(dilute, ids.ndim, 'dilute')
    connectivity = _per_axis(connectivity, ids.ndim, 'connectivity')
    barriers = np.zeros(ids.shape, bool)
    for axis in range(ids.ndim):
        size = ids.shape[axis]
        if not connectivity[axis] or size < 2:
            continue
        lower, upper = _along(ids.ndim, axis, 0, size - 1), _along(ids.ndim, axis, 1, size)
        change = ids[lower] != ids[upper]  # change[p]: ids differ between p and p+1
        barriers[lower] |= change
        barriers[upper] |= change
        if dilute[axis] and size > 2:
            barriers[_along(ids.ndim, axis, 0, size - 2)] |= change[_along(ids.ndim, axis, 1, None)]
            barriers[_along(ids.ndim, axis, 2, size)] |= change[_along(ids.ndim, axis, 0, size - 2)]
    if smoothen:
        if ids.ndim != 3:
            raise ConfigError(f"smoothen=True needs (z, y, x) ids, got {ids.ndim}-D ids")
        barriers = smoothen_barriers(barriers)
    out = barriers.astype(np.int16)
    ecs = ids == 0
    if ecs_as_barr == 'new_class':
        out[ecs & ~barriers] = 2
    elif ecs_as_barr:
        out[ecs] = 1
    return out


def smoothen_barriers(barriers: np.ndarray) -> np.ndarray:
    """bool (z, y, x): a voxel is boundary where the weighted sum of boundary voxels in its
    3x3x3 neighbourhood exceeds 4 (of 7.2 for all 27).

    The weight falls with the offset: 1 for the voxel itself; in its z plane 0.5 for the
    4 face and 0.3 for the 4 diagonal neighbours; in the planes above and below 0.3
    straight across, 0.2 for face and 0.1 for diagonal offsets. Edges are reflected.
    """
    from scipy import ndimage
    in_plane = np.add.outer(np.array([1, 0, 1]), np.array([1, 0, 1]))  # 0 centre, 1 face, 2 diag
    weights = np.stack([np.choose(in_plane, [0.3, 0.2, 0.1]), np.choose(in_plane, [1.0, 0.5, 0.3]),
                        np.choose(in_plane, [0.3, 0.2, 0.1])]).astype(np.float32)
    return ndimage.convolve(barriers.astype(np.float32), weights) > 4


def affinity_components(affinities: np.ndarray,
                        nhood: np.ndarray | Sequence[Sequence[int]] | None = None,
                        size_threshold: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of an affinity graph (the inverse of :func:`ids2affinities`).

    Args:
        affinities: (k, *spatial); edge k of voxel p joins p and p + nhood[k] where it is
            non-zero.
        nhood: (k, ndim) offsets; default: the predecessor along each axis.
        size_threshold: components of at most this many voxels get id 0 (with 1,
            voxels joined to nothing, e.g. background, are 0).
    Returns:
        ids int64 (*spatial), 1..n in the order of each component's first voxel (C
        order), and the sizes (n,) of components 1..n.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    affinities = np.asarray(affinities)
    spatial = affinities.shape[1:]
    nhood = affinity_nhood(len(spatial)) if nhood is None else np.asarray(nhood, int)
    if nhood.shape != (affinities.shape[0], len(spatial)):
        raise ConfigError(f"affinities of shape {affinities.shape} need an nhood of shape "
                          f"({affinities.shape[0]}, {len(spatial)}), got {nhood.shape}")
    n_voxels = int(np.prod(spatial))
    voxel = np.arange(n_voxels, dtype=np.int32 if n_voxels < 2 ** 31 else np.int64).reshape(spatial)
    firsts, seconds = [], []
    for aff, offset in zip(affinities, nhood):
        here, there = offset_slices(spatial, offset)
        joined = aff[here] != 0
        firsts.append(voxel[here][joined])
        seconds.append(voxel[there][joined])
    firsts, seconds = np.concatenate(firsts), np.concatenate(seconds)
    graph = coo_matrix((np.ones(len(firsts), np.int8), (firsts, seconds)), shape=(n_voxels,) * 2)
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    kept = sizes > size_threshold
    new_ids = np.zeros(len(sizes), np.int64)
    new_ids[kept] = np.arange(1, int(kept.sum()) + 1)
    return new_ids[labels].reshape(spatial), sizes[kept]


def ids2affinities(ids: np.ndarray, nhood: np.ndarray | Sequence[Sequence[int]] | None = None,
                   background_id: int | None = 0) -> np.ndarray:
    """Affinities from an id volume: edge k of voxel p connects p and p + nhood[k].

    Args:
        ids: (z, y, x) (or (y, x) with 2-column ``nhood``) integer ids.
        nhood: (n_edges, ndim) offsets; default: the predecessor along each axis.
        background_id: id that is never connected (None: no such id).
    Returns:
        uint8 (n_edges, *ids.shape): 1 where both ends have the same (non-background)
        id, 0 otherwise and where p + nhood[k] lies outside the volume.
    """
    ids = np.asarray(ids)
    nhood = affinity_nhood(ids.ndim) if nhood is None else np.asarray(nhood, int)
    if nhood.ndim != 2 or nhood.shape[1] != ids.ndim:
        raise ConfigError(f"nhood of shape {nhood.shape} does not fit {ids.ndim}-D ids; it "
                          f"needs one row of {ids.ndim} offsets per edge")
    aff = np.zeros((len(nhood),) + ids.shape, np.uint8)
    for k, offset in enumerate(nhood):
        here, there = offset_slices(ids.shape, offset)
        same = ids[here] == ids[there]
        if background_id is not None:
            same &= ids[here] != background_id
        aff[k][here] = same
    return aff


def check_affinity_offsets(offsets, n_spatial: int, tags: Sequence[str] | None = None
                           ) -> np.ndarray:
    """Affinity offsets as an int (k, n_spatial) array, or a ConfigError naming the fault.

    Each row is one edge: voxel p joins p + row. ``tags`` name the axes in messages.
    Rows must be integers, not all zero, and distinct.
    """
    axes = ','.join(tags) if tags else f"{n_spatial} spatial axes"
    try:
        values = np.asarray(offsets, float)
    except (TypeError, ValueError):
        values = None
    if values is None or values.ndim != 2 or values.shape[1] != n_spatial or not len(values):
        raise ConfigError(f"affinity_offsets={offsets!r}: give a list of offsets, each with "
                          f"{n_spatial} integers ({axes}), e.g. {(-np.eye(n_spatial, dtype=int)).tolist()}")
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ConfigError(f"affinity_offsets={np.asarray(offsets).tolist()}: offsets are whole "
                          f"voxels; use integers")
    values = values.astype(int)
    zero = [i for i, row in enumerate(values) if not row.any()]
    if zero:
        raise ConfigError(f"affinity_offsets row {zero[0]} is all zero: an edge joins a voxel to "
                          f"another one; remove it")
    rows = [tuple(row) for row in values.tolist()]
    repeated = sorted({row for row in rows if rows.count(row) > 1})
    if repeated:
        raise ConfigError(f"affinity_offsets repeat {list(repeated[0])}; give each edge once")
    return values


def affinity_edges(affinities: bool | str, offsets, tags: Sequence[str],
                   strides: Sequence[int], n_channels: int | None = None) -> np.ndarray | None:
    """The affinity edges (k, 3) in data order (z, y, x) for a target with axes ``tags``
    and ``strides`` (network order), checked; None without ``affinities``.

    ``offsets`` (k, n_spatial) in network order, or None for the neighbouring output
    voxels (one stride back along each axis); ``n_channels``: the target node's channels.
    """
    if not affinities:
        if offsets is not None:
            raise ConfigError(f"affinity_offsets={offsets!r} is given, but affinities="
                              f"{affinities!r}; pass affinities=True (or 'malis')")
        return None
    strides = np.asarray(strides)
    if offsets is None:
        net = -np.diag(strides)
    else:
        net = check_affinity_offsets(offsets, len(tags), tags)
        if np.any(strides > 1):
            raise ConfigError(f"affinity_offsets need an output of stride 1, but the target "
                              f"{','.join(tags)} has strides {tuple(strides.tolist())}: offsets "
                              f"in input and in output voxels would differ. Train affinities "
                              f"with a stride-1 output (e.g. a U-Net) or force_dense=True, or "
                              f"leave affinity_offsets unset for the neighbouring output voxels")
    if n_channels is not None and len(net) != n_channels:
        raise ConfigError(f"{len(net)} affinity edge(s) ({net.tolist()}, {','.join(tags)}) "
                          f"for a target node of {n_channels} channel(s); give one "
                          f"offset per target channel (affinity_offsets)")
    zyx = np.zeros((len(net), 3), int)
    for i, tag in enumerate(tags):
        zyx[:, 'zyx'.index(tag)] = net[:, i]
    return zyx


def edges_known(known: np.ndarray, nhood: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """bool (k, *known.shape): edge k of voxel p is known where p and p + nhood[k] both lie
    in the volume and are ``known`` (e.g. labelled)."""
    known = np.asarray(known, bool)
    nhood = np.asarray(nhood, int)
    out = np.zeros((len(nhood),) + known.shape, bool)
    for k, offset in enumerate(nhood):
        here, there = offset_slices(known.shape, offset)
        out[k][here] = known[here] & known[there]
    return out


def offset_slices(shape, offset) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices (here, there) so that ``there`` is ``here`` shifted by ``offset``, in bounds."""
    here, there = [], []
    for size, o in zip(shape, offset):
        here.append(slice(max(0, -o), size - max(0, o)))
        there.append(slice(max(0, o), size - max(0, -o)))
    return tuple(here), tuple(there)


def nhood_targets(target: np.ndarray, nhood: np.ndarray | Sequence[Sequence[int]] | None = None,
                  missing=-1) -> np.ndarray:
    """Neighbourhood targets: channel k holds, at voxel p, the label at p - nhood[k].

    Args:
        target: (b, 1, *spatial) labels.
        nhood: (k, n_spatial) offsets (default: :func:`target_nhood`).
        missing: value where p - nhood[k] lies outside the patch.
    Returns:
        (b, k, *spatial) array of ``target``'s dtype (signed if ``missing`` is negative).
    """
    spatial = target.shape[2:]
    nhood = target_nhood(len(spatial)) if nhood is None else np.asarray(nhood, int)
    if target.shape[1] != 1 or nhood.ndim != 2 or nhood.shape[1] != len(spatial):
        raise ConfigError(f"nhood_targets needs targets (b, 1, *spatial) and offsets "
                          f"(k, {len(spatial)}); got {target.shape} and {nhood.shape}")
    dtype = np.promote_types(target.dtype, np.min_scalar_type(missing))  # room for ``missing``
    out = np.full((target.shape[0], len(nhood)) + spatial, missing, dtype)
    for k, offset in enumerate(nhood):
        dest, src = offset_slices(spatial, -offset)
        out[(slice(None), k) + dest] = target[(slice(None), 0) + src]
    return out


def target_class_count(target_node) -> int | None:
    """Classes the labels of a target node stand for: its own class count (an Input_like of
    a Softmax), else that of its model's prediction node; None if neither has classes."""
    if target_node.class_count is not None:
        return target_node.class_count
    prediction = target_node.model.prediction_node
    return None if prediction is None else prediction.class_count
