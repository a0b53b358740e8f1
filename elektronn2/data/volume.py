"""The interface of a lazily read volume: :class:`VolumeSource` and its index rules.

Implementations: :mod:`.sources` (arrays, HDF5, zarr, .npy), :mod:`.knossos`,
:mod:`.derived` (sub-volumes, converted labels).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


def normalise_index(key: Any, shape: tuple[int, ...], name: str) -> tuple[tuple[slice, ...], tuple]:
    """Split a numpy basic index into an in-bounds box and what to apply after reading.

    Returns ``(box, post)``: ``box`` has one ``slice(start, stop)`` (step 1) per axis;
    ``post`` indexes the read box (steps, and ints that drop an axis).
    """
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError(f"{name}: an index can only have a single ellipsis ('...')")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"{name}: too many indices ({len(key)}) for shape {shape}")
    key = key + (slice(None),) * (len(shape) - len(key))
    box, post = [], []
    for axis, (k, size) in enumerate(zip(key, shape)):
        if isinstance(k, (int, np.integer)):
            index = int(k) + size if k < 0 else int(k)
            if not 0 <= index < size:
                raise IndexError(f"{name}: index {k} is out of bounds for axis {axis} with "
                                 f"size {size}")
            box.append(slice(index, index + 1))
            post.append(0)
        elif isinstance(k, slice):
            start, stop, step = k.indices(size)
            if step < 1:
                raise IndexError(f"{name}: only positive slice steps are supported, got {k}")
            stop = max(start, stop)
            box.append(slice(start, stop))
            post.append(slice(None, None, step))
        else:
            raise IndexError(f"{name}: only ints, slices and '...' can index a volume source, "
                             f"got {k!r}")
    return tuple(box), tuple(post)


class VolumeSource(ABC):
    """A lazily read n-D array: ``shape``, ``dtype``, ``ndim`` and ``source[index]``.

    Subclasses set ``name`` (used in messages: ``'file.h5:key'``), ``shape`` and
    ``dtype`` and implement :meth:`_read` for an in-bounds box of unit-step slices.
    """
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        box, post = normalise_index(key, self.shape, self.name)
        return np.asarray(self._read(box))[post]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    @abstractmethod
    def _read(self, box: tuple[slice, ...]) -> np.ndarray:
        """The data in ``box`` (one in-bounds, unit-step slice per axis)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, shape={self.shape}, dtype={self.dtype})"
