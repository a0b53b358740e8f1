"""MNISTData: the MNIST digits from the standard IDX .gz files.

Split as in ELEKTRONN2: 'train' is the first 50,000 images of the official training
set, 'valid' its last 10,000, 'test' the official 10,000 test images.
"""
from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, ShapeError
from . import augmentation as aug
from .datasets import get_path
from .labels import target_class_count
from .rng import ProcessRandom

logger = logging.getLogger('elektronn2')

MNIST_FILES = {'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
               'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')}
N_VALID = 10_000
IMAGE_SIZE = 28
#: Mild warps for digits: no flips or axis swaps, rotations up to 15 degrees.
MNIST_WARP = aug.WarpParams(flips=False, swaps=False, max_rotation=15.0, distortion=0.1)
_IDX_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"Cannot read IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"IDX file {path} is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    data = np.frombuffer(raw, dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"IDX file {path} declares shape {shape} but holds {data.size} values "
                        f"(truncated or corrupt)")
    return data.reshape(shape).astype(dtype.newbyteorder('='))


def _default_path() -> Path:
    return Path(get_path('mnist'))


class MNISTData:
    """MNIST batches for a network's input node.

    Args:
        input_node: (b, f=1, H, W) with tags 'b,f,y,x' or 'b,f,x,y' (H, W <= 28: crops), or
            flat (b, f=k*k) for vectors of a k x k crop.
        target_node: the labels' node; if its prediction has a known class count, it
            must be 10.
        path: directory with the four IDX .gz files (None: ``datasets.get_path('mnist')``).
        convert2image: False returns flat vectors (b, H*W) (always for a flat input node).
        warp_on: probability (True = 1) of a mild random warp per training image.
        shift_augment: random crop positions for training (else centred crops).
        seed: seed of the random generator.
    """

    def __init__(self, input_node, target_node=None, path: str | os.PathLike | None = None,
                 convert2image: bool = True, warp_on: bool | float = False,
                 shift_augment: bool = True, seed: int | None = None):
        n_class = target_class_count(target_node) if target_node is not None else None
        if n_class not in (None, 10):
            raise ConfigError(f"MNIST has 10 classes, but target node {target_node.name!r} "
                              f"belongs to a prediction of {n_class}")
        self.crop_shape, self.transpose = _crop_geometry(input_node)
        flat_input = not input_node.shape.spatial_tags
        self.path = Path(path).expanduser() if path is not None else _default_path()
        self.convert2image = convert2image and not flat_input
        self.warp_on = float(warp_on)
        self.shift_augment = shift_augment
        self._random = ProcessRandom(seed)
        self._arrays: dict | None = None
        self._order, self._position = np.zeros(0, int), 0
        logger.info("MNISTData from %s: %s", self.path,
                    {k: len(v[1]) for k, v in self.arrays.items()})

    @property
    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{'train'|'valid'|'test': (images uint8 (n, 28, 28), labels int16 (n,))}``."""
        if self._arrays is None:
            found = {}
            for split, names in MNIST_FILES.items():
                for name in names:
                    if not (self.path / name).is_file():
                        present = (sorted(p.name for p in self.path.iterdir())
                                   if self.path.is_dir() else [])
                        raise DataError(f"MNIST file {self.path / name} is missing; "
                                        f"{self.path} holds: {', '.join(present) or '(nothing)'}")
                images, labels = (read_idx(self.path / n) for n in names)
                if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(images) != len(labels):
                    raise DataError(f"{self.path / names[0]} holds {images.shape} images and "
                                    f"{len(labels)} labels; expected (n, 28, 28) and n")
                _check_labels(self.path / names[1], labels)
                found[split] = (images, labels.astype(np.int16))
            train_images, train_labels = found['train']
            self._arrays = {'train': (train_images[:-N_VALID], train_labels[:-N_VALID]),
                            'valid': (train_images[-N_VALID:], train_labels[-N_VALID:]),
                            'test': found['test']}
        return self._arrays

    @property
    def rng(self) -> np.random.Generator:
        """The random generator (its own stream in every worker process)."""
        return self._random.generator

    def reseed(self, seed: int | None = None) -> None:
        """New random stream (background workers give each worker its own seed)."""
        self._random.reseed(seed)
        self._order, self._position = np.zeros(0, int), 0

    def __getstate__(self) -> dict:
        """Pickle without the images; they are read again on first use."""
        return {**self.__dict__, '_arrays': None}

    def _indices(self, batch_size: int, source: str) -> np.ndarray:
        if source not in self.arrays:
            raise ConfigError(f"source={source!r} is invalid; use 'train', 'valid' or 'test'")
        n = len(self.arrays[source][1])
        if batch_size > n:
            raise ConfigError(f"batch_size {batch_size} exceeds the {n} '{source}' examples")
        if source != 'train':
            return self.rng.choice(n, batch_size, replace=False)
        if self._position + batch_size > len(self._order):
            self._order, self._position = self.rng.permutation(n), 0
        self._position += batch_size
        return self._order[self._position - batch_size:self._position]

    def _crop(self, image: np.ndarray, augment: bool) -> np.ndarray:
        """(28, 28) uint8 -> float32 (H, W) in [0, 1], shifted / warped if ``augment``."""
        slack = np.subtract(IMAGE_SIZE, self.crop_shape)
        corner = self.rng.integers(0, slack + 1) if augment and self.shift_augment else slack // 2
        if augment and self.warp_on and self.rng.random() < self.warp_on:
            transform = aug.random_transform(self.rng, MNIST_WARP, planar=True)
            matrix = aug.patch_matrix(transform, (1,) + self.crop_shape, (0,) + tuple(corner))
            return aug.warp_linear(image[None, None], matrix, (1,) + self.crop_shape)[0, 0] / 255
        return image[corner[0]:corner[0] + self.crop_shape[0],
                     corner[1]:corner[1] + self.crop_shape[1]].astype(np.float32) / 255

    def examples(self, source: str, start: int = 0, stop: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Examples ``start:stop`` of ``source`` in file order, centre-cropped, no augmentation.

        Same layout as :meth:`getbatch`; for evaluating on a whole split.
        """
        if source not in self.arrays:
            raise ConfigError(f"source={source!r} is invalid; use 'train', 'valid' or 'test'")
        images, labels = self.arrays[source]
        return self._as_batch(np.stack([self._crop(image, False) for image in images[start:stop]]),
                              labels[start:stop])

    def _as_batch(self, crops: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.transpose:
            crops = crops.transpose(0, 2, 1)
        crops = crops[:, None] if self.convert2image else crops.reshape(len(crops), -1)
        return crops.astype(np.float32, copy=False), labels[:, None]

    def getbatch(self, batch_size: int, source: str = 'train') -> tuple[np.ndarray, np.ndarray]:
        """Images float32 (b, 1, H, W) in [0, 1] (or (b, H*W)) and labels int16 (b, 1).

        Training crops are randomly shifted (shift_augment) and warped (warp_on);
        'valid' and 'test' draw random examples without augmentation.
        """
        index = self._indices(batch_size, source)
        images, labels = self.arrays[source]
        return self._as_batch(np.stack([self._crop(images[i], source == 'train') for i in index]),
                              labels[index])


def _check_labels(path: Path, labels: np.ndarray) -> None:
    """DataError unless ``labels`` are integers 0..9."""
    if labels.size and (labels.dtype.kind not in 'iu' or labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path} holds labels of dtype {labels.dtype} in "
                        f"{labels.min()}..{labels.max()}; MNIST labels are integers 0..9")


def _crop_geometry(input_node) -> tuple[tuple[int, int], bool]:
    """(H, W) of the crops and whether the node's axes are (x, y) instead of (y, x)."""
    shape = input_node.shape
    tags = shape.spatial_tags
    if len(tags) == 2:
        size = shape.spatial_shape
        crop, transpose = (size[::-1], True) if tags == ('x', 'y') else (size, False)
    elif not tags and 'f' in shape.tags:
        side = int(round(np.sqrt(shape['f'])))
        if side * side != shape['f']:
            raise ShapeError(f"Flat MNIST input {input_node.name!r} has f={shape['f']}, not a "
                             f"square number of pixels (e.g. 784 = 28*28)")
        crop, transpose = (side, side), False
    else:
        raise ShapeError(f"MNISTData needs an input node tagged 'b,f,y,x', 'b,f,x,y' or flat "
                         f"'b,f'; {input_node.name!r} has {shape.tags}")
    if max(crop) > IMAGE_SIZE:
        raise ShapeError(f"Input {input_node.name!r} wants {crop} pixels; MNIST images are "
                         f"28 x 28, so the largest input is 28 x 28")
    return tuple(int(c) for c in crop), transpose
