"""ELEKTRONN2's ``elektronn2.data.knossos_array``: KNOSSOS datasets as float32 arrays in
[0, 1], axes (z, y, x), over :class:`elektronn2.data.knossos.KnossosSource` (its RAM cube
cache and background prefetching replace ELEKTRONN2's loader processes).
"""
from __future__ import annotations

import glob
import itertools
import logging
import math
import multiprocessing as mp
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .knossos import CUBE_EDGE, KnossosSource

logger = logging.getLogger('elektronn2')

__all__ = ['our_glob', 'get_remaining_size', 'load_rawfile', 'LoadProc', 'KnossosArray',
           'KnossosArrayMulti', 'KnossosArrayMultiMy']


def our_glob(s: str) -> list[str]:
    """``glob.glob(s)`` with '/' as the path separator on every platform."""
    return [p.replace(os.path.sep, '/') for p in glob.glob(s)]


def get_remaining_size(fd) -> int:
    """Bytes from the current position of the open file ``fd`` to its end."""
    try:
        size = os.fstat(fd.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        size = os.path.getsize(fd.name)
    return size - fd.tell()


def load_rawfile(path: str | os.PathLike, out: np.ndarray, offset: int = 0) -> np.ndarray:
    """Fill the C-contiguous array ``out`` with the raw bytes of ``path`` after skipping
    ``offset`` bytes; ValueError if the file is too short. Returns ``out``."""
    with open(path, 'rb') as fd:
        if offset > 0:
            fd.seek(offset, os.SEEK_CUR)
        if out.nbytes > get_remaining_size(fd):
            raise ValueError(f"{path}: {get_remaining_size(fd)} bytes left after offset {offset}, "
                             f"{out.nbytes} needed for {out.shape} {out.dtype}")
        n_read = fd.readinto(memoryview(out).cast('B'))
    if n_read != out.nbytes:
        raise OSError(f"{path}: read {n_read} bytes instead of {out.nbytes}")
    return out


class LoadProc(mp.Process):
    """A process that loads one uint8 raw cube file into the shared array ``mp_array``
    (``multiprocessing.Array`` with a lock) as values / 255 of ``dtype``; on failure it
    logs the error and sets the event ``status``."""

    def __init__(self, mp_array, path: str | os.PathLike, dtype: np.dtype | type,
                 status: mp.synchronize.Event):
        super().__init__()
        self.mp_array, self.path, self.status = mp_array, path, status
        self.dtype = np.dtype(dtype)

    def run(self) -> None:
        try:
            with self.mp_array.get_lock():
                values = np.frombuffer(self.mp_array.get_obj(), self.dtype)
                raw = load_rawfile(self.path, np.empty(len(values), np.uint8))
                values[:] = raw / 255
        except Exception:  # reported to the parent through ``status``
            logger.exception("Loading KNOSSOS cube %s failed", self.path)
            self.status.set()


def _smallest_mag(root: Path) -> int:
    mags = [int(m.group(1)) for p in root.glob('*mag*') if p.is_dir()
            for m in [re.search(r'mag(\d+)$', p.name)] if m]
    if not mags:
        raise DataError(f"{root} holds no magnification folders (mag1, mag2, ...)")
    return min(mags)


class KnossosArray:
    """A KNOSSOS dataset as a lazily read float32 array (z, y, x) with values in [0, 1].

    Args:
        path: dataset directory (holding mag1/, ...).
        max_ram: MB for the cube cache.
        n_preload: cubes preloaded around each read position (half of it along z).
        fixed_mag: magnification to read (0: the smallest available).
    """

    def __init__(self, path: str | os.PathLike, max_ram: int = 1000, n_preload: int = 2,
                 fixed_mag: int = 1):
        self._setup(path, max_ram, n_preload, fixed_mag)

    def _setup(self, paths, max_ram: int, n_preload: int, fixed_mag: int) -> None:
        stacked = isinstance(paths, (list, tuple))
        roots = [Path(p).expanduser() for p in (paths if stacked else [paths])]
        mag = int(fixed_mag) if fixed_mag > 0 else _smallest_mag(roots[0])
        self.n_preload = np.ceil(np.array([n_preload / 2, n_preload, n_preload])).astype(int)
        cubes = int(np.prod(2 * self.n_preload + 1)) * len(roots)
        if cubes * CUBE_EDGE ** 3 > max_ram * 2 ** 20:
            raise ValueError(f"Preloading {cubes} cubes (n_preload={n_preload}) needs "
                             f"{math.ceil(cubes * CUBE_EDGE ** 3 / 2 ** 20)} MB of RAM; max_ram is {max_ram}")
        self._source = KnossosSource([str(r) for r in roots] if stacked else roots[0], mag=mag,
                                     cache_bytes=int(max_ram * 2 ** 20))
        conf = self._source.confs[0]
        self.dtype = np.dtype(np.float32)
        self.scale = np.array(conf['scale'], float)
        self._experiment_name = conf['name']
        self._knossos_path = str(roots[0])
        self._mag = [mag]
        self._n_f = len(roots) if stacked else 1

    @property
    def shape(self):
        """(z, y, x) as an int array."""
        return np.array(self._source.shape[-3:])

    @property
    def n_f(self) -> int:
        return self._n_f

    def __repr__(self) -> str:
        return (f"<{type(self).__name__}> {tuple(int(s) for s in self.shape)} "
                f"{self._source.name}, {len(self._source.cache)} cubes in cache")

    def _as_float(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return raw.astype(np.float32) / np.float32(255)
        np.divide(raw, np.float32(255), out=out, casting='unsafe')
        return out

    def preload(self, position: Sequence[int],
                start_end: tuple[Sequence[int], Sequence[int]] | None = None,
                sync: bool = False) -> list[tuple[int, int, int]] | None:
        """Load the cubes around ``position`` (z, y, x) and, if given, the cube range
        ``start_end`` = (start, end) (cube indices, end exclusive) first; in the background
        unless ``sync``. Returns the requested cube indices (z, y, x) if ``start_end``."""
        position = np.asarray(position, int)[-3:]
        requested = None
        if start_end is not None:
            start, end = (np.asarray(a, int) for a in start_end)
            requested = list(itertools.product(*[range(a, b) for a, b in zip(start, end)]))
            self._source.preload(start, end - 1, wait=sync)
        centre = position // CUBE_EDGE
        self._source.preload(centre - self.n_preload, centre + self.n_preload, wait=sync)
        return requested

    def _check_box(self, shape: np.ndarray, offset: np.ndarray) -> tuple[slice, ...]:
        if np.any(offset < 0) or np.any(offset + shape > self._source.shape[-3:]) or np.any(shape < 0):
            raise ValueError(f"Slice of shape {shape.tolist()} at {offset.tolist()} (z,y,x) is out "
                             f"of bounds of {type(self).__name__} {self._source.shape[-3:]}")
        return tuple(slice(int(a), int(a + s)) for a, s in zip(offset, shape))

    def cut_slice(self, shape: Sequence[int], offset: Sequence[int],
                  out: np.ndarray | None = None) -> np.ndarray:
        """float32 (z, y, x) box of ``shape`` at ``offset`` ((n_f, z, y, x) for several
        datasets), into ``out`` if given; then the cubes around it are preloaded."""
        shape, offset = np.asarray(shape, int), np.asarray(offset, int)
        box = self._check_box(shape, offset)
        raw = self._source[box if self._source.ndim == 3 else (slice(None),) + box]
        if out is not None and (out.dtype != self.dtype or out.shape != raw.shape):
            raise ValueError(f"out must be float32 of shape {raw.shape}, got {out.dtype} {out.shape}")
        result = self._as_float(raw, out)
        self.preload(offset + shape // 2)
        return result

    def __getitem__(self, idx) -> np.ndarray:
        """float32 values / 255 of a (z, y, x) index, or (channel, z, y, x) with ``:`` first
        (the result then has a channel axis of 1)."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        if len(idx) == 4:
            if idx[0] != slice(None):
                raise ValueError("A single KnossosArray has one channel: index it [:, z, y, x]")
            return self[idx[1:]][None]
        return self._as_float(self._source[idx])


class KnossosArrayMulti(KnossosArray):
    """Several KNOSSOS datasets of equal size stacked as channels: (n_f, z, y, x).

    Args:
        path_prefix: directory the ``feature_paths`` are relative to.
        feature_paths: one dataset directory per channel.
        max_ram, n_preload, fixed_mag: as :class:`KnossosArray` (max_ram for all).
    """

    def __init__(self, path_prefix: str | os.PathLike, feature_paths: Sequence[str],
                 max_ram: int = 3000, n_preload: int = 2, fixed_mag: int = 1):
        paths = [os.path.join(os.path.expanduser(path_prefix), p) for p in feature_paths]
        self._setup(paths, max_ram, n_preload, fixed_mag)

    @property
    def shape(self) -> tuple[int, ...]:
        """(n_f, z, y, x)."""
        return tuple(int(s) for s in self._source.shape)

    def preload(self, position: Sequence[int], sync: bool = True) -> None:
        """Load the cubes around ``position`` ((c,) z, y, x) of every channel."""
        super().preload(position, sync=sync)

    def __getitem__(self, idx) -> np.ndarray:
        """float32 values / 255 of a (channel, z, y, x) index."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        if len(idx) != 4:
            raise ValueError(f"Index a {type(self).__name__} with [channels, z, y, x], got "
                             f"{len(idx)} entries")
        return self._as_float(self._source[idx])


class KnossosArrayMultiMy(KnossosArrayMulti):
    """Four stacked datasets (a, b, c, d) read as two channels: a and
    max(max(b, c) - d, 0)."""

    @property
    def n_f(self) -> int:
        return 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,) + super().shape[1:]

    def __getitem__(self, idx) -> np.ndarray:
        values = super().__getitem__(idx)
        if len(values) != 4:
            raise ValueError(f"{type(self).__name__} combines 4 channels, the index selects "
                             f"{len(values)}")
        return np.stack([values[0], np.maximum(np.maximum(values[1], values[2]) - values[3], 0)])
