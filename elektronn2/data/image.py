"""ELEKTRONN2's ``elektronn2.data.image``: label conversions, smoothing and simple
segmentations of boundary predictions, under their original names.

Label conversions map onto :mod:`elektronn2.data.labels`; the distance-transform and
threshold segmentations (``seg_old``, ``billig_seg``) and their parameter scans are here,
as in ELEKTRONN2 (for seeded watershed segmentation with merging see
:mod:`elektronn2.inference.segmentation`). Their quality score is the adapted Rand error
of scikit-image (0 = perfect; ground-truth id 0 is ignored).

Volumes are ``(z, y, x)``; batches ``(b, ...)``; channel-first where channels occur.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, ShapeError
from .labels import affinity_components, ids2affinities, nhood_targets
from .labels import ids2barriers as _ids2barriers
from .sources import fit_centred

logger = logging.getLogger('elektronn2')

__all__ = ['make_affinities', 'make_nhood_targets', 'downsample_xy', 'ids2barriers', 'blob',
           'smearbarriers', 'grow_seg', 'center_cubes', 'seg_old', 'seg_proc',
           'optimise_segmentation', 'randomise_colours', 'billig_seg', 'billig_seg_proc',
           'optimise_billig_segmentation']


# --- label conversions ----------------------------------------------------------------------
def make_affinities(labels: np.ndarray, nhood: np.ndarray | None = None,
                    size_thresh: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Affinities of a batch of id volumes and the ids re-derived from them.

    Args:
        labels: (b, z, y, x) integer ids; id 0 is never connected.
        nhood: (k, 3) edge offsets; edge k of voxel p joins p and p + nhood[k]
            (default: the successor along z, y and x, so the last plane of each axis
            has no edge).
        size_thresh: components (connected through the affinities) of at most this many
            voxels get id 0.
    Returns:
        aff int16 (b, k, z, y, x) (1 connected, 0 not) and seg (b, z, y, x): the
        connected components, ids 1..n per example (int16, int32 beyond 32767 ids).
    """
    labels = np.asarray(labels)
    nhood = np.eye(labels.ndim - 1, dtype=int) if nhood is None else np.asarray(nhood, int)
    aff = np.stack([ids2affinities(ids, nhood, background_id=0) for ids in labels]).astype(np.int16)
    seg = [affinity_components(a, nhood, size_thresh)[0] for a in aff]
    top = max((int(s.max()) for s in seg), default=0)
    return aff, np.stack(seg).astype(np.int16 if top <= np.iinfo(np.int16).max else np.int32)


def make_nhood_targets(target: np.ndarray, nhood: np.ndarray) -> np.ndarray:
    """(b, k, z, y, x) from (b, 1, z, y, x): channel k holds at p the label at p - nhood[k],
    -1 where that lies outside the patch (:func:`elektronn2.data.labels.nhood_targets`)."""
    return nhood_targets(np.asarray(target), nhood, missing=-1)


