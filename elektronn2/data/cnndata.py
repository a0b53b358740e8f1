"""ELEKTRONN2's ``elektronn2.data.cnndata``: the image batch creator and its helpers.

:class:`BatchCreatorImage` is :class:`elektronn2.data.batchcreator.BatchCreatorImage`.
The skeleton-tracing batch creators of ELEKTRONN2 (``AgentData``, ``GridData``,
``DummySkel``) are not part of elektronn2.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from . import augmentation as aug
from .batchcreator import BatchCreatorImage
from .sources import fit_centred

__all__ = ['BatchCreatorImage', 'border_treatment', 'greyAugment']


def greyAugment(d: np.ndarray, channels: Sequence[int],  # noqa: N802
                rng: np.random.RandomState | np.random.Generator) -> np.ndarray:
    """Random contrast, brightness and gamma of ``channels`` of ``d`` (c, ...) in [0, 1]
    (:func:`elektronn2.data.augmentation.grey_augment`); ``rng`` a RandomState or
    Generator. Returns a new array (``d`` itself if ``channels`` is empty)."""
    if len(channels) == 0:
        return d
    d = np.asarray(d)
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float32)
    return aug.grey_augment(d, list(channels), rng)


def border_treatment(data_list: Sequence[np.ndarray], ps: Sequence[int], border_mode: str,
                     ndim: int) -> list[np.ndarray]:
    """Centre each (c, z, y, x) (or (c, y, x) for ``ndim`` 2) array of ``data_list`` on
    the patch size ``ps``.

    Args:
        ps: (z, y, x) for ``ndim`` 3, (y, x) for ``ndim`` 2 (z is kept).
        border_mode: 'keep' (unchanged), 'crop' (cut to ``ps``), 'mirror' / '0-pad'
            (pad up to ``ps``, reflected / with zeros; larger axes are cropped).
    """
    if border_mode == 'keep':
        return list(data_list)
    if border_mode not in ('crop', 'mirror', '0-pad'):
        raise ConfigError(f"border_mode={border_mode!r}; use 'keep', 'crop', 'mirror' or '0-pad'")
    if ndim not in (2, 3) or len(ps) != ndim:
        raise ConfigError(f"border_treatment needs ndim 2 or 3 and one patch size per axis, got "
                          f"ndim={ndim}, ps={tuple(ps)}")
    fitted = []
    for d in data_list:
        shape = np.shape(d)
        fitted.append(fit_centred(d, shape[1:len(shape) - ndim] + tuple(ps), border_mode))
    return fitted
