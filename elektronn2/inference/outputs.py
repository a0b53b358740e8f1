"""Where block results go: zarr (parallel, resumable), HDF5 (atomic) or memory.

Writers hold an output array of shape ``(f, *region.shape)`` (channel first, then
z, y, x) chunked like the block grid, so every block owns exactly one chunk.

* :class:`ZarrBlockWriter`: any process may write its block; after the data, an empty
  done-marker file ``<array>/.elektronn2_done/<block>`` is created. A killed run resumes
  by skipping marked blocks and rewriting the others whole; the array's attributes hold
  the run's manifest (a resumed run must match it) and ``complete`` (True only at the
  end). Nothing is fsync'ed: this survives killed processes, not power loss.
* :class:`HDF5BlockWriter`: writes from the main process into ``<file>.partial``,
  renamed to the final name when every block is in (never a half-written file under
  the final name), deleted when the run fails; not resumable.
* :class:`ArrayWriter`: an in-memory numpy array.

:func:`open_writer` writes nothing where something else is: an existing HDF5 file, a
file or non-zarr directory at a zarr path, a foreign array or one of a run with other
settings are refused (a DataError or ConfigError) and left as they are.

An output of a ``--region`` records where it starts in its input (``voxel_offset``):
:func:`offset_in` and :func:`truth_under` find the box of a ground truth it covers.
"""
from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.knossos import KnossosSource
from ..data.sources import HDF5_SUFFIXES, HDF5Source, VolumeSource, ZarrSource, is_zarr_store
from ..errors import ConfigError, DataError, ShapeError
from .geometry import Block, BlockGrid, Box
from .ome_zarr import describe_prediction

logger = logging.getLogger('elektronn2')

MANIFEST_ATTR = 'elektronn2_predict'
COMPLETE_ATTR = 'complete'
MARKER_DIR = '.elektronn2_done'
_GEOMETRY_ATTRS = ('resolution', 'voxel_size', 'offset')


def manifest_differences(earlier: dict, now: dict, prefix: str = '') -> list[str]:
    """The keys in which two manifests differ, nested ones dotted (``predictor.precision``)."""
    differences = []
    for key in sorted(set(earlier) | set(now)):
        old, new = earlier.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += manifest_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}")
    return differences


class BlockWriter(ABC):
    """Receives ``(f, *block.write.shape)`` arrays, one per block of ``grid``."""
    #: whether workers may write blocks concurrently (else the main process writes)
    parallel_safe = False
    #: whether a rerun of an interrupted prediction keeps the blocks already written
    resumable = False

    def __init__(self, grid: BlockGrid, n_classes: int, dtype: str):
        self.grid = grid
        self.shape = (n_classes,) + grid.region.shape
        self.chunks = (n_classes,) + grid.block_shape
        self.dtype = np.dtype(dtype)

    def done(self) -> set[str]:
        """Names of blocks already written by an earlier run (resumable writers)."""
        return set()

    @abstractmethod
    def write(self, block: Block, data: np.ndarray) -> None:
        """Store the data of ``block`` at its place in the output."""

    def finish(self) -> None:
        """Mark the output complete (called once all blocks are written)."""

    def abort(self) -> None:
        """Clean up after a failed run (resumable outputs keep what is done)."""

    def _index(self, block: Block) -> tuple[slice, ...]:
        return (slice(None),) + block.write.slices_in(self.grid.region)


class ArrayWriter(BlockWriter):
    """Collects the blocks in a numpy array :attr:`result`."""

    def __init__(self, grid: BlockGrid, n_classes: int, dtype: str):
        super().__init__(grid, n_classes, dtype)
        self.result = np.zeros(self.shape, self.dtype)

    def write(self, block: Block, data: np.ndarray) -> None:
        self.result[self._index(block)] = data


