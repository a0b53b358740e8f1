"""ELEKTRONN2's ``elektronn2.data.traindata``: in-memory example sets (``Data``), MNIST and
piano-roll sequences.

``MNISTData`` here is ELEKTRONN2's (``center`` option, ``train_d`` / ``valid_d`` /
``test_d`` arrays, first examples for 'valid' / 'test') over
:class:`elektronn2.data.mnist.MNISTData`, which reads the IDX files and makes the
shifted / warped training crops.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..utils import safe_pickle
from . import mnist

logger = logging.getLogger('elektronn2')

__all__ = ['Data', 'MNISTData', 'PianoData', 'PianoData_perc']


class Data:
    """Examples held in memory; subclasses set ``train_d``, ``train_l``, ``valid_d``,
    ``valid_l``, ``test_d``, ``test_l`` (arrays (n, ...) or lists) before calling
    ``Data.__init__``.

    Args:
        n_lab: number of classes (default: the distinct values of ``train_l``).

    Attributes: ``n_lab``, ``example_shape`` (of ``train_d[0]`` unless set), ``n_ch``
    (its first entry), ``rng`` (a RandomState, re-seeded in each new process).
    """
    example_shape = None
    train_l = valid_l = test_l = None

    def __init__(self, n_lab: int | None = None):
        self._pos = 0
        self._training_count = len(self.train_l if self.train_l is not None else self.train_d)
        if n_lab is None:
            labels = self.train_l
            if isinstance(labels, list):
                labels = np.concatenate([np.ravel(item) for item in labels])
            n_lab = np.unique(labels).size
        self.n_lab = n_lab
        if self.example_shape is None:
            self.example_shape = np.shape(self.train_d[0])
        self.n_ch = self.example_shape[0] if np.ndim(self.example_shape) else 1
        self.rng = np.random.RandomState()
        self.pid = os.getpid()
        self._perm = self.rng.permutation(self._training_count)
        logger.info("%r", self)

    def reseed(self, seed: int | None = None) -> None:
        """New random stream (``seed``: any non-negative int, e.g. a worker's 64-bit seed;
        None: fresh entropy)."""
        self.rng.seed(None if seed is None else np.random.SeedSequence(seed).generate_state(4))
        self.pid = os.getpid()
        self._perm, self._pos = self.rng.permutation(self._training_count), 0

    def _reseed(self) -> None:
        """Re-seed from fresh entropy if this is another process than the last call's."""
        if os.getpid() != self.pid:
            self.reseed()

    def __repr__(self) -> str:
        n_valid = 0 if self.valid_l is None else len(self.valid_l)
        return (f"{self.n_lab}-class Data Set: #training examples: {self._training_count} and "
                f"#validing: {n_valid}")

    def _next_indices(self, batch_size: int) -> np.ndarray:
        """The next ``batch_size`` indices of a random order of the training examples (a new
        order once it is used up)."""
        if batch_size > self._training_count:
            raise ConfigError(f"batch_size {batch_size} exceeds the {self._training_count} "
                              f"training examples")
        if self._pos + batch_size > self._training_count:
            self._perm, self._pos = self.rng.permutation(self._training_count), 0
        self._pos += batch_size
        return self._perm[self._pos - batch_size:self._pos]

    def getbatch(self, batch_size: int, source: str = 'train') -> tuple[np.ndarray, np.ndarray]:
        """(data, labels) of ``batch_size`` examples: the next ones of a random order for
        'train', the first ones for 'valid' and 'test'."""
        self._reseed()
        if source == 'train':
            index = self._next_indices(batch_size)
            data, labels = self.train_d, self.train_l
            if isinstance(data, list):
                return np.array([data[i] for i in index]), np.array([labels[i] for i in index])
            return data[index], labels[index]
        if source in ('valid', 'test'):
            data, labels = getattr(self, f'{source}_d'), getattr(self, f'{source}_l')
            return (np.asarray(_first(data, batch_size, source)),
                    np.asarray(_first(labels, batch_size, source)))
        raise ConfigError(f"source={source!r} is invalid; use 'train', 'valid' or 'test'")

    def createCVSplit(self, data: np.ndarray, label: np.ndarray, n_folds: int = 3,  # noqa: N802
                      use_fold: int = 2, shuffle: bool = False, random_state: int | None = None
                      ) -> None:
        """Split (data, label) into ``n_folds`` folds (K-fold; the first n % n_folds folds one
        longer) and set fold ``use_fold`` as valid_d/valid_l, the rest as train_d/train_l
        (both in their original order). ``shuffle`` assigns examples to folds at random."""
        n = len(data)
        if not 0 <= use_fold < n_folds <= n:
            raise ConfigError(f"createCVSplit: need 0 <= use_fold ({use_fold}) < n_folds "
                              f"({n_folds}) <= number of examples ({n})")
        order = np.random.RandomState(random_state).permutation(n) if shuffle else np.arange(n)
        sizes = np.full(n_folds, n // n_folds) + (np.arange(n_folds) < n % n_folds)
        start = int(sizes[:use_fold].sum())
        valid = np.zeros(n, bool)
        valid[order[start:start + sizes[use_fold]]] = True
        self.valid_d, self.valid_l = data[valid], label[valid]
        self.train_d, self.train_l = data[~valid], label[~valid]


class MNISTData(Data):
    """MNIST as ELEKTRONN2's MNISTData: images (b, 1, H, W) (or flat (b, H*W)) float32 and
    labels (b, 1) int16.

    Args:
        input_node, target_node: the network's nodes (H, W from the input node; 26 x 26
            with ``shift_augment``, 28 x 28 without).
        path: directory of the MNIST IDX files (None: the known dataset location).
        convert2image: images instead of flat vectors.
        warp_on: probability of a mild random warp of a training image.
        shift_augment: random crop positions for training (centred crops otherwise).
        center: subtract each split's mean pixel value.
    """

    def __init__(self, input_node, target_node, path: str | os.PathLike | None = None,
                 convert2image: bool = True, warp_on: bool | float = False,
                 shift_augment: bool = True, center: bool = True):
        self._mnist = mnist.MNISTData(input_node, target_node, path=path,
                                      convert2image=convert2image, warp_on=warp_on,
                                      shift_augment=shift_augment)
        self.warp_on, self.shift_augment = warp_on, shift_augment
        self.return_flat = not self._mnist.convert2image
        arrays = self._mnist.arrays
        self._offsets = {split: float(images.mean() / 255) if center else 0.0
                         for split, (images, _) in arrays.items()}
        self.train_l, self.valid_l, self.test_l = (arrays[s][1][:, None] for s in
                                                   ('train', 'valid', 'test'))
        crop = self._mnist.crop_shape
        self.example_shape = int(np.prod(crop)) if self.return_flat else (1,) + tuple(crop)
        self._examples: dict[str, np.ndarray] = {}
        super().__init__()

    def _split(self, source: str) -> np.ndarray:
        """All centred (un-augmented) examples of a split, centred in value if ``center``."""
        if source not in self._examples:
            images, _ = self._mnist.examples(source)
            self._examples[source] = images - np.float32(self._offsets[source])
        return self._examples[source]

    train_d = property(lambda self: self._split('train'), doc="Training images (centred crops).")
    valid_d = property(lambda self: self._split('valid'), doc="Validation images.")
    test_d = property(lambda self: self._split('test'), doc="Test images.")

    def reseed(self, seed: int | None = None) -> None:
        super().reseed(seed)
        self._mnist.reseed(seed)

    def getbatch(self, batch_size: int, source: str = 'train') -> tuple[np.ndarray, np.ndarray]:
        """Random shifted (and warped) training examples, or the first ``batch_size``
        examples of 'valid' / 'test'."""
        if source == 'train':
            images, labels = self._mnist.getbatch(batch_size, 'train')
        elif source in ('valid', 'test'):
            images, labels = self._mnist.examples(source, 0, batch_size)
        else:
            raise ConfigError(f"source={source!r} is invalid; use 'train', 'valid' or 'test'")
        return images - np.float32(self._offsets[source]), labels


# --- piano rolls ----------------------------------------------------------------------------
#: Piano-roll pickles hold plain data only (containers, numbers, strings, numpy arrays).
_PIANO_POLICY = safe_pickle.Policy(
    DataError, "a piano-roll file may hold only numpy arrays, numbers, strings, lists, tuples "
               "and dicts", max_ratio=None)


def _first(examples, batch_size: int, source: str):
    """The first ``batch_size`` examples of the ``source`` split (all must exist)."""
    if batch_size > len(examples):
        raise ConfigError(f"batch_size {batch_size} exceeds the {len(examples)} {source!r} "
                          f"examples (monitor_batch_size or batch_size of the config)")
    return examples[:batch_size]


def _load_sequences(path: str | os.PathLike) -> tuple[list, list, list]:
    """(train, valid, test) lists of (time, n_lab) arrays from a pickle (optionally gzipped)
    of such a triple or of a dict with keys 'train', 'valid', 'test'."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"Piano-roll data file {path} not found; pass path=")
    objects = safe_pickle.load_all(path, _PIANO_POLICY)
    content = objects[0] if len(objects) == 1 else None
    if isinstance(content, dict):
        content = tuple(content.get(k) for k in ('train', 'valid', 'test'))
    if not isinstance(content, (tuple, list)) or len(content) != 3 or any(c is None for c in content):
        raise DataError(f"{path} must hold (train, valid, test) lists of sequences")
    return tuple([np.asarray(seq) for seq in split] for split in content)


class PianoData(Data):
    """Piano-roll sequences: ``n_tap`` time steps as input, the next step as target.

    Args:
        input_node, target_node: the network's nodes (not inspected).
        path: pickle of (train, valid, test) lists of (time, n_lab) arrays.
        n_tap: input time steps.
        n_lab: notes per step.
    """

    def __init__(self, input_node, target_node,
                 path: str | os.PathLike = '/home/mkilling/devel/data/PianoRoll/Nottingham_enc.pkl',
                 n_tap: int = 20, n_lab: int = 58):
        self.train_d, self.valid_d, self.test_d = _load_sequences(path)
        short = [len(s) for split in (self.train_d, self.valid_d, self.test_d) for s in split
                 if len(s) <= n_tap]
        if short:
            raise DataError(f"{path}: {len(short)} sequences have at most n_tap={n_tap} steps "
                            f"(shortest {min(short)}); each needs n_tap + 1")
        self.example_shape = n_lab
        self.n_taps = n_tap
        super().__init__(n_lab=n_lab)

    def getbatch(self, batch_size: int, source: str = 'train') -> tuple[np.ndarray, np.ndarray]:
        """x float32 (b, n_tap, n_lab): steps t..t+n_tap-1 of random (train) or the first
        (valid, test) sequences from random t; y (b, n_lab): step t+n_tap."""
        self._reseed()
        if source == 'train':
            sequences = [self.train_d[i] for i in self._next_indices(batch_size)]
        elif source in ('valid', 'test'):
            sequences = _first(getattr(self, f'{source}_d'), batch_size, source)
        else:
            raise ConfigError(f"source={source!r} is invalid; use 'train', 'valid' or 'test'")
        starts = [self.rng.randint(0, len(s) - self.n_taps) for s in sequences]
        x = np.array([s[t:t + self.n_taps] for s, t in zip(sequences, starts)], np.float32)
        y = np.array([s[t + self.n_taps] for s, t in zip(sequences, starts)])
        return x, y


class PianoData_perc(PianoData):  # noqa: N801
    """:class:`PianoData` for perceptrons: x flattened to (b, n_tap * n_lab)."""

    def getbatch(self, batch_size: int, source: str = 'train') -> tuple[np.ndarray, np.ndarray]:
        x, y = super().getbatch(batch_size, source)
        return x.reshape(len(x), -1), y
