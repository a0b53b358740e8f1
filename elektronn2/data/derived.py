"""Volumes derived on read: sub-volumes and converted labels, without writing files.

Each class here is a :class:`~elektronn2.data.sources.VolumeSource` over another
source, lazy and picklable like any source, so it can go straight into the
``d_files`` / ``l_files`` of :class:`~elektronn2.data.BatchCreatorImage`:

* :class:`SubVolume`: a box of a volume, e.g. a training / validation / test split.
* :class:`BoundaryLabels`: object ids turned into boundary labels
  (:func:`~elektronn2.data.labels.ids2barriers`), exactly as if the whole volume had
  been converted.
* :class:`MappedLabels`: values replaced through a table, e.g. 0/255 masks to classes.
* :class:`AxisOrder`: a volume stored in another axis order (e.g. x,y,z), read as z,y,x.

Example (FIB-25: train on z 0..159, validate on z 160..199)::

    raw = HDF5Source(path, 'volumes/raw')
    boundaries = BoundaryLabels(HDF5Source(path, 'volumes/labels/neuron_ids'))
    d_files = [SubVolume(raw, np.s_[:160]), SubVolume(raw, np.s_[160:200])]
    l_files = [SubVolume(boundaries, np.s_[:160]), SubVolume(boundaries, np.s_[160:200])]
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import DataError, ShapeError
from .labels import ids2barriers
from .volume import VolumeSource, normalise_index


def _spatial_ndim(source: VolumeSource) -> int:
    """Spatial axes of a source stored (y,x), (z,y,x) or (c,z,y,x)."""
    if source.ndim not in (2, 3, 4):
        raise ShapeError(f"{source.name} has shape {source.shape}; volumes must be (y,x), "
                         f"(z,y,x) or (c,z,y,x)")
    return min(source.ndim, 3)


class SubVolume(VolumeSource):
    """The spatial box ``index`` of ``source`` (channels, if any, are kept).

    Args:
        source: the whole volume.
        index: unit-step slices of the spatial axes (z,y,x) or (y,x), numpy style:
            ``np.s_[160:200]`` is z 160..199 with all of y and x.
    """

    def __init__(self, source: VolumeSource, index):
        self.source = source
        n_spatial = _spatial_ndim(source)
        spatial_shape = source.shape[-n_spatial:]
        box, post = normalise_index(index, spatial_shape, source.name)
        if any(p != slice(None, None, 1) and p != slice(None) for p in post):
            raise ShapeError(f"SubVolume of {source.name}: index {index!r} must consist of "
                             f"unit-step slices (no integers, no steps)")
        if any(b.stop <= b.start for b in box):
            raise ShapeError(f"SubVolume of {source.name}: index {index!r} selects nothing "
                             f"of the spatial shape {spatial_shape}")
        self.start = tuple(b.start for b in box)
        self.shape = source.shape[:-n_spatial] + tuple(b.stop - b.start for b in box)
        self.dtype = source.dtype
        text = ','.join(f"{b.start}:{b.stop}" for b in box)
        self.name = f"{source.name}[{text}]"

    def _read(self, box):
        n_channel = len(box) - len(self.start)
        shifted = tuple(slice(b.start + s, b.stop + s) for b, s in zip(box[n_channel:], self.start))
        return self.source[box[:n_channel] + shifted]


class BoundaryLabels(VolumeSource):
    """int16 boundary labels of an id volume, computed for each read box.

    Equal to ``ids2barriers(ids[...], **options)[box]`` of the whole volume: each box
    is read with the margin the conversion looks at (1 voxel, 2 along diluted axes).

    Args:
        ids: (z,y,x) or (y,x) integer object ids.
        dilute, connectivity, ecs_as_barr: see :func:`~elektronn2.data.labels.ids2barriers`.
    """

    def __init__(self, ids: VolumeSource, dilute: bool | Sequence[bool] = False,
                 connectivity: bool | Sequence[bool] = True, ecs_as_barr: bool | str = True):
        if ids.ndim not in (2, 3) or np.dtype(ids.dtype).kind not in 'iu':
            raise DataError(f"BoundaryLabels needs integer ids (z,y,x) or (y,x); {ids.name} "
                            f"has shape {ids.shape} and dtype {ids.dtype}")
        self.ids = ids
        self.options = dict(dilute=dilute, connectivity=connectivity, ecs_as_barr=ecs_as_barr)
        ids2barriers(np.zeros((1,) * ids.ndim, ids.dtype), **self.options)  # checks the options
        per_axis = np.broadcast_to(np.asarray(dilute, bool), (ids.ndim,))
        self.margin = np.where(per_axis, 2, 1)
        self.shape = tuple(ids.shape)
        self.dtype = np.dtype(np.int16)
        self.name = f"boundaries({ids.name})"

    def _read(self, box):
        lo = np.array([b.start for b in box])
        hi = np.array([b.stop for b in box])
        outer_lo = np.maximum(lo - self.margin, 0)
        outer_hi = np.minimum(hi + self.margin, self.shape)
        ids = self.ids[tuple(slice(a, b) for a, b in zip(outer_lo, outer_hi))]
        barriers = ids2barriers(ids, **self.options)
        return barriers[tuple(slice(a, b) for a, b in zip(lo - outer_lo, hi - outer_lo))]


class MappedLabels(VolumeSource):
    """int16 labels: every value of ``source`` replaced through ``mapping``.

    Args:
        source: integer labels.
        mapping: value -> label, e.g. ``{0: 1, 255: 0}`` (ISBI 2012: membrane 0 -> class 1).
        default: label of values missing from ``mapping``; None: such values are an error.
    """

    def __init__(self, source: VolumeSource, mapping: Mapping[int, int],
                 default: int | None = None):
        if not mapping:
            raise DataError(f"MappedLabels of {source.name}: the mapping is empty")
        self.source = source
        self.mapping = {int(k): int(v) for k, v in mapping.items()}
        self.default = default
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(np.int16)
        self.name = f"mapped({source.name})"

    def _read(self, box):
        values = np.asarray(self.source[box])
        labels = np.full(values.shape, -1 if self.default is None else self.default, np.int16)
        known = np.zeros(values.shape, bool)
        for value, label in self.mapping.items():
            hit = values == value
            labels[hit] = label
            known |= hit
        if self.default is None and not known.all():
            unmapped = np.unique(values[~known])[:10].tolist()
            raise DataError(f"{self.source.name} holds values {unmapped} that the mapping "
                            f"{self.mapping} does not cover; add them or give a default")
        return labels


class AxisOrder(VolumeSource):
    """A volume stored with its spatial axes in another order, read as (z,y,x).

    Args:
        source: (…, a, b, c) or (c, a, b, c') volume whose spatial axes are named by
            ``stored``.
        stored: the stored spatial order, e.g. 'xyz' (ELEKTRONN2's ``zxy=False`` and
            ELEKTRONN v1 volumes) or 'zxy'; a permutation of 'zyx' (or of 'yx' for 2-D).
    """

    def __init__(self, source: VolumeSource, stored: str):
        n_spatial = _spatial_ndim(source)
        valid = 'zyx'[-n_spatial:]
        if sorted(stored) != sorted(valid):
            raise DataError(f"AxisOrder of {source.name}: stored={stored!r} must name the "
                            f"{n_spatial} spatial axes {valid!r} in some order")
        self.source = source
        self.n_channel = source.ndim - n_spatial
        #: for each (z,y,x) axis, the stored axis it is read from
        self.axes = tuple(stored.index(a) for a in valid)
        spatial = source.shape[self.n_channel:]
        self.shape = source.shape[:self.n_channel] + tuple(spatial[a] for a in self.axes)
        self.dtype = source.dtype
        self.name = f"{source.name} ({stored} as {valid})"

    def _read(self, box):
        spatial = box[self.n_channel:]
        stored = [slice(None)] * len(spatial)
        for ours, axis in enumerate(self.axes):
            stored[axis] = spatial[ours]
        values = np.asarray(self.source[box[:self.n_channel] + tuple(stored)])
        lead = list(range(self.n_channel))
        return values.transpose(lead + [self.n_channel + a for a in self.axes])