class ZarrBlockWriter(BlockWriter):
    """A zarr array ``key`` in the store ``path``, one chunk per block; see the module docstring.

    Creates the array, or reopens it to resume when its manifest equals ``manifest``.
    """
    parallel_safe = True
    resumable = True

    def __init__(self, path: str | os.PathLike, key: str, grid: BlockGrid, n_classes: int,
                 dtype: str, attrs: dict, manifest: dict):
        super().__init__(grid, n_classes, dtype)
        import zarr
        self.path, self.key = str(Path(path).expanduser().resolve()), key
        self.manifest = json.loads(json.dumps(manifest))
        array = self._existing()
        if array is None:
            array = zarr.open_array(store=self.path, path=key, mode='w-', shape=self.shape,
                                    chunks=self.chunks, dtype=self.dtype, fill_value=0)
            array.attrs.update({**attrs, MANIFEST_ATTR: self.manifest, COMPLETE_ATTR: False})
        self.marker_dir = Path(self.path, key, MARKER_DIR)
        self.marker_dir.mkdir(exist_ok=True)

    def _existing(self):
        """The array of an earlier run with the same manifest, or None if there is none."""
        import zarr
        if not os.path.exists(self.path):
            return None
        try:
            array = zarr.open_array(store=self.path, path=self.key, mode='r+')
        except Exception:  # zarr raises different errors for a missing or foreign node
            if os.path.exists(os.path.join(self.path, self.key)):
                raise DataError(f"{self.path}:{self.key} exists but is not a zarr array; "
                                f"choose another output path or key") from None
            return None
        earlier = array.attrs.get(MANIFEST_ATTR)
        if earlier is None:
            raise DataError(f"Output {self.path}:{self.key} exists and was not written by "
                            f"elektronn2-predict; choose a new output path or key")
        if earlier != self.manifest:
            differences = manifest_differences(earlier, self.manifest)
            raise ConfigError(f"Output {self.path}:{self.key} exists from another run (differs in "
                              f"{differences}); resume only with the same model, input and "
                              f"settings, or choose a new output path")
        logger.info("Resuming %s:%s", self.path, self.key)
        return array

    def _array(self):
        import zarr
        if getattr(self, '_pid', None) != os.getpid():
            self._handle = zarr.open_array(store=self.path, path=self.key, mode='r+')
            self._pid = os.getpid()
        return self._handle

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ('_handle', '_pid')}

    def done(self) -> set[str]:
        return {p.name for p in self.marker_dir.iterdir()}

    def write(self, block: Block, data: np.ndarray) -> None:
        self._array()[self._index(block)] = data
        (self.marker_dir / block.name).touch()  # only after the data is in

    def finish(self) -> None:
        """Mark the array complete and describe it as OME-NGFF (viewers read the axes,
        voxel size and offset)."""
        self._array().attrs[COMPLETE_ATTR] = True
        describe_prediction(self.path, self.key)


class HDF5BlockWriter(BlockWriter):
    """Dataset ``key`` of the HDF5 file ``path``, written as ``path.partial`` then renamed."""

    def __init__(self, path: str | os.PathLike, key: str, grid: BlockGrid, n_classes: int,
                 dtype: str, attrs: dict, manifest: dict):
        super().__init__(grid, n_classes, dtype)
        import h5py
        self.path = Path(path).expanduser()
        if self.path.exists():
            raise DataError(f"Output {self.path} exists; HDF5 outputs are never overwritten "
                            f"(delete it, or write a .zarr output, which can resume)")
        self.partial = self.path.with_name(self.path.name + '.partial')
        self.file = h5py.File(self.partial, 'w')
        chunks = tuple(min(c, n) for c, n in zip(self.chunks, self.shape))  # h5py: <= shape
        self.dataset = self.file.create_dataset(key, shape=self.shape, chunks=chunks,
                                                dtype=self.dtype, compression='gzip')
        self.dataset.attrs.update({k: json.dumps(v) if isinstance(v, dict) else v
                                   for k, v in {**attrs, MANIFEST_ATTR: manifest}.items()})

    def write(self, block: Block, data: np.ndarray) -> None:
        self.dataset[self._index(block)] = data

    def finish(self) -> None:
        self.file.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


