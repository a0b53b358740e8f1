"""OME-Zarr (OME-NGFF) outputs: multiscale metadata, label pyramids by mode.

A multiscale group holds one array per level (``'0'`` full resolution, ``'1'`` half, ...)
and the ``multiscales`` metadata that napari (napari-ome-zarr), ``ome-zarr`` and
neuroglancer read: the axes with their units, and per level the voxel size (``scale``)
and the position of the first voxel's centre (``translation``), in physical units.
The NGFF version follows the zarr format the installed zarr writes: 0.4 for zarr v2
(attributes ``multiscales``), 0.5 for zarr v3 (attributes ``ome``).

Levels of a segmentation are downsampled by 2 per axis taking the most frequent id of
each 2x2x2 window (:func:`downsample_mode`); the centre of a level-k voxel is the centre
of its window, hence ``translation_k = translation_0 + (2**k - 1) / 2 * voxel_size``.
:func:`describe_prediction` adds the metadata to an ``elektronn2-predict`` output.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError

NGFF_AXES = {'c': 'channel', 'z': 'space', 'y': 'space', 'x': 'space'}


def zarr_format(node) -> int:
    """The zarr format (2 or 3) of a zarr group or array (zarr-python 2 writes only 2)."""
    return getattr(getattr(node, 'metadata', None), 'zarr_format', 2)


def ngff_version(zarr_format: int) -> str:
    """The OME-NGFF version that goes with a zarr format (2 -> 0.4, 3 -> 0.5)."""
    return '0.5' if zarr_format == 3 else '0.4'


def multiscales(axes: str, voxel_size: Sequence[float], translation: Sequence[float],
                n_levels: int, unit: str | None = None, name: str = '',
                paths: Sequence[str] | None = None, version: str = '0.5') -> dict:
    """The ``multiscales`` entry of ``n_levels`` levels on ``axes`` (e.g. 'zyx', 'czyx');
    ``voxel_size`` and ``translation`` are per spatial axis (z, y, x) at level 0."""
    axes_meta = [{'name': a, 'type': NGFF_AXES[a]} for a in axes]
    for axis in axes_meta:
        if axis['type'] == 'space' and unit:
            axis['unit'] = unit
    leading = [1.0] * (len(axes) - 3)
    datasets = []
    for level in range(n_levels):
        factor = 2 ** level
        scale = [float(v) * factor for v in voxel_size]
        shift = [float(t) + (factor - 1) / 2 * float(v) for t, v in zip(translation, voxel_size)]
        datasets.append({'path': paths[level] if paths else str(level),
                         'coordinateTransformations': [
                             {'type': 'scale', 'scale': leading + scale},
                             {'type': 'translation', 'translation': [0.0] * len(leading) + shift}]})
    entry = {'axes': axes_meta, 'datasets': datasets, 'name': name}
    if version == '0.4':
        entry['version'] = '0.4'
    return entry


def write_multiscales(group, entry: dict) -> None:
    """Store a :func:`multiscales` entry in a zarr group's attributes (as its format wants)."""
    if zarr_format(group) == 3:
        group.attrs['ome'] = {'version': '0.5', 'multiscales': [entry]}
    else:
        group.attrs['multiscales'] = [entry]


def read_multiscales(group) -> dict | None:
    """The first ``multiscales`` entry of a zarr group (NGFF 0.4 or 0.5), or None."""
    attrs = dict(group.attrs)
    found = attrs.get('ome', {}).get('multiscales') or attrs.get('multiscales')
    return found[0] if found else None


