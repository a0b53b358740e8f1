"""ELEKTRONN2's ``elektronn2.data.non_geometric_augmentation``: noise, blur and "blobs"
(cubes that are blurred, filled with noise or with a value) on raw input patches.

Data is ``(c, z, y, x)`` float; labels are unaffected. As in ELEKTRONN2 the random draws
come from numpy's global generator (``np.random.seed`` makes them reproducible); the
functions work on a copy unless ``data_overwrite``. The seeded, per-channel
augmentations that ``BatchCreatorImage`` applies are in
:mod:`elektronn2.data.augmentation`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import ConfigError

__all__ = ['InvalidNonGeomAugmentParameters', 'noise_augment', 'blur_augment', 'blurry_blobs',
           'noisy_random_erasing', 'uniform_random_erasing', 'add_blobs', 'make_blob',
           'blur_blob', 'random_noise_blob', 'uniform_blob']


class InvalidNonGeomAugmentParameters(ConfigError):
    """An augmentation parameter is out of its range."""


def _working_copy(data: np.ndarray, data_overwrite: bool) -> np.ndarray:
    data = data if data_overwrite else np.array(data, copy=True)
    if data.ndim != 4:
        raise InvalidNonGeomAugmentParameters(f"data of shape {data.shape} must be (c, z, y, x)")
    return data


def noise_augment(data: np.ndarray, level: float = 0.15, data_overwrite: bool = False) -> np.ndarray:
    """Add uniform noise in [-level/2, level/2) to every voxel of (c, z, y, x) ``data``.

    ``level`` must lie in [0, 1] (else InvalidNonGeomAugmentParameters).
    """
    if not 0 <= level <= 1:
        raise InvalidNonGeomAugmentParameters(f"noise level={level} is outside [0, 1]")
    data = _working_copy(data, data_overwrite)
    data += level * (np.random.random(data.shape) - 0.5)
    return data


def blur_augment(data: np.ndarray, level: float = 1, data_overwrite: bool = False) -> np.ndarray:
    """Gaussian blur with sigma ``level`` (voxels, all three axes) of each channel of
    (c, z, y, x) ``data``."""
    data = _working_copy(data, data_overwrite)
    for channel in data:
        channel[...] = ndimage.gaussian_filter(channel, level)
    return data


def blurry_blobs(data: np.ndarray, diffuseness: float | None,
                 num_blob_range: tuple[int, int] = (5, 15),
                 blob_size_range: tuple[int, int] = (10, 32),
                 data_overwrite: bool = False) -> np.ndarray:
    """Blur random cubes of (c, z, y, x) ``data`` with sigma ``diffuseness``
    (None / 0: a random integer 1..5 per cube); see :func:`add_blobs`."""
    return add_blobs(data, num_blob_range, blob_size_range, data_overwrite, blur_blob,
                     (diffuseness,))


def noisy_random_erasing(data: np.ndarray, noise_range: tuple[float, float] = (0, 255),
                         num_blob_range: tuple[int, int] = (5, 15),
                         blob_size_range: tuple[int, int] = (10, 32),
                         data_overwrite: bool = False) -> np.ndarray:
    """Fill random cubes of (c, z, y, x) ``data`` with uniform noise in ``noise_range``;
    see :func:`add_blobs`."""
    return add_blobs(data, num_blob_range, blob_size_range, data_overwrite, random_noise_blob,
                     (noise_range,))


def uniform_random_erasing(data: np.ndarray, value: float,
                           num_blob_range: tuple[int, int] = (5, 15),
                           blob_size_range: tuple[int, int] = (10, 32),
                           data_overwrite: bool = False) -> np.ndarray:
    """Fill random cubes of (c, z, y, x) ``data`` with ``value``; see :func:`add_blobs`."""
    return add_blobs(data, num_blob_range, blob_size_range, data_overwrite, uniform_blob, (value,))


def add_blobs(data: np.ndarray, num_blob_range: tuple[int, int], blob_size_range: tuple[int, int],
              data_overwrite: bool, blob_operator: Callable[..., np.ndarray],
              blob_operator_args: Sequence = ()) -> np.ndarray:
    """Apply ``blob_operator(cube, *blob_operator_args)`` to random cubes of each channel.

    Args:
        data: (c, z, y, x).
        num_blob_range: [low, high) of the number of cubes (one draw for all channels).
        blob_size_range: [low, high) of each cube's edge length (voxels; even lengths are
            used, clipped to the volume's extent per axis).
        data_overwrite: work in place.
        blob_operator: cube (z', y', x') -> new values of that shape, e.g.
            :func:`blur_blob`, :func:`random_noise_blob`, :func:`uniform_blob`.
    Returns:
        the augmented (c, z, y, x) array.
    """
    data = _working_copy(data, data_overwrite)
    if not (num_blob_range[0] < num_blob_range[1] and 0 < blob_size_range[0] < blob_size_range[1]):
        raise InvalidNonGeomAugmentParameters(f"num_blob_range={num_blob_range} and "
                                              f"blob_size_range={blob_size_range} must be "
                                              f"non-empty [low, high) ranges of sizes > 0")
    depth, width, height = data.shape[1:]
    num_blobs = np.random.randint(num_blob_range[0], num_blob_range[1])
    for channel in data:
        for _ in range(num_blobs):
            blob_size = np.random.randint(blob_size_range[0], blob_size_range[1])
            make_blob(channel, blob_operator, blob_operator_args, depth, width, height, blob_size)
    return data


def make_blob(data: np.ndarray, blob_operator: Callable[..., np.ndarray],
              blob_operator_args: Sequence, depth: int, width: int, height: int,
              blob_size: int) -> None:
    """Apply ``blob_operator`` in place to one random cube of one channel ``data`` (z, y, x).

    The cube has edge ``2 * (blob_size // 2)`` (clipped to depth, width and height, the
    extents of data's three axes) and lies inside the volume.
    """
    edge = 2 * (int(blob_size) // 2)
    box = []
    for extent in (depth, width, height):
        length = min(edge, int(extent))
        start = np.random.randint(0, int(extent) - length + 1)
        box.append(slice(start, start + length))
    box = tuple(box)
    data[box] = blob_operator(data[box], *blob_operator_args)


def blur_blob(blob: np.ndarray, diffuseness: float | None = None) -> np.ndarray:
    """``blob`` blurred with sigma ``diffuseness`` (None / 0: a random integer 1..5)."""
    if not diffuseness:
        diffuseness = np.random.randint(1, 6)
    return ndimage.gaussian_filter(blob, diffuseness)


def random_noise_blob(blob: np.ndarray, noise_range: tuple[float, float] = (0, 255)) -> np.ndarray:
    """Uniform noise in [low, high) of ``blob``'s shape."""
    return np.random.uniform(noise_range[0], noise_range[1], np.shape(blob))


def uniform_blob(blob: np.ndarray, value: float) -> np.ndarray:
    """``value`` in ``blob``'s shape."""
    return np.full(np.shape(blob), value, dtype=float)
