"""Segmentation quality against ground truth: variation of information, adapted Rand error.

Both are computed from a contingency table: for every pair (segment id i, ground-truth
id j) the number of voxels n_ij labelled i in the segmentation and j in the ground
truth. Voxels whose ground-truth id is in ``ignore_gt`` (default 0: boundary /
unlabelled, the FIB-25 and gala convention) are left out; segment id 0 is an ordinary
segment. Tables of blocks add up, so large volumes are scored block by block
(:func:`evaluate_sources`).

* Variation of information (bits): split = H(seg | gt) (false splits, over-segmentation),
  merge = H(gt | seg) (false merges); VI = split + merge.
* Adapted Rand error (SNEMI3D, Arganda-Carreras et al. 2015), over pairs of distinct
  voxels: precision = pairs together in both / pairs together in seg, recall = pairs
  together in both / pairs together in gt; error = 1 - 2PR / (P + R).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ..data.sources import VolumeSource
from ..errors import ShapeError
from .geometry import BlockGrid, Box


def _compact(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct ids, int64 index of each voxel's id among them), as np.unique
    gives them; by counting where the ids are small non-negative integers."""
    ids = ids.ravel()
    if ids.size and ids.dtype.kind in 'iub' and ids.min() >= 0 and ids.max() < 4 * ids.size:
        present = np.bincount(ids.astype(np.int64), minlength=1) > 0
        values = np.flatnonzero(present)
        index = np.cumsum(present, dtype=np.int64) - 1
        return values.astype(ids.dtype), index[ids]
    values, inverse = np.unique(ids, return_inverse=True)
    return values, inverse.astype(np.int64).ravel()