def downsample_xy(d: np.ndarray, l: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: E741
    """Average ``factor`` x ``factor`` blocks of the last two (y, x) axes of data and labels.

    Both are first cropped to multiples of ``factor`` in y and x; e.g. d (c, z, y, x) and
    l (z, y, x). Returns float32 ``(d, l)``; labels become block means (fractions for
    0/1 labels).
    """
    f = int(factor)
    if f < 1:
        raise ConfigError(f"downsample_xy factor={factor}; it must be a positive integer")

    def pool(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float32)
        ny, nx = a.shape[-2] // f, a.shape[-1] // f
        blocks = a[..., :ny * f, :nx * f].reshape(a.shape[:-2] + (ny, f, nx, f))
        return blocks.mean(axis=(-3, -1), dtype=np.float32)

    return pool(d), pool(l)


def ids2barriers(ids: np.ndarray, dilute: Sequence[bool] = [True, True, True],
                 connectivity: Sequence[bool] = [True, True, True], ecs_as_barr: bool | str = True,
                 smoothen: bool = False) -> np.ndarray:
    """int16 (z, y, x) boundaries of an id volume (:func:`elektronn2.data.labels.ids2barriers`;
    here diluted along every axis by default)."""
    return _ids2barriers(ids, dilute=dilute, connectivity=connectivity, ecs_as_barr=ecs_as_barr,
                         smoothen=smoothen)


# --- smoothing ------------------------------------------------------------------------------
def blob(sizes: Sequence[int]) -> np.ndarray:
    """Gaussian bump of shape ``sizes``: exp(-r²/2) on a grid from -2.2 to 2.2 per axis,
    scaled so that the sum of its squares is 1 (float64)."""
    grids = np.meshgrid(*[np.linspace(-2.2, 2.2, int(n)) for n in sizes], indexing='ij')
    bump = np.exp(-0.5 * sum(g ** 2 for g in grids))
    return bump / np.sqrt(np.sum(bump ** 2))


def _smear_kernel(ndim: int) -> np.ndarray:
    """Default kernel of :func:`smearbarriers`: (3, 5, 5), weights by distance in (y, x)
    within the z plane (1, 0.4, 0.2, 0.1 for r² = 0, 1, 2, 4) and above/below (0.2, 0.1
    for r² = 0, 1)."""
    if ndim != 3:
        raise ConfigError(f"smearbarriers has a default kernel for (z, y, x) volumes only; "
                          f"pass kernel=(sizes) for {ndim}-D barriers")
    dy, dx = np.meshgrid(np.arange(-2, 3), np.arange(-2, 3), indexing='ij')
    r2 = dy ** 2 + dx ** 2
    centre = np.select([r2 == 0, r2 == 1, r2 == 2, r2 == 4], [1.0, 0.4, 0.2, 0.1])
    side = np.select([r2 == 0, r2 == 1], [0.2, 0.1])
    return np.stack([side, centre, side]).astype(np.float32)


def smearbarriers(barriers: np.ndarray, kernel: Sequence[int] | None = None) -> np.ndarray:
    """Soft barrier targets (float32 in [0, 1], same shape as ``barriers``).

    The barriers and their complement are each spread with a kernel (clipped at 1) and
    the two results averaged, so thin barriers widen and thin gaps narrow alike.

    Args:
        barriers: (z, y, x) 0/1 (or soft) barrier map.
        kernel: None for the default 3 x 5 x 5 kernel (thin along z), or kernel sizes:
            a :func:`blob` of those sizes with centre weight 1.
    """
    barriers = np.asarray(barriers, np.float32)
    if kernel is None:
        weights = _smear_kernel(barriers.ndim)
    else:
        sizes = tuple(int(s) for s in kernel)
        weights = blob(sizes).astype(np.float32)
        weights[tuple(s // 2 for s in sizes)] = 1.0

    def spread(values: np.ndarray) -> np.ndarray:
        return np.minimum(ndimage.convolve(values, weights), 1.0)

    return 0.5 * (spread(barriers) + 1.0 - spread(1.0 - barriers))


def grow_seg(seg: np.ndarray, pixel: int | Sequence[int] = [1, 3, 3]) -> np.ndarray:
    """Grow segments into id 0 (background / ECS), one voxel per step.

    Args:
        seg: (z, y, x) ids.
        pixel: steps per axis (or one number for all); step i grows along the axes with
            more than i steps. Where two segments reach a voxel in the same step, its
            neighbour along the last of the axes, on the higher-index side, wins.
    Returns:
        the grown ids (a new array; ``seg`` itself if nothing grows).
    """
    steps = np.broadcast_to(np.asarray(pixel, int), (np.ndim(seg),))
    if steps.max(initial=0) <= 0:
        return seg
    seg = np.asarray(seg)
    for step in range(int(steps.max())):
        grown = seg.copy()
        for axis in np.flatnonzero(steps > step):
            for shift in (-1, 1):
                lower = [slice(None)] * seg.ndim
                upper = [slice(None)] * seg.ndim
                lower[axis], upper[axis] = slice(None, -1), slice(1, None)
                dest, src = (lower, upper) if shift == 1 else (upper, lower)
                dest, src = tuple(dest), tuple(src)
                fill = (seg[dest] == 0) & (seg[src] != 0)
                grown[dest][fill] = seg[src][fill]
        seg = grown
    return seg


def center_cubes(cube1: np.ndarray, cube2: np.ndarray,
                 crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Bring two centred arrays to equal spatial shape: crop the larger (``crop``) or
    zero-pad the smaller, per axis.

    Args:
        cube1, cube2: (c, z, y, x) or (z, y, x) (channel axes may differ); the spatial
            size differences must be even.
    Returns:
        both arrays, each with its own channel layout.
    """
    cubes = [np.asarray(c) for c in (cube1, cube2)]
    flat = [c.ndim == 3 for c in cubes]
    cubes = [c[None] if f else c for c, f in zip(cubes, flat)]
    diffs = np.subtract(cubes[0].shape[1:], cubes[1].shape[1:])
    if np.any(diffs % 2):
        raise ShapeError(f"center_cubes: spatial shapes {cubes[0].shape[1:]} and "
                         f"{cubes[1].shape[1:]} differ by an odd number along some axis")
    pick = np.minimum if crop else np.maximum
    shape = pick(cubes[0].shape[1:], cubes[1].shape[1:])
    out = [fit_centred(c, shape, 'crop' if crop else '0-pad') for c in cubes]
    return tuple(o[0] if f else o for o, f in zip(out, flat))


# --- segmentation ---------------------------------------------------------------------------
def _rand_error(gt: np.ndarray, seg: np.ndarray) -> float:
    """Adapted Rand error of ``seg`` against ``gt`` (ids 0 of gt ignored; 0 = perfect)."""
    from skimage.metrics import adapted_rand_error
    return float(adapted_rand_error(np.asarray(gt), np.asarray(seg), ignore_labels=(0,))[0])


def seg_old(pred: np.ndarray | None = None, thresh: float = 10.0, hi_thresh: float = 140,
            lo_thresh: float = 18, grow_it: int | Sequence[int] = 4, slack_dt: bool = True,
            scale: Sequence[float] = [20, 9, 9]) -> np.ndarray:
    """Distance-transform watershed of an integer boundary map (z, y, x) in 0..255.

    Seeds are the regions deeper than ``thresh`` (in the units of ``scale``, the voxel
    size (z, y, x)) inside ``pred <= lo_thresh``; the watershed floods the negative
    distance to ``pred > hi_thresh`` (plus, with ``slack_dt``, the distance into it).
    Thick boundary (``pred > 150`` after 3 erosions) floods as background (id 0).
    Returns int16 ids grown by ``grow_it`` voxels into the background (:func:`grow_seg`).
    """
    from skimage.segmentation import watershed
    if pred is None:
        raise ConfigError("seg_old needs pred, a (z, y, x) boundary map in 0..255")
    pred = np.asarray(pred)
    boundary = pred > hi_thresh
    landscape = -ndimage.distance_transform_edt(~boundary, sampling=scale)
    if slack_dt:
        landscape -= ndimage.distance_transform_edt(boundary, sampling=scale)
    depth = ndimage.distance_transform_edt(pred <= lo_thresh, sampling=scale)
    seeds, _ = ndimage.label(depth > thresh)
    seeds[seeds > 0] += 1
    seeds[ndimage.binary_erosion(pred > 150, iterations=3)] = 1  # the background seed
    ids = np.maximum(watershed(landscape, seeds) - 1, 0).astype(np.int16)  # no seeds: all 0
    return grow_seg(ids, pixel=grow_it)


def seg_proc(kwargs: dict) -> float:
    """Adapted Rand error of :func:`seg_old` with ``kwargs`` (``gt`` is popped from them
    and is the ground truth; the rest are seg_old's arguments)."""
    gt = kwargs.pop('gt')
    error = _rand_error(gt, seg_old(**kwargs))
    logger.info("seg_old: adapted Rand error %.4f with %s", error,
                {k: v for k, v in kwargs.items() if k != 'pred'})
    return error


def _scan(worker, args: list[dict], n_proc: int) -> np.ndarray:
    if n_proc > 1:
        with multiprocessing.get_context('forkserver').Pool(n_proc) as pool:
            return np.array(pool.map(worker, args))
    return np.array([worker(a) for a in args])


def _write_report(save_name: str, errors: np.ndarray, settings: list[dict], seg: np.ndarray) -> None:
    import h5py
    best = int(np.argmin(errors))
    lines = [f"{save_name} Evaluation (adapted Rand error, smaller is better)",
             f"BEST: RE={errors[best]:.4f} {settings[best]}"]
    lines += [f"RE={e:.4f} {s}" for e, s in zip(errors, settings)]
    with open(f"{save_name}-Seg_Params.txt", 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with h5py.File(f"{save_name}_seg.h5", 'w') as f:
        f.create_dataset('seg', data=randomise_colours(seg), compression='gzip')


def optimise_segmentation(gt: np.ndarray, pred: np.ndarray, save_name: str,
                          n_proc: int = 2) -> tuple[np.ndarray, float, np.ndarray]:
    """Scan :func:`seg_old` over 144 settings (thresh 37/40/43/56, hi_thresh 235/240/245,
    lo_thresh 1/2/3, grow_it (0,0,0)/(1,3,3)/(2,6,6)/(3,6,6)) on ``n_proc`` processes.

    Writes ``{save_name}-Seg_Params.txt`` (all scores) and ``{save_name}_seg.h5``
    (dataset 'seg': the best segmentation, :func:`randomise_colours`).
    Returns (errors per setting, best error, best segmentation).
    """
    settings = [dict(thresh=t, hi_thresh=h, lo_thresh=lo, grow_it=g) for t, g, h, lo in
                itertools.product([37, 40, 43, 56], [(0, 0, 0), (1, 3, 3), (2, 6, 6), (3, 6, 6)],
                                  [235, 240, 245], [1, 2, 3])]
    errors = _scan(seg_proc, [dict(gt=gt, pred=pred, **s) for s in settings], n_proc)
    best = int(np.argmin(errors))
    seg = seg_old(pred, **settings[best])
    _write_report(save_name, errors, settings, seg)
    logger.info("optimise_segmentation: best adapted Rand error %.4f", errors[best])
    return errors, float(errors[best]), seg


def randomise_colours(a: np.ndarray, size_filter: int = 1500) -> np.ndarray:
    """Ids shuffled for display: segments of more than ``size_filter`` voxels get random
    distinct ids 1..n-1 (the smallest such id, usually background 0, gets 0); smaller
    segments become 0. ``a`` holds non-negative ids; the result has its dtype."""
    a = np.asarray(a)
    kept = np.flatnonzero(np.bincount(a.ravel()) > size_filter)
    table = np.zeros(int(a.max(initial=0)) + 1, a.dtype)
    if len(kept):
        table[kept] = np.concatenate([[0], np.random.permutation(len(kept) - 1) + 1])
    return table[a]


def billig_seg(gt: np.ndarray, pred: np.ndarray, thresh: float,
               ecs_thresh: float) -> tuple[float, np.ndarray]:
    """Cheap segmentation: watershed of ``pred`` (boundary map) from the connected regions
    below ``thresh``, then id 0 where ``pred > ecs_thresh``.

    Returns (adapted Rand error against ``gt``, ids (z, y, x)).
    """
    from skimage.segmentation import watershed
    pred = np.asarray(pred)
    seeds, _ = ndimage.label(pred < thresh)
    seg = watershed(pred, seeds)
    seg[pred > ecs_thresh] = 0
    return _rand_error(gt, seg), seg


def billig_seg_proc(kwargs: dict) -> float:
    """Adapted Rand error of :func:`billig_seg` with ``kwargs`` (gt, pred, thresh, ecs_thresh)."""
    error, _ = billig_seg(kwargs['gt'], kwargs['pred'], kwargs['thresh'], kwargs['ecs_thresh'])
    logger.info("billig_seg: adapted Rand error %.4f with thresh=%s ecs_thresh=%s", error,
                kwargs['thresh'], kwargs['ecs_thresh'])
    return error


def optimise_billig_segmentation(gt: np.ndarray, pred: np.ndarray, save_name: str,
                                 n_proc: int = 2) -> tuple[float, np.ndarray]:
    """Scan :func:`billig_seg` over thresh = 100, 128, ..., 240 with ecs_thresh 253.

    Writes the same two files as :func:`optimise_segmentation`; returns (best error,
    best segmentation).
    """
    settings = [dict(thresh=float(t), ecs_thresh=253) for t in np.linspace(100, 240, 6)]
    errors = _scan(billig_seg_proc, [dict(gt=gt, pred=pred, **s) for s in settings], n_proc)
    best = int(np.argmin(errors))
    _, seg = billig_seg(gt, pred, **settings[best])
    _write_report(save_name, errors, settings, seg)
    return float(errors[best]), seg
