"""KNOSSOS datasets as lazy volume sources.

A KNOSSOS dataset is a directory with ``knossos.conf`` (experiment name, boundary and
scale per axis) and raw cubes of 128³ uint8 voxels per magnification::

    ROOT/knossos.conf
    ROOT/mag1/x0000/y0000/z0000/NAME_mag1_x0000_y0000_z0000.raw

Each ``.raw`` file holds the cube in C order (z, y, x), x varying fastest. A cube
file that does not exist reads as zeros (KNOSSOS's convention for empty space).
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .volume import VolumeSource

logger = logging.getLogger('elektronn2')

CUBE_EDGE = 128
_CONF_LINE = re.compile(r'^\s*(experiment name|boundary [xyz]|scale [xyz]|magnification)\s+'
                        r'"?([^";]*?)"?\s*;')


def read_knossos_conf(path: str | os.PathLike) -> dict:
    """Parse a knossos.conf: ``{'name': str, 'boundary': (z, y, x), 'scale': (z, y, x)}``."""
    path = Path(path)
    values = {}
    for line in path.read_text().splitlines():
        match = _CONF_LINE.match(line)
        if match:
            values[match.group(1)] = match.group(2)
    missing = [k for k in ('experiment name', 'boundary x', 'boundary y', 'boundary z')
               if k not in values]
    if missing:
        raise DataError(f"{path} lacks the entries {missing}; a knossos.conf needs "
                        f"'experiment name \"NAME\";' and 'boundary x|y|z N;'")
    try:
        boundary = tuple(int(values[f'boundary {a}']) for a in 'zyx')
        scale = tuple(float(values.get(f'scale {a}', 1.0)) for a in 'zyx')
    except ValueError as err:
        raise DataError(f"{path}: unreadable boundary or scale value ({err})") from err
    return {'name': values['experiment name'], 'boundary': boundary, 'scale': scale}


def write_knossos_dataset(root: str | os.PathLike, volume: np.ndarray, name: str = 'dataset',
                          mag: int = 1, scale: Sequence[float] = (1.0, 1.0, 1.0)) -> Path:
    """Write a uint8 (z, y, x) volume as a KNOSSOS dataset at ``mag`` (for tests and export).

    Cubes that lie completely outside the volume are not written; partial cubes are
    zero-padded. Returns ``root``.
    """
    root = Path(root)
    volume = np.asarray(volume)
    if volume.ndim != 3 or volume.dtype != np.uint8:
        raise DataError(f"KNOSSOS raw cubes hold uint8 (z,y,x) data, got {volume.dtype} "
                        f"{volume.shape}")
    root.mkdir(parents=True, exist_ok=True)
    boundary = [s * mag for s in volume.shape]
    lines = [f'experiment name "{name}";']
    lines += [f'boundary {a} {b};' for a, b in zip('xyz', boundary[::-1])]
    lines += [f'scale {a} {s};' for a, s in zip('xyz', tuple(scale)[::-1])]
    lines += ['magnification 1;']
    (root / 'knossos.conf').write_text('\n'.join(lines) + '\n')
    n_cubes = [math.ceil(s / CUBE_EDGE) for s in volume.shape]
    for cz, cy, cx in np.ndindex(*n_cubes):
        block = volume[cz * CUBE_EDGE:(cz + 1) * CUBE_EDGE, cy * CUBE_EDGE:(cy + 1) * CUBE_EDGE,
                       cx * CUBE_EDGE:(cx + 1) * CUBE_EDGE]
        cube = np.zeros((CUBE_EDGE,) * 3, np.uint8)
        cube[:block.shape[0], :block.shape[1], :block.shape[2]] = block
        path = cube_path(root, name, mag, (cz, cy, cx))
        path.parent.mkdir(parents=True, exist_ok=True)
        cube.tofile(path)
    return root


def cube_path(root: Path, name: str, mag: int, cube: tuple[int, int, int]) -> Path:
    """Path of the cube with index ``(z, y, x)``."""
    cz, cy, cx = cube
    folder = root / f'mag{mag}' / f'x{cx:04d}' / f'y{cy:04d}' / f'z{cz:04d}'
    return folder / f'{name}_mag{mag}_x{cx:04d}_y{cy:04d}_z{cz:04d}.raw'


class CubeCache:
    """A thread-safe LRU cache of cubes with a limit on the bytes it holds."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._cubes: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def get(self, key) -> np.ndarray | None:
        with self._lock:
            cube = self._cubes.get(key)
            if cube is not None:
                self._cubes.move_to_end(key)
            return cube

    def put(self, key, cube: np.ndarray) -> None:
        with self._lock:
            if key in self._cubes:
                return
            self._cubes[key] = cube
            self.nbytes += cube.nbytes
            while self.nbytes > self.max_bytes and len(self._cubes) > 1:
                _, evicted = self._cubes.popitem(last=False)
                self.nbytes -= evicted.nbytes

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._cubes

    def __len__(self) -> int:
        return len(self._cubes)


