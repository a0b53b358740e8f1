# v1 function and argument names (createNetfromParams, MFP, ...) are kept on purpose
# ruff: noqa: N802, N803
"""ELEKTRONN v1's network utilities: ``createNetfromParams`` (``elektronn.net.netcreation``),
``CNNCalculator`` (``elektronn.net.netutils``) and ``makeGabor``
(``elektronn.net.gaborfilters``).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ModelFileError
from ..utils.cnncalculator import CNNCalculator as Geometry
from ..utils.cnncalculator import cnncalculator
from .mixedconvnn import MixedConvNN, read_layer_descriptions, read_parameter_file


def createNetfromParams(param_file: str | os.PathLike, patch_size: int | Sequence[int],
                        batch_size: int | None = 1, activation_func: str | Sequence[str] = 'tanh',
                        poolings: Sequence | None = None, MFP: Sequence[bool] | None = None,
                        only_prediction: bool = False) -> MixedConvNN:
    """An 'nll' :class:`MixedConvNN` rebuilt from a file of
    :meth:`MixedConvNN.saveParameters`: conv layers (filters from the weights) followed
    by perceptron layers, with the file's parameters.

    Args:
        param_file: the parameter file.
        patch_size: wanted input size ((x, y) or (z, x, y)), snapped to a valid size.
        batch_size: fixed batch size (None: any).
        activation_func: for all layers (v1), or one per layer.
        poolings: pooling per conv layer; default: as recorded in the file.
        MFP: max-fragment pooling per conv layer (default: none).
        only_prediction: accepted for v1 scripts (gradients are never compiled ahead).
    """
    tensors = read_parameter_file(param_file)
    n_layers = len({key.split('.', 1)[0] for key in tensors})
    weights = [tensors.get(f"{i}.w") for i in range(n_layers)]
    if any(w is None for w in weights):
        raise ModelFileError(f"{param_file}: layer {[w is None for w in weights].index(True)} "
                             f"has no weights 'w'; only conv and perceptron layers can be rebuilt")
    n_conv = sum(w.ndim > 2 for w in weights)
    if any(w.ndim > 2 for w in weights[n_conv:]):
        raise ModelFileError(f"{param_file}: conv layers must come before perceptron layers "
                             f"(weight shapes {[w.shape for w in weights]})")
    activations = ([activation_func] * n_layers if isinstance(activation_func, str)
                   else list(activation_func))
    if len(activations) != n_layers:
        raise ConfigError(f"createNetfromParams: {len(activations)} activation functions for "
                          f"{n_layers} layers")
    if n_conv:
        poolings = _poolings(param_file, poolings, n_conv)
        mfp = [bool(m) for m in (MFP or [False] * n_conv)]
        filters = [w.shape[2:] for w in weights[:n_conv]]
        n_dim = len(filters[0])
        size = cnncalculator(filters, poolings, desired_patch_size=patch_size, mfp=mfp,
                             ndim=n_dim).patch_size
        cnn = MixedConvNN(size, input_depth=weights[0].shape[1], batch_size=batch_size)
        for w, pool, m, act in zip(weights, poolings, mfp, activations):
            cnn.addConvLayer(w.shape[0], w.shape[2:], pool, act, use_fragment_pooling=m)
    else:
        cnn = MixedConvNN(weights[0].shape[0], batch_size=batch_size)
    for w, act in zip(weights[n_conv:], activations[n_conv:]):
        cnn.addPerceptronLayer(w.shape[1], act)
    cnn.compileOutputFunctions(target='nll', only_forward=only_prediction)
    cnn.loadParameters(param_file, strict=True)
    return cnn


def _poolings(param_file, poolings: Sequence | None, n_conv: int) -> list:
    if poolings is None:
        described = read_layer_descriptions(param_file)
        if not described:
            raise ModelFileError(f"{param_file} records no pooling factors; pass poolings=[...] "
                                 f"(one per conv layer)")
        poolings = [layer['pool'] for layer in described[:n_conv]]
    if len(poolings) != n_conv:
        raise ConfigError(f"createNetfromParams: {len(poolings)} poolings for {n_conv} conv layers")
    return list(poolings)


def CNNCalculator(filters: Sequence, poolings: Sequence, desired_input=None,
                  MFP: bool | Sequence[bool] = False, force_center: bool = False,
                  desired_output=None, n_dim: int = 1) -> Geometry:
    """v1's names for :func:`elektronn2.utils.cnncalculator.cnncalculator`; the result has
    ``patch_size`` (v1: ``input``), ``output_size``, ``strides``, ``fov``, ``offsets``."""
    return cnncalculator(filters, poolings, desired_patch_size=desired_input, mfp=MFP,
                         force_center=force_center, desired_output=desired_output, ndim=n_dim)


def makeGabor(filter_angle: float, n_modes: int, size: int, offset: float) -> np.ndarray:
    """A ``size`` x ``size`` Gabor filter as v1 made it: stripes across ``filter_angle``
    (degrees, [0, 360)), ``n_modes`` periods under the envelope, phase ``offset``;
    zero mean, divided by its sum of squares."""
    if not 0 <= filter_angle < 360:
        raise ConfigError(f"makeGabor: filter_angle={filter_angle} must be in [0, 360) degrees")
    half = (size - 1) / 2 if size % 2 else size / 2
    x, y = np.meshgrid(np.linspace(-half, half, size), np.linspace(-half, half, size))
    theta = np.deg2rad(filter_angle)
    u = (x * np.cos(theta) + y * np.sin(theta)) / (half + 1)
    v = (-x * np.sin(theta) + y * np.cos(theta)) / (half + 1)
    sigma, frequency = 0.35, 1.6 * n_modes / np.pi
    gabor = (np.exp(-(u ** 2 + v ** 2) / (2 * sigma ** 2))
             * np.cos(2 * np.pi * (frequency * v + np.deg2rad(offset))))
    gabor -= gabor.mean()
    return (gabor / np.square(gabor).sum()).astype(np.float32)
