"""NeuralLayer: what Perceptron, Conv and UpConv share.

Weights and bias (or a tied weight of another layer), an activation, optional
batch normalisation and dropout.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from .activations import parse_activation
from .init import init_weights
from .node import Node

logger = logging.getLogger('elektronn2')

_BN_MODES = (False, 'train', 'predict')
_BN_EPS = 1e-5
#: Running batch-norm statistics average over all batches seen, but at least this
#: weight goes to the newest batch, so the statistics follow the changing weights.
BN_MIN_MOMENTUM = 0.01


def _initial_value(arg, default_fn, node_name: str, param: str, shape: tuple):
    """ELEKTRONN2's ``w``/``b`` arguments: None, an array (or tensor), or ``[array, 'const']``
    (``[array, 'trainable']`` is the same as the array).

    Returns (value, trainable).
    """
    trainable = True
    if isinstance(arg, (list, tuple)) and len(arg) == 2 and isinstance(arg[1], str):
        if arg[1] not in ('const', 'trainable'):
            raise ConfigError(f"Node {node_name!r}: {param}=[value, {arg[1]!r}]; the flag "
                              f"can only be 'const' or 'trainable'")
        arg, trainable = arg[0], arg[1] == 'trainable'
    if arg is None:
        value = default_fn()
    elif torch.is_tensor(arg):
        value = arg.detach().float().clone()
    else:
        value = torch.as_tensor(np.asarray(arg, dtype=np.float32))
    if tuple(value.shape) != tuple(shape):
        raise ShapeError(f"Node {node_name!r}: initial {param} has shape {tuple(value.shape)}, "
                         f"expected {tuple(shape)}")
    return value, trainable


class NeuralLayer(Node):
    """Shared part of Conv and Perceptron: parameters, normalisation, activation, dropout."""

    def _store_neural_options(self, n_f: int, activation_func: str, batch_normalisation,
                              dropout_rate: float, w, b, name: str, w_init='auto',
                              dual_of: Node | None = None, gamma=None, mean=None, std=None,
                              gradnet_mode=None) -> None:
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
        self.gradnet_mode = gradnet_mode  # accepted for ELEKTRONN2 scripts; it had no effect
        self._w_arg, self._b_arg = w, b
        self._bn_args = {'gamma': gamma, 'mean': mean, 'std': std}
        unused = [k for k, v in self._bn_args.items() if v is not None]
        if not batch_normalisation and unused:  # ELEKTRONN2 ignored them too
            logger.warning("Node %r: %s initialise batch normalisation, which is off; ignored",
                           name, unused)
            self._call_args.update({k: None for k in unused})

    def _layer_params(self, w_shape: tuple, fan_in: int, fan_out: int) -> dict[str, torch.Tensor]:
        """w (or the tied weight of ``dual_of``), b or batch-norm parameters, prelu slopes."""
        if self.dual_of is not None:
            tied = self.dual_of.params['w']
            if tuple(tied.shape) != self._tied_shape(w_shape):
                raise ShapeError(f"Node {self.name!r}: the weights of {self.dual_of.name!r} have "
                                 f"shape {tuple(tied.shape)}, this layer needs {w_shape} (tied)")
            params = {'w': tied}
        else:
            shared = self._shared_param('w', self._w_arg, w_shape)
            if shared is not None:
                params = {'w': shared}
            else:
                w, w_train = _initial_value(
                    self._w_arg, lambda: init_weights(w_shape, fan_in, fan_out, self.activation.name,
                                                      self.w_init, self.name), self.name, 'w', w_shape)
                params = {'w': self._new_param(w, w_train, regularise=True)}
        if not self.batch_normalisation:
            shared = self._shared_param('b', self._b_arg, (self.n_f,))
            if shared is not None:
                params['b'] = shared
            else:
                b, b_train = _initial_value(self._b_arg, lambda: torch.zeros(self.n_f), self.name,
                                            'b', (self.n_f,))
                params['b'] = self._new_param(b, b_train)
        else:
            params.update(self._bn_params())
        if self.activation.has_param:
            params['prelu_slope'] = self._new_param(torch.full((self.n_f,), 0.25))
        return params

    def _bn_params(self) -> dict[str, torch.Tensor]:
        """gamma, beta (initial value: the ``b`` argument), mean, var (from ``std``), count.

        ``b`` and ``std`` have no parameter of their name, so a model file records
        only whether they were constant."""
        n = (self.n_f,)

        def initial(arg, default: float, param: str):
            return _initial_value(arg, lambda: torch.full(n, default), self.name, param, n)
        gamma, gamma_train = initial(self._bn_args['gamma'], 1.0, 'gamma')
        beta, beta_train = initial(self._b_arg, 0.0, 'b')
        mean, _ = initial(self._bn_args['mean'], 0.0, 'mean')
        std, _ = initial(self._bn_args['std'], 1.0, 'std')
        for arg in ('b', 'std'):
            given = self._call_args.get(arg)
            if given is not None:
                const = isinstance(given, (list, tuple)) and len(given) == 2 and given[1] == 'const'
                self._call_args[arg] = [None, 'const'] if const else None
        return {'gamma': self._new_param(gamma, gamma_train),
                'beta': self._new_param(beta, beta_train),
                'mean': self._new_param(mean, trainable=False),
                'var': self._new_param(std ** 2, trainable=False),
                'count': self._new_param(torch.zeros(1), trainable=False)}

    def _shared_param(self, key: str, arg, shape: tuple) -> torch.Tensor | None:
        """The parameter ``key`` of another layer, if ``arg`` is that layer or that
        parameter (ELEKTRONN2's weight sharing); the argument is then recorded as the
        layer, so that a model file shares it again."""
        owner: Node | None
        if isinstance(arg, Node):
            owner = arg
        elif isinstance(arg, torch.nn.Parameter):
            owner = next((n for n in self.model.nodes.values() if n.params.get(key) is arg), None)
            if owner is None:
                return None  # a parameter of no layer: its value initialises this one
        else:
            return None
        if key not in owner.params:
            raise ConfigError(f"Node {self.name!r}: {key}={owner.name!r} shares that node's "
                              f"{key!r}, but it has none (it has {sorted(owner.params)})")
        param = owner.params[key]
        if tuple(param.shape) != tuple(shape):
            raise ShapeError(f"Node {self.name!r}: the shared {key} of {owner.name!r} has shape "
                             f"{tuple(param.shape)}, this layer needs {tuple(shape)}")
        self._call_args[key] = owner
        return param

    # --- ELEKTRONN2's parameter attributes ------------------------------------------------
    @property
    def w(self) -> torch.Tensor:
        """The weights (a torch Parameter; pass it as ``w=`` to share it)."""
        return self.params['w']

    @property
    def b(self) -> torch.Tensor | None:
        """The bias; with batch normalisation its shift ``beta`` (added after normalising)."""
        return self.params.get('b', self.params.get('beta'))

    @property
    def gamma(self) -> torch.Tensor | None:
        """Batch-normalisation scale (None without batch normalisation)."""
        return self.params.get('gamma')

    @property
    def mean(self) -> torch.Tensor | None:
        """Batch-normalisation mean (running average while training)."""
        return self.params.get('mean')

    @property
    def std(self) -> torch.Tensor | None:
        """Batch-normalisation standard deviation (derived from the stored variance)."""
        var = self.params.get('var')
        return None if var is None else var.detach().sqrt()

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