class KnossosSource(VolumeSource):
    """One KNOSSOS dataset (z, y, x), or several stacked as channels (c, z, y, x).

    Args:
        paths: dataset directory, or a list of directories (stacked as the channel axis;
            their boundaries must agree).
        mag: magnification (1, 2, 4, ...); the volume shape is ceil(boundary / mag).
        cache_bytes: limit of the RAM cube cache (128³ uint8 cubes are 2 MiB each).
        prefetch: after each read, load the neighbouring cubes in a background thread.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], mag: int = 1,
                 cache_bytes: int = 512 * 2 ** 20, prefetch: bool = True):
        stacked = isinstance(paths, (list, tuple))
        self.roots = [Path(p).expanduser() for p in (paths if stacked else [paths])]
        if not self.roots:
            raise DataError("KnossosSource needs at least one dataset directory")
        self.mag = int(mag)
        self.cache_bytes = int(cache_bytes)
        self.prefetch = prefetch
        self.confs = [self._find_conf(root) for root in self.roots]
        spatial = tuple(math.ceil(b / self.mag) for b in self.confs[0]['boundary'])
        for root, conf in zip(self.roots[1:], self.confs[1:]):
            if conf['boundary'] != self.confs[0]['boundary']:
                raise DataError(f"KNOSSOS datasets stacked as channels must have equal "
                                f"boundaries: {self.roots[0]} has {self.confs[0]['boundary']} "
                                f"(z,y,x), {root} has {conf['boundary']}")
        self.shape = ((len(self.roots),) if stacked else ()) + spatial
        self.dtype = np.dtype(np.uint8)
        self.name = ', '.join(str(r) for r in self.roots) + f' (mag{self.mag})'
        self._setup_runtime()

    def _find_conf(self, root: Path) -> dict:
        for conf in (root / 'knossos.conf', root / f'mag{self.mag}' / 'knossos.conf'):
            if conf.is_file():
                break
        else:
            raise DataError(f"{root} is not a KNOSSOS dataset: neither {root / 'knossos.conf'} "
                            f"nor {root / f'mag{self.mag}' / 'knossos.conf'} exists")
        if not (root / f'mag{self.mag}').is_dir():
            mags = sorted(p.name for p in root.glob('mag*') if p.is_dir())
            raise DataError(f"KNOSSOS dataset {root} has no magnification {self.mag} "
                            f"({root / f'mag{self.mag}'} is missing); available: "
                            f"{', '.join(mags) or '(none)'}")
        return read_knossos_conf(conf)

    def _setup_runtime(self) -> None:
        self._pid = os.getpid()
        self.cache = CubeCache(self.cache_bytes)
        self._pending: set = set()
        self._pending_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1) if self.prefetch else None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if k not in ('cache', '_pending', '_pending_lock', '_executor', '_pid')}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup_runtime()

    # --- cubes --------------------------------------------------------------------------
    def _load_cube(self, key: tuple[int, int, int, int]) -> np.ndarray:
        channel, cz, cy, cx = key
        root, name = self.roots[channel], self.confs[channel]['name']
        path = cube_path(root, name, self.mag, (cz, cy, cx))
        if not path.exists():
            candidates = sorted(path.parent.glob('*.raw')) if path.parent.is_dir() else []
            if not candidates:
                return np.zeros((CUBE_EDGE,) * 3, np.uint8)
            path = candidates[0]
        data = np.fromfile(path, dtype=np.uint8)
        if data.size != CUBE_EDGE ** 3:
            raise DataError(f"KNOSSOS cube {path} has {data.size} bytes, expected "
                            f"{CUBE_EDGE ** 3} ({CUBE_EDGE}³ uint8)")
        return data.reshape((CUBE_EDGE,) * 3)

    def cube(self, key: tuple[int, int, int, int]) -> np.ndarray:
        """The cube (channel, z, y, x index), from the cache or from disk."""
        cube = self.cache.get(key)
        if cube is None:
            cube = self._load_cube(key)
            self.cache.put(key, cube)
        return cube

    def _prefetch_one(self, key) -> None:
        try:
            if key not in self.cache:
                self.cache.put(key, self._load_cube(key))
        except DataError as err:  # reported when the cube is actually read
            logger.debug("prefetch of KNOSSOS cube %s failed: %s", key, err)
        finally:
            with self._pending_lock:
                self._pending.discard(key)

    def _schedule_neighbours(self, channels, lo_cube, hi_cube) -> None:
        """Queue the ring of cubes around [lo_cube, hi_cube] if the cache can hold them."""
        n_cubes = [math.ceil(s / CUBE_EDGE) for s in self.shape[-3:]]
        ring_lo = np.maximum(np.asarray(lo_cube) - 1, 0)
        ring_hi = np.minimum(np.asarray(hi_cube) + 1, np.asarray(n_cubes) - 1)
        n_ring = int(np.prod(ring_hi - ring_lo + 1)) * len(channels)
        if n_ring * CUBE_EDGE ** 3 > self.cache_bytes:
            return
        for c in channels:
            for index in np.ndindex(*(ring_hi - ring_lo + 1)):
                key = (c,) + tuple(int(i) for i in ring_lo + index)
                with self._pending_lock:
                    if key in self._pending or key in self.cache:
                        continue
                    self._pending.add(key)
                self._executor.submit(self._prefetch_one, key)

    def preload(self, lo_cube: Sequence[int], hi_cube: Sequence[int], wait: bool = False) -> None:
        """Load the cubes ``lo_cube..hi_cube`` (inclusive cube indices z, y, x, clipped to the
        dataset) of every channel into the cache: in the background, or now if ``wait``
        or without ``prefetch``. Cubes beyond what the cache holds are not loaded."""
        if self._pid != os.getpid():
            self._setup_runtime()
        n_cubes = np.array([math.ceil(s / CUBE_EDGE) for s in self.shape[-3:]])
        lo = np.clip(np.asarray(lo_cube, int), 0, n_cubes - 1)
        hi = np.clip(np.asarray(hi_cube, int), 0, n_cubes - 1)
        channels = range(self.shape[0]) if len(self.shape) == 4 else [0]
        room = self.cache_bytes // CUBE_EDGE ** 3
        keys = [(c,) + tuple(int(i) for i in lo + index)
                for c in channels for index in np.ndindex(*np.maximum(hi - lo + 1, 0))][:room]
        for key in keys:
            if self._executor is None or wait:
                self.cube(key)
                continue
            with self._pending_lock:
                if key in self._pending or key in self.cache:
                    continue
                self._pending.add(key)
            self._executor.submit(self._prefetch_one, key)

    def wait_for_prefetch(self) -> None:
        """Block until all queued prefetches are done."""
        if self._executor is not None:
            self._executor.submit(lambda: None).result()

    # --- reading ------------------------------------------------------------------------
    def _read(self, box):
        if self._pid != os.getpid():  # forked: the prefetch thread did not come along
            self._setup_runtime()
        if len(self.shape) == 4:
            channels, spatial = range(box[0].start, box[0].stop), box[1:]
        else:
            channels, spatial = [0], box
        lo = np.array([s.start for s in spatial])
        hi = np.array([s.stop for s in spatial])
        out = np.zeros((len(channels),) + tuple(hi - lo), np.uint8)
        if out.size == 0:
            return out if len(self.shape) == 4 else out[0]
        lo_cube, hi_cube = lo // CUBE_EDGE, (hi - 1) // CUBE_EDGE
        for k, c in enumerate(channels):
            for index in np.ndindex(*(hi_cube - lo_cube + 1)):
                cube_index = lo_cube + index
                start = np.maximum(lo, cube_index * CUBE_EDGE)
                stop = np.minimum(hi, (cube_index + 1) * CUBE_EDGE)
                cube = self.cube((c,) + tuple(int(i) for i in cube_index))
                src = tuple(slice(a, b) for a, b in zip(start - cube_index * CUBE_EDGE,
                                                        stop - cube_index * CUBE_EDGE))
                dst = tuple(slice(a, b) for a, b in zip(start - lo, stop - lo))
                out[(k,) + dst] = cube[src]
        if self._executor is not None:
            self._schedule_neighbours(channels, lo_cube, hi_cube)
        return out if len(self.shape) == 4 else out[0]
