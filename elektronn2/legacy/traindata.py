"""MNISTData with ELEKTRONN v1's interface, over :class:`elektronn2.data.MNISTData`.

v1 scripts read ``data.valid_d``, ``data.valid_l``, ``data.test_d``, ``data.test_l``
and called ``data.getbatch(batch_size)``; labels were flat int16 vectors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..data import mnist
from ..neuromancer.shape import TaggedShape


@dataclass(frozen=True)
class _InputShape:
    """What elektronn2's MNISTData reads from an input node: its name and shape."""
    shape: TaggedShape
    name: str = 'raw'


class MNISTData:
    """MNIST as v1 served it: images (b, 1, H, W) or vectors (b, H*W), labels (b,) int16.

    Args:
        path: directory of the MNIST IDX files (None: ``$ELEKTRONN2_DATA/mnist``).
        convert2image: images instead of flat vectors.
        warp_on: probability of a mild random warp of a training image.
        shift_augment: 26 x 26 crops at random positions for training (centred for
            validation and test), as v1 did; else the whole 28 x 28 images.
        center: subtract the mean pixel value of the training images from all data.
    """
    n_lab = 10

    def __init__(self, path: str | os.PathLike | None = None, convert2image: bool = True,
                 warp_on: bool | float = False, shift_augment: bool = True, center: bool = True):
        side = 26 if shift_augment else 28
        shape = (TaggedShape((None, 1, side, side), 'b,f,y,x') if convert2image
                 else TaggedShape((None, side * side), 'b,f'))
        self._data = mnist.MNISTData(_InputShape(shape), path=path, convert2image=convert2image,
                                     warp_on=warp_on, shift_augment=shift_augment)
        self.offset = float(self._data.arrays['train'][0].mean() / 255) if center else 0.0
        self.valid_d, self.valid_l = self._examples('valid')
        self.test_d, self.test_l = self._examples('test')

    def _examples(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._data.examples(source)
        return images - np.float32(self.offset), labels[:, 0]

    def getbatch(self, batch_size: int, source: str = 'train') -> tuple[np.ndarray, np.ndarray]:
        """Random (augmented) training examples; for 'valid' and 'test' the first ones."""
        if source == 'valid':
            return self.valid_d[:batch_size], self.valid_l[:batch_size]
        if source == 'test':
            return self.test_d[:batch_size], self.test_l[:batch_size]
        images, labels = self._data.getbatch(batch_size, source)
        return images - np.float32(self.offset), labels[:, 0]
