"""NeuralLayer: what Perceptron, Conv and UpConv share.

Weights and bias (or a tied weight of another layer), an activation, optional
batch normalisation and dropout.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from .activations import parse_activation
from .init import init_weights
from .node import Node

_BN_MODES = (False, 'train', 'predict')
_BN_EPS = 1e-5
#: Running batch-norm statistics average over all batches seen, but at least this
#: weight goes to the newest batch, so the statistics follow the changing weights.
BN_MIN_MOMENTUM = 0.01


def _initial_value(arg, default_fn, node_name: str, param: str, shape: tuple):
    """ELEKTRONN2's ``w``/``b`` arguments: None, an array, or ``[array, 'const']``.

    Returns (value, trainable).
    """
    trainable = True
    if isinstance(arg, (list, tuple)) and len(arg) == 2 and isinstance(arg[1], str):
        if arg[1] != 'const':
            raise ConfigError(f"Node {node_name!r}: {param}=[value, {arg[1]!r}]; the flag "
                              f"can only be 'const'")
        arg, trainable = arg[0], False
    value = default_fn() if arg is None else torch.as_tensor(np.asarray(arg, dtype=np.float32))
    if tuple(value.shape) != tuple(shape):
        raise ShapeError(f"Node {node_name!r}: initial {param} has shape {tuple(value.shape)}, "
                         f"expected {tuple(shape)}")
    return value, trainable


class NeuralLayer(Node):
    """Shared part of Conv and Perceptron: parameters, normalisation, activation, dropout."""

    def _store_neural_options(self, n_f: int, activation_func: str, batch_normalisation,
                              dropout_rate: float, w, b, name: str, w_init='auto',
                              dual_of: Node | None = None) -> None:
        if not isinstance(n_f, (int, np.integer)) or n_f < 1:
            raise ConfigError(f"Node {name!r}: n_f must be a positive int, got {n_f!r}")
        if batch_normalisation not in _BN_MODES:
            raise ConfigError(f"Node {name!r}: batch_normalisation={batch_normalisation!r}; "
                              f"valid: {_BN_MODES}")
        if not 0 <= dropout_rate < 1:
            raise ConfigError(f"Node {name!r}: dropout_rate={dropout_rate} must be in [0, 1)")
        if dual_of is not None and w is not None:
            raise ConfigError(f"Node {name!r}: give either w or dual_of (tied weights), not both")
        self.n_f = int(n_f)
        self.activation_func = activation_func
        self.activation = parse_activation(activation_func, name)
        self.batch_normalisation = batch_normalisation
        self.dropout_rate = float(dropout_rate)
        self.w_init = w_init
        self.dual_of = dual_of
        self._w_arg, self._b_arg = w, b

    def _layer_params(self, w_shape: tuple, fan_in: int, fan_out: int) -> dict[str, torch.Tensor]:
        """w (or the tied weight of ``dual_of``), b or batch-norm parameters, prelu slopes."""
        if self.dual_of is not None:
            tied = self.dual_of.params['w']
            if tuple(tied.shape) != self._tied_shape(w_shape):
                raise ShapeError(f"Node {self.name!r}: the weights of {self.dual_of.name!r} have "
                                 f"shape {tuple(tied.shape)}, this layer needs {w_shape} (tied)")
            params = {'w': tied}
        else:
            w, w_train = _initial_value(
                self._w_arg, lambda: init_weights(w_shape, fan_in, fan_out, self.activation.name,
                                                  self.w_init, self.name), self.name, 'w', w_shape)
            params = {'w': self._new_param(w, w_train, regularise=True)}
        if not self.batch_normalisation:
            b, b_train = _initial_value(self._b_arg, lambda: torch.zeros(self.n_f), self.name,
                                        'b', (self.n_f,))
            params['b'] = self._new_param(b, b_train)
        else:
            params.update(gamma=self._new_param(torch.ones(self.n_f)),
                          beta=self._new_param(torch.zeros(self.n_f)),
                          mean=self._new_param(torch.zeros(self.n_f), trainable=False),
                          var=self._new_param(torch.ones(self.n_f), trainable=False),
                          count=self._new_param(torch.zeros(1), trainable=False))
        if self.activation.has_param:
            params['prelu_slope'] = self._new_param(torch.full((self.n_f,), 0.25))
        return params

    def _tied_shape(self, w_shape: tuple) -> tuple:
        """Shape the tied weight has in ``dual_of`` (layers override if they transpose it)."""
        return w_shape

    def _normalise(self, y: torch.Tensor, f_axis: int, training: bool) -> torch.Tensor:
        """Batch normalisation over all axes but ``f_axis`` (no-op if switched off)."""
        if not self.batch_normalisation:
            return y
        p = self.params
        shape = [1] * y.ndim
        shape[f_axis] = -1
        if self.batch_normalisation == 'train' and training:
            dims = [d for d in range(y.ndim) if d != f_axis]
            var, mean = torch.var_mean(y, dim=dims, correction=0)
            with torch.no_grad():
                n = y.numel() // y.shape[f_axis]
                p['count'].add_(1)
                momentum = torch.clamp(1.0 / p['count'], min=BN_MIN_MOMENTUM)
                p['mean'].lerp_(mean.detach().float(), momentum)
                p['var'].lerp_(var.detach().float() * n / max(n - 1, 1), momentum)
        else:
            mean, var = p['mean'], p['var']
        scale = p['gamma'] * torch.rsqrt(var + _BN_EPS)
        return (y - mean.view(shape)) * scale.view(shape) + p['beta'].view(shape)

    def _activate(self, y: torch.Tensor, f_axis: int) -> torch.Tensor:
        return self.activation(y, f_axis, self.params.get('prelu_slope'))

    def _dropout(self, y: torch.Tensor, training: bool) -> torch.Tensor:
        if self.dropout_rate and training:
            return F.dropout(y, self.dropout_rate, training=True)
        return y

    def _add_bias(self, y: torch.Tensor, f_axis: int) -> torch.Tensor:
        if 'b' not in self.params:
            return y
        shape = [1] * y.ndim
        shape[f_axis] = -1
        return y + self.params['b'].view(shape)

    def _repr_details(self) -> str:
        extras = [self.activation_func]
        if self.batch_normalisation:
            extras.append(f"bn={self.batch_normalisation}")
        if self.dropout_rate:
            extras.append(f"dropout={self.dropout_rate}")
        return ', '.join(extras)