def create_label_pyramid(path: str | os.PathLike, shape: Sequence[int], chunks: Sequence[int],
                         dtype, n_levels: int, voxel_size: Sequence[float],
                         translation: Sequence[float], unit: str | None, attrs: dict,
                         name: str = ''):
    """A new multiscale group of ``n_levels`` (z, y, x) label arrays at ``path``; chunks of
    level k are ``chunks // 2**k`` (blocks write their own chunks at every level)."""
    import zarr
    group = zarr.open_group(store=str(path), mode='w-')
    names: dict[str, Any] = {'dimension_names': ('z', 'y', 'x')} if zarr_format(group) == 3 else {}
    for level in range(n_levels):
        factor = 2 ** level
        zarr.open_array(store=str(path), path=str(level), mode='w-',
                        shape=tuple(-(-n // factor) for n in shape),
                        chunks=tuple(max(1, c // factor) for c in chunks), dtype=dtype,
                        fill_value=0, **names)
    entry = multiscales('zyx', voxel_size, translation, n_levels, unit, name,
                        version=ngff_version(zarr_format(group)))
    write_multiscales(group, entry)
    group.attrs.update(attrs)
    return group


def pyramid_levels(shape: Sequence[int], block_shape: Sequence[int], smallest: int = 8) -> int:
    """Levels a block grid can write block by block: halve while every block side stays
    even and the volume's smallest side at the next level is at least ``smallest``."""
    levels, factor = 1, 1
    while (all(b % (2 * factor) == 0 for b in block_shape)
           and min(shape) // (2 * factor) >= smallest):
        factor *= 2
        levels += 1
    return levels


def downsample_mode(labels: np.ndarray) -> np.ndarray:
    """(z, y, x) labels halved per axis: the most frequent id of each 2x2x2 window (ties:
    the smallest id); odd sides are padded by repeating the last plane."""
    pad = [(0, n % 2) for n in labels.shape]
    labels = np.pad(labels, pad, mode='edge') if any(p for _, p in pad) else labels
    z, y, x = (n // 2 for n in labels.shape)
    windows = labels.reshape(z, 2, y, 2, x, 2).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 8)
    windows = np.sort(windows, axis=1)
    counts = (windows[:, :, None] == windows[:, None, :]).sum(-1)
    best = np.argmax(counts, axis=1)   # first maximum in sorted order: the smallest id
    return windows[np.arange(len(windows)), best].reshape(z, y, x)


def describe_prediction(path: str | os.PathLike, key: str = 'probabilities',
                        voxel_size: Sequence[float] | None = None,
                        translation: Sequence[float] | None = None,
                        unit: str | None = None) -> dict:
    """Add single-level OME-NGFF metadata (axes c, z, y, x) for the array ``key`` to the
    root group of an ``elektronn2-predict`` zarr output; the voxel size and translation
    default to the array's ``resolution`` and ``offset`` attributes. Returns the entry."""
    import zarr
    group = zarr.open_group(store=str(path), mode='r+')
    array: Any = group.get(key)
    if not isinstance(array, zarr.Array):
        raise DataError(f"{path} holds no array {key!r}; give the prediction's --output-key")
    if array.ndim != 4:
        raise DataError(f"{path}:{key} has shape {array.shape}; a prediction is (c, z, y, x)")
    stored: dict[str, Any] = dict(array.attrs)
    found = voxel_size or stored.get('resolution') or stored.get('voxel_size') or (1, 1, 1)
    spacing = np.broadcast_to(np.asarray(found, float), (3,))
    shift = translation or stored.get('offset') or (
        np.asarray(stored.get('voxel_offset', (0, 0, 0))) * spacing).tolist()
    entry = multiscales('czyx', spacing.tolist(), shift, 1, unit, key, [key],
                        version=ngff_version(zarr_format(group)))
    if zarr_format(group) == 3 and getattr(array.metadata, 'dimension_names') is None:
        _name_dimensions(Path(path, key, 'zarr.json'), ['c', 'z', 'y', 'x'])
    write_multiscales(group, entry)
    return entry


def _name_dimensions(metadata_file: Path, names: list[str]) -> None:
    """Add ``dimension_names`` (required by NGFF 0.5) to a zarr v3 array's metadata."""
    metadata = json.loads(metadata_file.read_text())
    metadata['dimension_names'] = names
    metadata_file.write_text(json.dumps(metadata, indent=2))


def level_key(path: str | os.PathLike, level: int = 0) -> str | None:
    """The array path of ``level`` in an OME-Zarr multiscale group at ``path``; None for
    anything else (other files, plain zarr arrays and groups)."""
    import zarr
    if not Path(path).is_dir():
        return None
    try:
        node = zarr.open(store=str(path), mode='r')
    except Exception:  # not a zarr store: the caller's reader says what it is
        return None
    entry = read_multiscales(node) if isinstance(node, zarr.Group) else None
    if entry is None:
        return None
    if not 0 <= level < len(entry['datasets']):
        raise DataError(f"{path} has {len(entry['datasets'])} levels; level {level} requested")
    return entry['datasets'][level]['path']
