"""Lazy volume sources: one small interface over HDF5, zarr, numpy and KNOSSOS data.

A :class:`VolumeSource` has a ``shape``, a ``dtype`` and numpy-style basic
slicing (ints, slices with steps, ``...``) that reads only the requested region.
On-disk axis order is ``z, y, x``, with the channel axis first when present
(``c, z, y, x``). Sources are picklable: file handles are dropped when pickled and
reopened lazily (also after a fork), so background worker processes can receive
them. :func:`open_source` picks the source class from a path.

:mod:`elektronn2.data.volume` holds the interface, :mod:`elektronn2.data.knossos` the
KNOSSOS cube reader.
"""
from __future__ import annotations

import logging
import os
from abc import abstractmethod
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from ..errors import DataError
from .knossos import KnossosSource
from .volume import VolumeSource

logger = logging.getLogger('elektronn2')

HDF5_SUFFIXES = ('.h5', '.hdf5', '.hdf', '.he5')
#: dtype kinds of volumes a network can read: bool, signed and unsigned integers, floats
REAL_KINDS = 'biuf'


class ArraySource(VolumeSource):
    """An in-memory numpy array (pickled with its data)."""

    def __init__(self, array: np.ndarray, name: str = 'array'):
        self.array = np.asarray(array)
        self.name = name
        self.shape = self.array.shape
        self.dtype = self.array.dtype

    def _read(self, box):
        return self.array[box]


class _LazyFileSource(VolumeSource):
    """A source that opens its file on first use, again after a fork or unpickling."""
    _handle_attrs: tuple[str, ...] = ('_dataset', '_pid')

    def _dataset_handle(self):
        if getattr(self, '_pid', None) != os.getpid():
            self._dataset = self._open()
            self._pid = os.getpid()
        return self._dataset

    @abstractmethod
    def _open(self):
        """Open the file and return an object sliceable like the array."""

    def _read(self, box):
        return self._dataset_handle()[box]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._handle_attrs}


def _require_exists(path: Path, what: str) -> None:
    if not path.exists():
        near = ''
        if path.parent.is_dir():
            siblings = sorted(p.name for p in path.parent.iterdir())[:20]
            near = f"; {path.parent} contains: {', '.join(siblings) or '(nothing)'}"
        raise DataError(f"{what} {path} does not exist{near}")


class HDF5Source(_LazyFileSource):
    """One dataset of an HDF5 file, read with h5py.

    Args:
        path: the .h5 file.
        key: the dataset's path inside the file (e.g. ``'volumes/raw'``).
        cache_bytes: size of h5py's chunk cache per dataset, so that repeated reads
            of nearby patches do not decompress the same chunks again. (HDF5 shares one
            handle per file and process: if the file is already open elsewhere in the
            process, that handle's cache settings apply.)
    """
    _handle_attrs = ('_dataset', '_pid', '_file')

    def __init__(self, path: str | os.PathLike, key: str, cache_bytes: int = 128 * 2 ** 20):
        self.path = Path(path).expanduser()
        self.key = key
        self.cache_bytes = int(cache_bytes)
        self.name = f"{self.path}:{key}"
        _require_exists(self.path, 'HDF5 file')
        dataset = self._dataset_handle()
        self.shape = tuple(dataset.shape)
        self.dtype = dataset.dtype

    def _open(self):
        try:
            self._file = h5py.File(self.path, 'r', rdcc_nbytes=self.cache_bytes,
                                   rdcc_nslots=10007)
        except OSError as err:
            raise DataError(f"Cannot open {self.path} as HDF5: {err}") from err
        dataset = self._file.get(self.key)
        if not isinstance(dataset, h5py.Dataset):
            keys = hdf5_dataset_keys(self._file)
            what = 'is a group, not a dataset' if dataset is not None else 'does not exist'
            raise DataError(f"Key {self.key!r} in HDF5 file {self.path} {what}; its datasets "
                            f"are: {', '.join(keys) or '(none)'}")
        return dataset


def hdf5_dataset_keys(h5file) -> list[str]:
    """Paths of all datasets in an open h5py file or group."""
    keys: list[str] = []
    h5file.visititems(lambda name, obj: keys.append(name)
                      if isinstance(obj, h5py.Dataset) else None)
    return keys


