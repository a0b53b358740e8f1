"""Debug pictures of sampled batches, to check image/target registration by eye."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import ShapeError

Panel = tuple[str, np.ndarray, np.ndarray | None]   # (title, base image, overlay or None)


def target_geometry(node, n_spatial: int) -> dict:
    """``offsets`` and ``strides`` (network order) of ``node``'s outputs for
    :func:`save_batch_picture`, or {} when ``node`` has not ``n_spatial`` spatial axes."""
    if node is None or len(node.shape.spatial_axes) != n_spatial:
        return {}
    return {'offsets': tuple(node.shape.offsets), 'strides': tuple(node.shape.strides)}


def target_on_image_grid(target: np.ndarray, image_shape: Sequence[int],
                         offsets: Sequence[float], strides: Sequence[int]) -> np.ndarray:
    """2-D target (h, w) at strided output positions -> image grid (image_shape), NaN
    outside the outputs: output ``j`` is centred on pixel ``offsets + j * strides`` and
    covers the ``strides`` pixels nearest to it."""
    index, inside = [], []
    for size, n, off, stride in zip(image_shape, target.shape, offsets, strides):
        i = np.floor((np.arange(size) - off) / stride + 0.5).astype(int)
        index.append(np.clip(i, 0, n - 1))
        inside.append((i >= 0) & (i < n))
    grid = target[index[0][:, None], index[1][None, :]].astype(float)
    grid[~(inside[0][:, None] & inside[1][None, :])] = np.nan
    return grid


def batch_panels(image: np.ndarray, target: np.ndarray,
                 offsets: Sequence[float] | None = None, strides: Sequence[int] | None = None,
                 max_examples: int = 4) -> list[Panel]:
    """The panels of :func:`save_batch_picture` (same arguments): per example of a dense
    target the image, the target on the image grid and their overlay (positive targets);
    per example of class labels the image titled with its label."""
    image, target = np.asarray(image), np.asarray(target)
    n_spatial = image.ndim - 2
    if n_spatial not in (2, 3):
        raise ShapeError(f"save_batch_picture needs images (b, f, *spatial) with 2 or 3 "
                         f"spatial axes, got shape {image.shape}")
    dense = target.ndim == image.ndim
    panels = []
    for row in range(min(len(image), max_examples)):
        picture = image[row, 0]
        if not dense:
            panels.append((f'{row}: label {np.ravel(target[row])[0]}', picture, None))
            continue
        out = target[row, 0]
        strides = tuple(strides or (1,) * n_spatial)
        if offsets is None:
            offsets = [(i - 1 - (o - 1) * s) / 2
                       for i, o, s in zip(picture.shape, out.shape, strides)]
        if n_spatial == 3:
            k = out.shape[0] // 2
            picture = picture[int(round(offsets[0] + strides[0] * k))]
            out = out[k]
        on_grid = target_on_image_grid(out, picture.shape, offsets[-2:], strides[-2:])
        labelled = np.where(on_grid > 0, on_grid, np.nan)  # colour only positive targets
        panels += [(f'{row}: image', picture, None), (f'{row}: target', on_grid, None),
                   (f'{row}: overlay', picture, labelled)]
    return panels


def save_batch_picture(image: np.ndarray, target: np.ndarray, path: str | os.PathLike,
                       offsets: Sequence[float] | None = None,
                       strides: Sequence[int] | None = None, max_examples: int = 4,
                       title: str = '') -> list[Panel]:
    """Save a PNG of a batch: per example the image, the target and their overlay.

    Args:
        image: (b, f, *spatial) with 2 or 3 spatial axes (channel 0 is shown; 3-D: the
            slice along the first spatial axis through the middle output row).
        target: (b, t, *out) dense targets (channel 0 shown, placed on the image grid with
            ``offsets`` and ``strides``), or (b,) / (b, 1) class labels shown as titles.
        offsets, strides: per spatial axis (network order), e.g. from
            :func:`target_geometry`; default: stride 1, centred.
        max_examples: number of examples drawn.
    Returns:
        The panels drawn (:func:`batch_panels`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = batch_panels(image, target, offsets, strides, max_examples)
    columns = 3 if np.ndim(target) == np.ndim(image) else min(len(panels), 8)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows + (0.4 if title else 0)))
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title)
    for i, (name, base, overlay) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(base, cmap='viridis' if name.endswith('target') else 'gray',
                    interpolation='nearest')
        if overlay is not None:
            axes.imshow(overlay, cmap='autumn', alpha=0.4, interpolation='nearest')
        axes.set_title(name, fontsize=8)
        axes.axis('off')
    figure.tight_layout()
    figure.savefig(os.fspath(path), dpi=80)
    return panels
