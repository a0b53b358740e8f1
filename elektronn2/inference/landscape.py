"""The boundary map a segmentation floods, read box by box from a prediction.

A :class:`Landscape` reads a boundary probability (z, y, x) of any box of the volume
from what ``elektronn2-predict`` writes: class probabilities (c, z, y, x), of which one
channel (default the last: the boundary class of a two-class net) is the boundary; a
single (z, y, x) map; or affinities (k, z, y, x) -- or k of the prediction's channels,
e.g. the 'connected' channels 1, 3, 5, ... of a two-class softmax per edge -- turned
into a boundary map by
:func:`~.segmentation.boundaries_from_affinities` from the box grown by the
neighbourhood's reach, so that every voxel gets the value a whole-volume conversion
gives it. uint8 values are probabilities times 255 (``--dtype uint8``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.labels import affinity_nhood
from ..data.sources import VolumeSource, channel_volume_shape, read_channel_box, require_real
from ..errors import ConfigError, DataError
from .geometry import Box
from .segmentation import boundaries_from_affinities


@dataclass(frozen=True)
class Landscape:
    """Boundary values of ``source`` (see the module docstring); picklable.

    ``channel``: the boundary channel of class probabilities; ``nhood``: (k, 3) affinity
    offsets (None: not affinities); ``affinity_channels``: the k prediction channels
    holding the affinities of the offsets in order (None: all channels); ``voxel_size``,
    ``translation`` (z, y, x, physical units) and ``unit`` describe the grid for OME-Zarr
    outputs, ``voxel_offset`` where the prediction starts in its raw volume (voxels).
    """
    source: VolumeSource
    channel: int = -1
    nhood: tuple[tuple[int, ...], ...] | None = None
    voxel_size: tuple[float, ...] = (1.0, 1.0, 1.0)
    translation: tuple[float, ...] = (0.0, 0.0, 0.0)
    unit: str | None = None
    voxel_offset: tuple[int, ...] = (0, 0, 0)
    affinity_channels: tuple[int, ...] | None = None

    @classmethod
    def of(cls, source: VolumeSource, affinities: bool = False, channel: int = -1,
           nhood: Sequence[Sequence[int]] | np.ndarray | None = None,
           attrs: dict | None = None,
           affinity_channels: Sequence[int] | None = None) -> Landscape:
        """Check ``source`` and read its grid from ``attrs`` (resolution / voxel_size,
        offset, voxel_offset as ``elektronn2-predict`` stores them)."""
        require_real(source.name, source.dtype, 'A boundary map or affinity map')
        n_channels, _ = channel_volume_shape(source)
        table, selected = None, None
        if affinity_channels is not None and not affinities:
            raise ConfigError("affinity channels (--affinity-channels) are given, but the "
                              "prediction is not read as affinities (--affinities)")
        if affinities:
            offsets = affinity_nhood(3) if nhood is None else np.asarray(nhood, int)
            if affinity_channels is not None:
                selected = _checked_channels(affinity_channels, n_channels, source)
            n_used = n_channels if selected is None else len(selected)
            if offsets.ndim != 2 or offsets.shape != (n_used, 3):
                hint = (f"; a two-class softmax per edge keeps edge k's affinity in channel "
                        f"2k + 1: --affinity-channels {' '.join(map(str, range(1, n_channels, 2)))}"
                        if selected is None and n_channels == 2 * len(offsets) else '')
                raise ConfigError(f"{source.name} has {n_channels} channel(s) (shape "
                                  f"{source.shape}), {n_used} of them affinities; they need one "
                                  f"per nhood offset (--nhood, {len(offsets)} given, (k, 3)){hint}")
            table = tuple(tuple(int(v) for v in row) for row in offsets)
        elif not -n_channels <= channel < n_channels:
            raise ConfigError(f"--channel {channel}: {source.name} has {n_channels} channel(s) "
                              f"(shape {source.shape})")
        attrs = attrs or {}
        found = attrs.get('resolution', attrs.get('voxel_size'))
        spacing = np.broadcast_to(np.asarray(found if found is not None else 1.0, float), (3,))
        if 'offset' in attrs:
            shift = np.broadcast_to(np.asarray(attrs['offset'], float), (3,))
        else:
            shift = np.asarray(attrs.get('voxel_offset', (0, 0, 0)), float) * spacing
        return cls(source, channel, table, tuple(spacing.tolist()), tuple(shift.tolist()),
                   'nanometer' if found is not None else None,
                   tuple(int(v) for v in attrs.get('voxel_offset', (0, 0, 0))), selected)

    @property
    def shape(self) -> tuple[int, int, int]:
        return channel_volume_shape(self.source)[1]

    def describe(self) -> dict:
        """What a resumed run must share with the first one (JSON-able)."""
        return {'source': self.source.name, 'shape': list(self.source.shape),
                'channel': self.channel, 'nhood': self.nhood,
                'affinity_channels': self.affinity_channels}

    def _scaled(self, data: np.ndarray, box: Box) -> np.ndarray:
        values = data.astype(np.float32) / 255 if data.dtype == np.uint8 else \
            data.astype(np.float32, copy=False)
        if values.size and not (np.isfinite(values).all() and 0 <= values.min()
                                and values.max() <= 1):
            raise DataError(f"{self.source.name} holds values outside [0, 1] (or NaN/Inf) "
                            f"(min {np.nanmin(values):.3g}, max {np.nanmax(values):.3g} in the "
                            f"box {box}, z, y, x); segmentation needs probabilities")
        return values

    def _affinities(self, box: Box) -> np.ndarray:
        """float32 affinities (k, z, y, x) of ``box``, one channel per nhood offset."""
        data = read_channel_box(self.source, box.lo, box.hi)
        if self.affinity_channels is not None:
            data = data[list(self.affinity_channels)]
        return self._scaled(data, box)

    def read(self, box: Box) -> np.ndarray:
        """float32 boundary values (z, y, x) of ``box`` (inside the volume)."""
        if self.nhood is None:
            return self._scaled(read_channel_box(self.source, box.lo, box.hi)[self.channel], box)
        reach = np.abs(np.asarray(self.nhood)).max(0).tolist()
        outer = Box([max(lo - r, 0) for lo, r in zip(box.lo, reach)],
                    [min(hi + r, n) for hi, r, n in zip(box.hi, reach, self.shape)])
        return boundaries_from_affinities(self._affinities(outer), self.nhood)[box.slices_in(outer)]

    def rim(self, box: Box, width: int = 1) -> np.ndarray:
        """float64 boundary values of ``box`` grown by ``width`` voxels, ``+inf`` outside the
        volume."""
        grown = box.grow((width,) * 3, (width,) * 3)
        inner = Box([max(lo, 0) for lo in grown.lo],
                    [min(hi, n) for hi, n in zip(grown.hi, self.shape)])
        out = np.full(grown.shape, np.inf)
        out[inner.slices_in(grown)] = self.read(inner)
        return out

    def edge_boundary(self, box: Box) -> list[np.ndarray]:
        """Per axis z, y, x: 1 - the affinity of each voxel of ``box`` to its predecessor."""
        if self.nhood is None:
            raise ConfigError("edge_values='affinities' needs affinities as input "
                              "(--affinities)")
        channels = []
        for axis in range(3):
            step = tuple(-int(a == axis) for a in range(3))
            if step not in self.nhood:
                raise ConfigError(f"edge_values='affinities' needs the offset {step} in the "
                                  f"nhood {self.nhood}")
            channels.append(self.nhood.index(step))
        data = self._affinities(box)
        return [1 - data[k] for k in channels]


def _checked_channels(channels: Sequence[int], n_channels: int, source: VolumeSource
                      ) -> tuple[int, ...]:
    """``channels`` as non-negative indices of the ``n_channels`` of ``source``, checked."""
    found = tuple(int(c) for c in channels)
    bad = [c for c in found if not -n_channels <= c < n_channels]
    if bad or not found:
        raise ConfigError(f"--affinity-channels {' '.join(map(str, found))}: {source.name} has "
                          f"{n_channels} channel(s) (shape {source.shape}); give indices in "
                          f"0..{n_channels - 1}, one per nhood offset")
    return tuple(c % n_channels for c in found)