class ZarrSource(_LazyFileSource):
    """An array of a zarr store (a ``.zarr`` directory), read with zarr.

    Args:
        path: the store; ``key``: the array's path inside it (None if the store
            is a single array).
    """

    def __init__(self, path: str | os.PathLike, key: str | None = None):
        self.path = Path(path).expanduser()
        self.key = key
        self.name = f"{self.path}:{key}" if key else str(self.path)
        _require_exists(self.path, 'zarr store')
        array = self._dataset_handle()
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)

    def _open(self):
        import zarr
        try:
            node = zarr.open(store=str(self.path), mode='r')
        except Exception as err:  # zarr raises various types for unreadable stores
            raise DataError(f"Cannot open {self.path} as a zarr store: {err}") from err
        if self.key:
            if not isinstance(node, zarr.Group):
                raise DataError(f"{self.path} is a single zarr array; open it without a key "
                                f"(key={self.key!r} was given)")
            try:
                node = node[self.key]
            except KeyError:
                node = None
        if not isinstance(node, zarr.Array):
            raise DataError(f"Key {self.key!r} in zarr store {self.path} is not an array; its "
                            f"arrays are: {', '.join(zarr_array_keys(self.path)) or '(none)'}")
        return node


def zarr_array_keys(path: str | os.PathLike) -> list[str]:
    """Paths of all arrays in a zarr store."""
    import zarr

    def walk(group, prefix: str) -> list[str]:
        keys = [prefix + name for name in group.array_keys()]
        for name in group.group_keys():
            keys += walk(group[name], f"{prefix}{name}/")
        return keys
    node = zarr.open(store=str(path), mode='r')
    return [''] if isinstance(node, zarr.Array) else sorted(walk(node, ''))


