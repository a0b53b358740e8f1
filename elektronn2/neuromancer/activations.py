"""Activation functions by ELEKTRONN2 name.

``tanh, relu, prelu, elu, selu, abs, sigmoid (sig, logistic), softplus,
lin (linear)`` and ``'maxout <k>'`` (maximum over groups of k features, which
divides the number of features by k).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError

#: Element-wise activations; 'lin', 'prelu' and 'maxout' are applied by Activation itself.
_ELEMENTWISE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    'tanh': torch.tanh,
    'relu': F.relu,
    'elu': F.elu,
    'selu': F.selu,
    'abs': torch.abs,
    'sigmoid': torch.sigmoid,
    'softplus': F.softplus,
}
_FUNCTIONS = set(_ELEMENTWISE) | {'lin', 'prelu', 'maxout'}
_ALIASES = {'sig': 'sigmoid', 'logistic': 'sigmoid', 'linear': 'lin'}
# max(f(a), f(b)) == f(max(a, b)): max pooling may come before these
_MONOTONE = {'tanh', 'relu', 'elu', 'selu', 'sigmoid', 'softplus', 'lin', 'maxout'}
#: Activations whose weights are best initialised for rectifiers (He).
RECTIFIERS = {'relu', 'prelu', 'elu', 'selu', 'abs', 'maxout'}


@dataclass(frozen=True)
class Activation:
    """A parsed activation spec. ``k`` is the maxout group size (1 otherwise)."""
    name: str
    k: int = 1

    @property
    def is_monotone(self) -> bool:
        return self.name in _MONOTONE

    @property
    def has_param(self) -> bool:
        """prelu learns one negative slope per feature."""
        return self.name == 'prelu'

    def n_out(self, n_f: int, node_name: str = '?') -> int:
        """Number of output features for ``n_f`` inputs."""
        if self.name != 'maxout':
            return n_f
        if n_f % self.k:
            raise ShapeError(f"Node {node_name!r}: 'maxout {self.k}' needs the number of "
                             f"features ({n_f}) to be a multiple of {self.k}")
        return n_f // self.k

    def __call__(self, x: torch.Tensor, f_axis: int = 1,
                 slope: torch.Tensor | None = None) -> torch.Tensor:
        if self.name == 'lin':
            return x
        if self.name == 'prelu':
            if slope is None:
                raise ConfigError("Activation 'prelu' needs its learned slope (slope=...)")
            shape = [1] * x.ndim
            shape[f_axis] = -1
            return torch.where(x >= 0, x, x * slope.view(shape))
        if self.name == 'maxout':
            n_f = x.shape[f_axis]
            grouped = x.unflatten(f_axis, (n_f // self.k, self.k))
            return grouped.amax(dim=f_axis + 1)
        return _ELEMENTWISE[self.name](x)


def parse_activation(spec: str, node_name: str = '?') -> Activation:
    """``'relu'`` -> Activation('relu'); ``'maxout 2'`` -> Activation('maxout', 2)."""
    if not isinstance(spec, str):
        raise ConfigError(f"Node {node_name!r}: activation_func must be a string, got {spec!r}")
    parts = spec.split()
    name = _ALIASES.get(parts[0], parts[0]) if parts else ''
    if name not in _FUNCTIONS:
        valid = sorted(_FUNCTIONS - {'maxout'} | set(_ALIASES)) + ["'maxout <k>'"]
        raise ConfigError(f"Node {node_name!r}: unknown activation_func {spec!r}; "
                          f"valid: {', '.join(valid)}")
    if name == 'maxout':
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) < 2:
            raise ConfigError(f"Node {node_name!r}: maxout needs a group size >= 2, e.g. "
                              f"'maxout 2', got {spec!r}")
        return Activation('maxout', int(parts[1]))
    if len(parts) != 1:
        raise ConfigError(f"Node {node_name!r}: activation_func {spec!r} takes no argument")
    return Activation(name)
