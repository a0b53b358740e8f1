"""Weight initialisations.

Each takes the weight shape and the fans (inputs and outputs per unit, filter
taps included) and returns a float32 tensor drawn from torch's global RNG, so
``torch.manual_seed`` makes model construction reproducible.
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


INITIALISERS = {'glorot_uniform': glorot_uniform, 'glorot_normal': glorot_normal,
                'he_normal': he_normal, 'he_uniform': he_uniform, 'orthogonal': orthogonal}


def init_weights(shape, fan_in: int, fan_out: int, activation: str,
                 method: str = 'auto', node_name: str = '?') -> torch.Tensor:
    """Initial weights; ``method='auto'``: He normal for rectifiers, Glorot uniform otherwise."""
    if method == 'auto':
        method = 'he_normal' if activation in RECTIFIERS else 'glorot_uniform'
    if method not in INITIALISERS:
        raise ConfigError(f"Node {node_name!r}: unknown weight initialisation {method!r}; "
                          f"valid: 'auto', {', '.join(sorted(INITIALISERS))}")
    return INITIALISERS[method](tuple(shape), fan_in, fan_out)