def open_writer(path: str | os.PathLike, key: str, grid: BlockGrid, n_classes: int, dtype: str,
                attrs: dict, manifest: dict) -> BlockWriter:
    """A zarr writer for ``*.zarr`` paths, an HDF5 writer for ``*.h5``/``.hdf5``/``.hdf``."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise DataError(f"Output {path}: its directory {path.parent} does not exist; create it "
                        f"first")
    suffix = path.suffix.lower()
    if suffix == '.zarr':
        _require_zarr_or_nothing(path)
        return ZarrBlockWriter(path, key, grid, n_classes, dtype, attrs, manifest)
    if suffix in HDF5_SUFFIXES:
        return HDF5BlockWriter(path, key, grid, n_classes, dtype, attrs, manifest)
    raise ConfigError(f"Output {path}: unknown format; name it *.zarr (resumable, parallel) "
                      f"or one of {HDF5_SUFFIXES}")


def _require_zarr_or_nothing(path: Path) -> None:
    """Refuse a zarr output path where a file or a non-empty non-zarr directory is."""
    if path.exists() and not path.is_dir():
        raise DataError(f"Output {path} exists as a file, not a zarr store (a directory); "
                        f"choose another output path")
    if (path.is_dir() and any(path.iterdir())
            and not is_zarr_store(path)):
        raise DataError(f"Output {path} is a directory that is not a zarr store; choose "
                        f"another output path (an empty or new directory, or a zarr store)")


def source_attributes(source: VolumeSource) -> dict:
    """Geometry attributes (resolution, voxel_size, offset) stored with an input volume."""
    found = stored_attributes(source)
    return {k: np.asarray(found[k]).tolist() for k in _GEOMETRY_ATTRS if k in found}


def stored_attributes(source: VolumeSource) -> dict:
    """All attributes stored with a volume (KNOSSOS: its resolution).

    (``data.sources`` does not expose attributes; this reads them with h5py / zarr.)
    """
    found = {}
    if isinstance(source, HDF5Source):
        import h5py
        with h5py.File(source.path, 'r') as f:
            found = dict(f[source.key].attrs)
    elif isinstance(source, ZarrSource):
        import zarr
        node = zarr.open(store=str(source.path), mode='r')
        if source.key:
            if not isinstance(node, zarr.Group):
                raise DataError(f"{source.path} is a zarr array, not a group: it has no "
                                f"key {source.key!r}")
            node = node[source.key]
        found = dict(node.attrs)
    elif isinstance(source, KnossosSource):  # scale of mag 1, times the magnification
        found = {'resolution': [s * source.mag for s in source.confs[0]['scale']]}
    return found


def offset_in(source: VolumeSource, volume_shape: Sequence[int]) -> list[int] | None:
    """Where ``source`` (a prediction or segmentation of a ``--region``) starts in a
    volume of spatial shape ``volume_shape``, e.g. its ground truth: None when the spatial
    shapes are equal, else the ``voxel_offset`` stored with ``source`` (None if it has none)."""
    if tuple(source.shape[-len(volume_shape):]) == tuple(volume_shape):
        return None
    offset = stored_attributes(source).get('voxel_offset')
    return None if offset is None else [int(v) for v in offset]


def truth_under(prediction: VolumeSource, truth: VolumeSource) -> np.ndarray:
    """The ground truth (z, y, x) under ``prediction`` ((c,) z, y, x): all of ``truth``
    when their spatial shapes are equal, else its box at the prediction's ``voxel_offset``
    (:func:`offset_in`; a prediction of a ``--region`` of the truth's volume)."""
    zyx = tuple(prediction.shape[-3:])
    offset = offset_in(prediction, truth.shape)
    if offset is None:
        return truth[...]
    box, whole = Box.from_shape(zyx, offset), Box.from_shape(truth.shape)
    if len(truth.shape) != 3 or not whole.contains(box):
        raise ShapeError(f"{prediction.name} (z, y, x {zyx}, voxel_offset {tuple(offset)}) does "
                         f"not lie inside the ground truth {truth.name} of shape "
                         f"{tuple(truth.shape)}")
    return truth[box.slices_in(whole)]


def output_attributes(input_attrs: dict, voxel_offset: tuple[int, ...]) -> dict:
    """Attributes of the output: the input's resolution, the offset of its first voxel.

    ``offset`` is in the input's units (offset + voxel_offset * resolution) when the
    input had an offset or a resolution; ``voxel_offset`` is always in input voxels.
    """
    attrs = {k: v for k, v in input_attrs.items() if k != 'offset'}
    attrs['axes'] = ['c', 'z', 'y', 'x']
    attrs['voxel_offset'] = list(voxel_offset)
    spacing = input_attrs.get('resolution', input_attrs.get('voxel_size'))
    if 'offset' in input_attrs or spacing is not None:
        base = np.broadcast_to(input_attrs.get('offset', 0), (3,))
        step = np.broadcast_to(spacing if spacing is not None else 1, (3,))
        attrs['offset'] = (base + np.asarray(voxel_offset) * step).tolist()
    return attrs
