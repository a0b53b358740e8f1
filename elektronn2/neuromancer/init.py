"""Weight initialisations.

Each takes the weight shape and the fans (inputs and outputs per unit, filter
taps included) and returns a float32 tensor drawn from torch's global RNG, so
``torch.manual_seed`` makes model construction reproducible. A number as method
gives constant weights.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .activations import RECTIFIERS


def glorot_uniform(shape, fan_in: int, fan_out: int) -> torch.Tensor:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return torch.empty(shape).uniform_(-bound, bound)


def glorot_normal(shape, fan_in: int, fan_out: int) -> torch.Tensor:
    return torch.randn(shape) * math.sqrt(2.0 / (fan_in + fan_out))


def he_normal(shape, fan_in: int, fan_out: int) -> torch.Tensor:
    return torch.randn(shape) * math.sqrt(2.0 / fan_in)


def he_uniform(shape, fan_in: int, fan_out: int) -> torch.Tensor:
    bound = math.sqrt(6.0 / fan_in)
    return torch.empty(shape).uniform_(-bound, bound)


def orthogonal(shape, fan_in: int, fan_out: int) -> torch.Tensor:
    """Orthogonal rows (or columns) over the flattened fan, scaled for rectifiers."""
    flat = torch.empty(shape[0], math.prod(shape[1:]))
    torch.nn.init.orthogonal_(flat)
    return flat.reshape(shape)


def identity(shape, fan_in: int, fan_out: int) -> torch.Tensor:
    """Channel c passes to channel c at every tap: the identity map of a Perceptron
    (n_in, n_f), nearest-neighbour up-sampling for an UpConv (n_in, n_f, *pool)."""
    w = torch.zeros(shape)
    for c in range(min(shape[0], shape[1])):
        w[c, c] = 1.0
    return w


def gabor(shape, fan_in: int, fan_out: int) -> torch.Tensor:
    """Gabor filters (n_f, n_in, *k) with random direction, wavelength and phase.

    Each filter has zero mean and the variance of He initialisation: edge and
    texture detectors that suit first layers.
    """
    n_f, n_in, *kernel = shape
    if not kernel:
        raise ConfigError("Gabor initialisation needs convolution filters (n_f, n_in, *filter_shape)")
    axes = torch.meshgrid(*[torch.arange(k) - (k - 1) / 2 for k in kernel], indexing='ij')
    coords = torch.stack(axes, dim=-1)  # (*k, n_sp)
    filters = torch.empty((n_f, n_in, *kernel))
    for i in range(n_f):
        direction = torch.randn(len(kernel))
        direction /= direction.norm().clamp(min=1e-6)
        wavelength = 2.0 + torch.rand(()) * max(max(kernel) - 2.0, 0.5)
        sigma = 0.5 * wavelength
        phase = torch.rand(()) * 2 * math.pi
        envelope = torch.exp(-(coords ** 2).sum(-1) / (2 * sigma ** 2))
        wave = torch.cos(2 * math.pi * (coords @ direction) / wavelength + phase)
        signs = torch.where(torch.rand(n_in) < 0.5, -1.0, 1.0).view(n_in, *[1] * len(kernel))
        filters[i] = envelope * wave * signs
    filters -= filters.mean(dim=tuple(range(1, filters.ndim)), keepdim=True)
    std = filters.flatten(1).std(dim=1).clamp(min=1e-8).view(-1, *[1] * (filters.ndim - 1))
    return filters / std * math.sqrt(2.0 / fan_in)


INITIALISERS = {'glorot_uniform': glorot_uniform, 'glorot_normal': glorot_normal,
                'he_normal': he_normal, 'he_uniform': he_uniform, 'orthogonal': orthogonal,
                'identity': identity, 'gabor': gabor}


def init_weights(shape, fan_in: int, fan_out: int, activation: str,
                 method: str | float = 'auto', node_name: str = '?') -> torch.Tensor:
    """Initial weights; ``method='auto'``: He normal for rectifiers, Glorot uniform otherwise."""
    if isinstance(method, (int, float)) and not isinstance(method, bool):
        return torch.full(tuple(shape), float(method))
    if method == 'auto':
        method = 'he_normal' if activation in RECTIFIERS else 'glorot_uniform'
    if method not in INITIALISERS:
        raise ConfigError(f"Node {node_name!r}: unknown weight initialisation {method!r}; "
                          f"valid: 'auto', a number (constant), {', '.join(sorted(INITIALISERS))}")
    return INITIALISERS[method](tuple(shape), fan_in, fan_out)
