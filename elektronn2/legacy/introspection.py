# v1 function and argument names (plotFilters, onlyW, ...) are kept on purpose
# ruff: noqa: N802, N803
"""ELEKTRONN v1's introspection names (``elektronn.net.introspection``) over
:mod:`elektronn2.utils.introspection`.

v1 drew into pyplot windows; these functions write PNG files instead (``savename`` /
``out_dir``), so ``no_show`` makes no difference. ``compileDebugFunctions`` is not
needed first.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ShapeError
from ..utils import introspection
from .mixedconvnn import MixedConvNN


def embedMatricesInGray(mat: np.ndarray, border_width: int = 1, normalize: bool = False,
                        output_ratio: float = 1.7, fixed_n_horizontal: int = 0) -> np.ndarray:
    """Matrices (n, rows, cols) tiled into one 2-D image with zeros between them (the
    tiling of :func:`~elektronn2.utils.introspection.filter_mosaic`: one-pixel gaps, an
    about square grid; ``border_width``, ``output_ratio`` and ``fixed_n_horizontal``
    are accepted for v1 scripts). ``normalize``: each matrix scaled to [0, 1]."""
    mat = np.asarray(mat, dtype=np.float32)
    if mat.ndim != 3:
        raise ShapeError(f"embedMatricesInGray: needs matrices (n, rows, cols), got shape "
                         f"{mat.shape}")
    if normalize:
        low = mat.min(axis=(1, 2), keepdims=True)
        mat = (mat - low) / (mat.max(axis=(1, 2), keepdims=True) - low + 1e-8)
    scale = float(np.abs(mat).max()) or 1.0
    mosaic = introspection.filter_mosaic(mat[:, None], max_filters=len(mat), max_tiles=1,
                                         per_tile=False)
    return np.nan_to_num(mosaic * scale, nan=0.0).astype(np.float32)


def plotFilters(cnn: MixedConvNN, layer: int = 0, channel: int | None = None,
                normalize: bool = False, savename: str | os.PathLike = 'filters_layer0.png') -> Path:
    """The filters of conv layer ``layer`` (of input ``channel`` only, if given) as a PNG;
    ``normalize``: each tile scaled by itself."""
    weights = cnn.layers[layer].get_param_values()['w']
    if channel is not None:
        weights = weights[:, channel:channel + 1]
    return introspection.plot_filters(weights, savename, per_tile=normalize)


def showActivations(cnn: MixedConvNN, data: np.ndarray, show_first_class_prob: bool = False,
                    no_show: bool = False, out_dir: str | os.PathLike = '.') -> list[np.ndarray]:
    """The feature maps of every image layer for the first example of ``data``: one
    image per layer (as :func:`embedMatricesInGray`) is returned, and PNG files are
    written to ``out_dir`` (``activations_<layer>.png``)."""
    layers = [layer for layer in cnn.layers if layer.shape.spatial_axes]
    if not layers:
        return []
    values = introspection.activations(cnn.model, layers, [data])
    introspection.plot_activations(cnn.model, [data], out_dir, nodes=layers)
    return [embedMatricesInGray(introspection.feature_maps(values[layer.name], layer.shape.tags),
                                normalize=True) for layer in layers]


def showParamHistogram(cnn: MixedConvNN, no_show: bool = False, onlyW: bool = True,
                       savename: str | os.PathLike = 'param_histograms.png') -> Path:
    """Histograms of the layers' weights (and biases unless ``onlyW``) as a PNG."""
    values = {f"layer {i} {key}": value for i, layer in enumerate(cnn.layers)
              for key, value in layer.get_param_values().items() if key == 'w' or not onlyW}
    return introspection.plot_histograms(values, savename, 'parameters per layer')


def showActivityHistogram(cnn: MixedConvNN, data: np.ndarray, no_show: bool = False,
                          savename: str | os.PathLike = 'activity_histograms.png') -> Path:
    """Histograms of the layers' outputs for ``data`` as a PNG."""
    return introspection.plot_activation_histograms(cnn.model, [data], savename,
                                                    nodes=cnn.layers)
