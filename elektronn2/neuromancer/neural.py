"""Learnable layers: Perceptron, Conv (1-, 2-, 3-D) and Pool.

Conv and Perceptron share :class:`NeuralLayer`: weights and bias, an
activation, optional batch normalisation and dropout.

Order of operations in a Conv: convolution + bias, batch normalisation,
activation, pooling, dropout. For max pooling and a monotone activation the
pooling runs before the activation (equal result, less work).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from .activations import parse_activation
from .init import init_weights
from .node import Node
from .shape import SPATIAL_TAGS, TaggedShape, as_tuple

_BN_MODES = (False, 'train', 'predict')
_BN_EPS = 1e-5
#: Running batch-norm statistics average over all batches seen, but at least this
#: weight goes to the newest batch, so the statistics follow the changing weights.
BN_MIN_MOMENTUM = 0.01
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


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
                              dropout_rate: float, w, b, name: str) -> None:
        if not isinstance(n_f, (int, np.integer)) or n_f < 1:
            raise ConfigError(f"Node {name!r}: n_f must be a positive int, got {n_f!r}")
        if batch_normalisation not in _BN_MODES:
            raise ConfigError(f"Node {name!r}: batch_normalisation={batch_normalisation!r}; "
                              f"valid: {_BN_MODES}")
        if not 0 <= dropout_rate < 1:
            raise ConfigError(f"Node {name!r}: dropout_rate={dropout_rate} must be in [0, 1)")
        self.n_f = int(n_f)
        self.activation_func = activation_func
        self.activation = parse_activation(activation_func, name)
        self.batch_normalisation = batch_normalisation
        self.dropout_rate = float(dropout_rate)
        self._w_arg, self._b_arg = w, b

    def _layer_params(self, w_shape: tuple, fan_in: int, fan_out: int) -> dict[str, torch.Tensor]:
        w, w_train = _initial_value(
            self._w_arg, lambda: init_weights(w_shape, fan_in, fan_out, self.activation.name,
                                              node_name=self.name), self.name, 'w', w_shape)
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


class Perceptron(NeuralLayer):
    """A fully connected layer acting on the 'f' axis of any-rank input.

    With ``flatten=True`` all non-batch axes are flattened into the features
    first and the output is ``(b, n_f)`` with tags 'b,f'. Weights ``w`` have shape
    (n_in, n_f), bias ``b`` (n_f,). 'maxout k' divides the outputs by k.
    """

    def __init__(self, parent: Node, n_f: int, activation_func: str = 'relu',
                 flatten: bool = False, batch_normalisation=False, dropout_rate: float = 0,
                 name: str = 'dot', print_repr: bool = True, w=None, b=None):
        self._store_neural_options(n_f, activation_func, batch_normalisation, dropout_rate,
                                   w, b, name)
        self.flatten = flatten
        super().__init__(parent, name, print_repr)

    def _n_in(self, sh: TaggedShape) -> int:
        if self.flatten:
            unknown = [t for s, t in zip(sh.shape, sh.tags) if s is None and t != 'b']
            if unknown:
                raise ShapeError(f"cannot flatten axes {unknown} of unknown size")
            return sh.stripbatch_prod
        if 'f' not in sh.tags:
            raise ShapeError(f"input {sh} has no 'f' axis; use flatten=True")
        return sh['f']

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        self._n_in(sh)
        n_out = self.activation.n_out(self.n_f, self.name)
        if self.flatten:
            if sh.hasbatch:
                return TaggedShape((sh.batch_size, n_out), 'b,f')
            return TaggedShape((n_out,), 'f')
        return sh.updateshape('f', n_out)

    def _make_params(self):
        n_in = self._n_in(self.parent.shape)
        return self._layer_params((n_in, self.n_f), n_in, self.n_f)

    def _compute_cost(self) -> int:
        sh = self.parent.shape
        positions = 1 if self.flatten else sh.stripbatch_prod // sh['f']
        return self._n_in(sh) * self.n_f * positions

    def forward(self, x, training=False):
        if self.flatten:
            x = x.reshape(x.shape[0], -1) if self.parent.shape.hasbatch else x.reshape(-1)
            f_axis = x.ndim - 1
        else:
            f_axis = self.parent.shape.tag2index('f')
            x = x.movedim(f_axis, -1)
        y = x @ self.params['w']
        y = self._add_bias(y, -1)
        y = self._normalise(y, y.ndim - 1, training)
        y = self._activate(y, y.ndim - 1)
        y = self._dropout(y, training)
        return y if self.flatten else y.movedim(-1, f_axis)


Dot = Perceptron


def _check_conv_tags(sh: TaggedShape) -> int:
    """Convolutions need tags 'b,f' followed by 1-3 spatial axes; returns their number."""
    n_sp = len(sh.spatial_axes)
    if sh.tags[:2] != ('b', 'f') or any(t not in SPATIAL_TAGS for t in sh.tags[2:]) or not 1 <= n_sp <= 3:
        raise ShapeError(f"input tags {','.join(sh.tags)} do not suit a convolution: it needs "
                         f"'b,f' followed by 1 to 3 spatial axes (e.g. 'b,f,z,x,y' or 'b,f,x,y')")
    return n_sp


class Conv(NeuralLayer):
    """Convolution over the spatial axes (1-, 2- or 3-D), optionally followed by pooling.

    Args:
        parent: node with tags 'b,f' + spatial axes.
        n_f: number of filters.
        filter_shape: per spatial axis (an int applies to all).
        pool_shape: max pooling after the convolution (default no pooling).
        conv_mode: 'valid' (no padding), 'same' (output size = input size) or 'full'.
        activation_func: see :mod:`.activations`.
        batch_normalisation: False, 'train' (batch statistics while training,
            accumulated statistics for prediction) or 'predict' (fixed statistics).
        dropout_rate: fraction of outputs dropped while training.
        w, b: initial filters (n_f, n_in, *filter_shape) and biases (n_f,), or
            ``[value, 'const']`` for constants.
    """

    def __init__(self, parent: Node, n_f: int, filter_shape: int | Sequence[int],
                 pool_shape: int | Sequence[int] | None = None, conv_mode: str = 'valid',
                 activation_func: str = 'relu', mfp: bool = False, batch_normalisation=False,
                 dropout_rate: float = 0, name: str = 'conv', print_repr: bool = True,
                 w=None, b=None):
        self._store_neural_options(n_f, activation_func, batch_normalisation, dropout_rate,
                                   w, b, name)
        n_sp = len(parent.shape.spatial_axes)
        self.filter_shape = as_tuple(filter_shape, n_sp, 'filter_shape')
        self.pool_shape = as_tuple(pool_shape, n_sp, 'pool_shape')
        if conv_mode not in ('valid', 'same', 'full'):
            raise ConfigError(f"Node {name!r}: conv_mode={conv_mode!r}; valid: 'valid', 'same', 'full'")
        if mfp:
            raise ConfigError(f"Node {name!r}: max-fragment pooling (mfp=True) is not available yet")
        self.conv_mode = conv_mode
        self.mfp = mfp
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        _check_conv_tags(sh)
        out = sh.map_spatial(lambda k, g: g.conv_pool(self.filter_shape[k], self.pool_shape[k],
                                                      self.conv_mode))
        return out.updateshape('f', self.activation.n_out(self.n_f, self.name))

    def _make_params(self):
        n_in = self.parent.shape['f']
        taps = math.prod(self.filter_shape)
        return self._layer_params((self.n_f, n_in) + self.filter_shape, n_in * taps,
                                  self.n_f * taps)

    def _compute_cost(self) -> int:
        sh = self.parent.shape
        conv_out = math.prod(sh.geometry(i).conv(k, self.conv_mode).size
                             for i, k in zip(sh.spatial_axes, self.filter_shape))
        return self.n_f * sh['f'] * math.prod(self.filter_shape) * conv_out

    def _padding(self):
        if self.conv_mode == 'valid':
            return 0
        if self.conv_mode == 'same':
            return 'same'
        return tuple(k - 1 for k in self.filter_shape)

    def forward(self, x, training=False):
        n_sp = x.ndim - 2
        y = _CONV[n_sp](x, self.params['w'], self.params.get('b'), padding=self._padding())
        y = self._normalise(y, 1, training)
        pool_first = self.activation.is_monotone and self.activation.name != 'maxout'
        if pool_first:
            y = _pool(y, self.pool_shape, None, 'max')
            y = self._activate(y, 1)
        else:
            y = _pool(self._activate(y, 1), self.pool_shape, None, 'max')
        return self._dropout(y, training)

    def _repr_details(self) -> str:
        pool = f", pool {self.pool_shape}" if any(p > 1 for p in self.pool_shape) else ''
        return f"filter {self.filter_shape}{pool}, {self.conv_mode}, " + super()._repr_details()


def _pool(x: torch.Tensor, pool_shape: tuple, stride: tuple | None, mode: str) -> torch.Tensor:
    if all(p == 1 for p in pool_shape) and (stride is None or all(s == 1 for s in stride)):
        return x
    fns = _MAX_POOL if mode == 'max' else _AVG_POOL
    return fns[x.ndim - 2](x, pool_shape, stride or pool_shape)


class Pool(Node):
    """Max or average pooling over the spatial axes.

    Args:
        pool_shape: window per spatial axis (an int applies to all).
        stride: step per spatial axis (default: the window, i.e. non-overlapping).
        mode: 'max' or 'average'.
    """

    def __init__(self, parent: Node, pool_shape: int | Sequence[int], stride=None,
                 mfp: bool = False, mode: str = 'max', name: str = 'pool', print_repr: bool = True):
        n_sp = len(parent.shape.spatial_axes)
        self.pool_shape = as_tuple(pool_shape, n_sp, 'pool_shape')
        self.stride = as_tuple(stride, n_sp, 'stride') if stride is not None else self.pool_shape
        if mode not in ('max', 'average'):
            raise ConfigError(f"Node {name!r}: pooling mode={mode!r}; valid: 'max', 'average'")
        if mfp:
            raise ConfigError(f"Node {name!r}: max-fragment pooling (mfp=True) is not available yet")
        self.mode = mode
        self.mfp = mfp
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        _check_conv_tags(sh)
        return sh.map_spatial(lambda k, g: g.pool(self.pool_shape[k], self.stride[k]))

    def _compute_cost(self) -> int:
        return self.parent.shape.stripbatch_prod

    def forward(self, x, training=False):
        return _pool(x, self.pool_shape, self.stride, self.mode)

    def _repr_details(self) -> str:
        return f"{self.mode} {self.pool_shape}, stride {self.stride}"