class NpySource(_LazyFileSource):
    """A ``.npy`` file, memory-mapped (only the touched pages are read)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        self.name = str(self.path)
        _require_exists(self.path, 'numpy file')
        array = self._dataset_handle()
        self.shape = array.shape
        self.dtype = array.dtype

    def _open(self):
        try:
            return np.load(self.path, mmap_mode='r', allow_pickle=False)
        except ValueError as err:
            raise DataError(f"Cannot read {self.path} as a .npy array: {err}") from err


def open_source(path: str | os.PathLike | VolumeSource | np.ndarray, key: str | None = None,
                **kwargs) -> VolumeSource:
    """A :class:`VolumeSource` for ``path`` (and ``key``), chosen by what the path is.

    * ``*.h5``/``.hdf5``/``.hdf`` files: :class:`HDF5Source` (``key`` required).
    * ``*.zarr`` or a directory holding ``zarr.json``/``.zarray``/``.zgroup``: :class:`ZarrSource`.
    * ``*.npy``: :class:`NpySource`.
    * a directory holding ``knossos.conf`` (or a list of such directories, stacked as
      channels): :class:`~elektronn2.data.knossos.KnossosSource`.
    * a VolumeSource or numpy array is returned as a source as it is.

    ``kwargs`` go to the source class (e.g. ``mag=2`` for KNOSSOS).
    """
    if isinstance(path, VolumeSource):
        return path
    if isinstance(path, np.ndarray):
        return ArraySource(path)
    if isinstance(path, (list, tuple)):
        return KnossosSource(path, **kwargs)
    path = Path(path).expanduser()
    _require_exists(path, 'Data file')
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        if key is None:
            with h5py.File(path, 'r') as f:
                keys = hdf5_dataset_keys(f)
            raise DataError(f"HDF5 file {path} needs a key; its datasets are: "
                            f"{', '.join(keys) or '(none)'}")
        return HDF5Source(path, key, **kwargs)
    if suffix == '.npy':
        return NpySource(path)
    if path.is_dir():
        if (path / 'knossos.conf').exists() or any(path.glob('mag*/knossos.conf')):
            return KnossosSource(path, **kwargs)
        if suffix == '.zarr' or is_zarr_store(path):
            return ZarrSource(path, key)
    raise DataError(f"Cannot tell the format of {path}: expected an HDF5 file "
                    f"({', '.join(HDF5_SUFFIXES)}), a .npy file, a zarr store or a KNOSSOS "
                    f"directory with knossos.conf")


def is_zarr_store(path: Path) -> bool:
    """Whether directory ``path`` holds a zarr array or group (v2 or v3 metadata)."""
    return any((path / marker).exists() for marker in ('zarr.json', '.zarray', '.zgroup'))


def channel_volume_shape(source: VolumeSource) -> tuple[int, tuple[int, int, int]]:
    """``(n_channels, (z, y, x))`` of a source stored as (y,x), (z,y,x) or (c,z,y,x)."""
    shape = source.shape
    if source.ndim == 2:
        return 1, (1,) + tuple(shape)
    if source.ndim == 3:
        return 1, tuple(shape)
    if source.ndim == 4:
        return shape[0], tuple(shape[1:])
    raise DataError(f"{source.name} has shape {shape}; volumes must be (y,x), (z,y,x) or "
                    f"(c,z,y,x)")


def read_channel_box(source: VolumeSource, lo: Sequence[int], hi: Sequence[int],
                     border_mode: str = 'crop') -> np.ndarray:
    """Read the spatial box [lo, hi) (z,y,x) of a source as a (c, z, y, x) array.

    Parts of the box outside the volume are filled according to ``border_mode``:
    'crop' (the box must lie inside), 'mirror' (reflected) or '0-pad' (zeros).
    """
    n_channels, zyx = channel_volume_shape(source)
    lo, hi = np.asarray(lo, dtype=int), np.asarray(hi, dtype=int)
    inner_lo, inner_hi = np.clip(lo, 0, zyx), np.clip(hi, 0, zyx)
    outside = np.any(inner_lo != lo) or np.any(inner_hi != hi)
    if outside and border_mode == 'crop':
        raise DataError(f"Box {lo.tolist()}..{hi.tolist()} (z,y,x) lies partly outside "
                        f"{source.name} of spatial shape {zyx}")
    box = tuple(slice(a, b) for a, b in zip(inner_lo, inner_hi))
    if source.ndim == 2:
        data = source[box[1:]][None, None]
    elif source.ndim == 3:
        data = source[box][None]
    else:
        data = source[(slice(None),) + box]
    if not outside:
        return data
    pad = [(0, 0)] + [(int(a - b), int(c - d)) for a, b, c, d in zip(inner_lo, lo, hi, inner_hi)]
    if border_mode == 'mirror':
        if data.size == 0:
            raise DataError(f"Box {lo.tolist()}..{hi.tolist()} does not overlap {source.name}")
        return np.pad(data, pad, mode='symmetric')
    return np.pad(data, pad, mode='constant')


def fit_centred(array: np.ndarray, spatial_shape: Sequence[int], border_mode: str = 'crop'
                ) -> np.ndarray:
    """``array`` (c, *spatial) (1 to 3 spatial axes) centre-cropped or centre-padded to
    ``spatial_shape`` per axis (:func:`read_channel_box` of the centred box; padding by
    ``border_mode`` 'mirror' or '0-pad'). An odd excess is cut at the end, padded at the start.
    """
    array = np.asarray(array)
    spatial = array.shape[1:]
    if not 1 <= len(spatial) <= 3 or len(spatial_shape) != len(spatial):
        raise DataError(f"Cannot fit an array of shape {array.shape} (c, *spatial with 1-3 "
                        f"spatial axes) to the spatial shape {tuple(spatial_shape)}")
    lift = (1,) * (3 - len(spatial))  # as (c, z, y, x)
    lo = np.concatenate([np.zeros(len(lift), int),
                         np.floor_divide(np.subtract(spatial, spatial_shape), 2)]).astype(int)
    hi = lo + np.concatenate([lift, spatial_shape]).astype(int)
    box = read_channel_box(ArraySource(array.reshape(array.shape[:1] + lift + spatial)), lo, hi,
                           border_mode)
    return box.reshape(array.shape[:1] + tuple(int(s) for s in spatial_shape))


def require_real(name: str, dtype, what: str) -> None:
    """DataError unless ``dtype`` is real-numeric (bool, integer or float)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in REAL_KINDS:
        raise DataError(f"{what} {name} has dtype {dtype}; volumes must hold real numbers "
                        f"(bool, integer or float), not strings, complex or compound values")


def first_nonfinite(values: np.ndarray, allow_nan: bool = False) -> tuple[int, ...] | None:
    """Index of the first NaN or Inf in ``values`` (only Inf with ``allow_nan``); None if
    there is none (or no floats)."""
    if values.dtype.kind != 'f':
        return None
    finite = ~np.isinf(values) if allow_nan else np.isfinite(values)
    return None if finite.all() else tuple(int(i) for i in np.argwhere(~finite)[0])


def channel_slabs(source: VolumeSource, max_bytes: int = 2 ** 26
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """The whole source as ``(z_start, slab)`` pieces: (c, z, y, x) arrays of whole z slices,
    about ``max_bytes`` each."""
    n_channels, (nz, ny, nx) = channel_volume_shape(source)
    step = max(1, max_bytes // max(1, n_channels * ny * nx * source.dtype.itemsize))
    for z in range(0, nz, step):
        yield z, read_channel_box(source, (z, 0, 0), (min(z + step, nz), ny, nx))