@dataclass(frozen=True)
class Contingency:
    """Voxel counts per (segment id, ground-truth id) pair present; ids are unique pairs."""
    seg_ids: np.ndarray
    gt_ids: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, seg: np.ndarray, gt: np.ndarray, ignore_gt: Sequence[int] = (0,)) -> Contingency:
        """The table of two id arrays of equal shape."""
        seg, gt = np.asarray(seg), np.asarray(gt)
        if seg.shape != gt.shape:
            raise ShapeError(f"segmentation shape {seg.shape} differs from ground truth "
                             f"shape {gt.shape}; they must be equal")
        keep = ~np.isin(gt, list(ignore_gt))
        seg_u, seg_inv = _compact(seg[keep])
        gt_u, gt_inv = _compact(gt[keep])
        keys = seg_inv * len(gt_u) + gt_inv
        if len(seg_u) * len(gt_u) <= max(4 * keys.size, 1 << 16):   # counting beats sorting
            counts = np.bincount(keys, minlength=len(seg_u) * len(gt_u))
            pairs = np.flatnonzero(counts)
            counts = counts[pairs]
        else:
            pairs, counts = np.unique(keys, return_counts=True)
        return cls(seg_u[pairs // max(len(gt_u), 1)], gt_u[pairs % max(len(gt_u), 1)], counts)

    def __add__(self, other: Contingency) -> Contingency:
        return Contingency.total([self, other])

    @classmethod
    def total(cls, tables: Sequence[Contingency]) -> Contingency:
        """The table of the union of disjoint parts (e.g. blocks), from their tables."""
        seg = np.concatenate([t.seg_ids for t in tables])
        gt = np.concatenate([t.gt_ids for t in tables])
        pairs, inverse = np.unique(np.stack([seg, gt], 1), axis=0, return_inverse=True)
        counts = np.bincount(inverse.ravel(), np.concatenate([t.counts for t in tables]),
                             minlength=len(pairs))
        return cls(pairs[:, 0], pairs[:, 1], counts.astype(np.int64))

    @property
    def n_voxels(self) -> int:
        return int(self.counts.sum())

    def sizes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Voxels per segment and per ground-truth object, each also per table row:
        (segment sizes, object sizes, segment size of each row, object size of each row)."""
        _, seg_inv = np.unique(self.seg_ids, return_inverse=True)
        _, gt_inv = np.unique(self.gt_ids, return_inverse=True)
        seg_size, gt_size = np.bincount(seg_inv, self.counts), np.bincount(gt_inv, self.counts)
        return seg_size, gt_size, seg_size[seg_inv], gt_size[gt_inv]


def _table(seg: np.ndarray | Contingency, gt: np.ndarray | None,
           ignore_gt: Sequence[int]) -> Contingency:
    """``seg`` if it is a table already, else the table of ``seg`` and ``gt``."""
    if isinstance(seg, Contingency):
        return seg
    if gt is None:
        raise ShapeError("a segmentation array needs a ground truth array gt (or pass a "
                         "Contingency table instead)")
    return Contingency.of(seg, gt, ignore_gt)


def variation_of_information(seg: np.ndarray | Contingency, gt: np.ndarray | None = None,
                             ignore_gt: Sequence[int] = (0,)) -> tuple[float, float]:
    """(split, merge) in bits: H(seg | gt) and H(gt | seg); see the module docstring."""
    table = _table(seg, gt, ignore_gt)
    n = table.n_voxels
    if n == 0:
        return 0.0, 0.0
    p = table.counts / n
    _, _, seg_of_row, gt_of_row = table.sizes()
    split = -np.sum(p * np.log2(table.counts / gt_of_row))
    merge = -np.sum(p * np.log2(table.counts / seg_of_row))
    return max(0.0, float(split)), max(0.0, float(merge))


def adapted_rand_error(seg: np.ndarray | Contingency, gt: np.ndarray | None = None,
                       ignore_gt: Sequence[int] = (0,)) -> tuple[float, float, float]:
    """(error, precision, recall) of the adapted Rand index; see the module docstring."""
    table = _table(seg, gt, ignore_gt)
    counts = table.counts.astype(np.float64)
    seg_size, gt_size, _, _ = table.sizes()
    together = np.sum(counts * (counts - 1))
    in_seg, in_gt = np.sum(seg_size * (seg_size - 1)), np.sum(gt_size * (gt_size - 1))
    precision = together / in_seg if in_seg else 1.0
    recall = together / in_gt if in_gt else 1.0
    f_score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(1 - f_score), float(precision), float(recall)


def scores(table: Contingency) -> dict[str, float]:
    """All metrics of a table, by name."""
    split, merge = variation_of_information(table)
    error, precision, recall = adapted_rand_error(table)
    return {'voi_split': split, 'voi_merge': merge, 'voi': split + merge,
            'adapted_rand_error': error, 'rand_precision': precision, 'rand_recall': recall}


def evaluate_sources(seg: VolumeSource | np.ndarray, gt: VolumeSource | np.ndarray,
                     ignore_gt: Sequence[int] = (0,), block_shape: Sequence[int] = (64, 256, 256),
                     progress: bool = False,
                     offset: Sequence[int] | None = None) -> dict[str, float]:
    """:func:`scores` of two id volumes (sources or arrays, (z, y, x) or (y, x)), read block
    by block (``block_shape``, z, y, x): the blocks' tables add up to the whole volume's,
    so the scores equal those of the volumes in memory, in the memory of one block.

    ``offset``: where ``seg`` starts in ``gt`` (voxels; e.g. the ``voxel_offset`` of a
    prediction of a ``--region``); None: the two volumes have the same shape.
    """
    shape = tuple(seg.shape)
    if not 2 <= len(shape) <= 3 or min(shape) < 1:
        raise ShapeError(f"nothing to evaluate: the volumes have shape {shape}; give (z, y, x) "
                         f"or (y, x) id volumes")
    region = Box.from_shape(shape, offset or (0,) * len(shape))
    if not Box.from_shape(gt.shape).contains(region) or (offset is None and
                                                        shape != tuple(gt.shape)):
        raise ShapeError(f"segmentation {getattr(seg, 'name', '')} has shape {shape}, "
                         f"ground truth {getattr(gt, 'name', '')} {tuple(gt.shape)}; they must "
                         f"be equal, or the segmentation must lie inside the ground truth at "
                         f"its offset {tuple(region.lo)}")
    grid = BlockGrid(region, tuple(block_shape)[-len(shape):])
    tables: list[Contingency] = []
    for block in tqdm(grid, total=len(grid), unit='block', desc='evaluate', disable=not progress):
        tables.append(Contingency.of(seg[block.write.slices_in(region)],
                                     gt[block.write.slices_in(Box.from_shape(gt.shape))],
                                     ignore_gt))
        if len(tables) > 64:            # bounded: merge the tables of the blocks so far
            tables = [Contingency.total(tables)]
    return scores(Contingency.total(tables))
