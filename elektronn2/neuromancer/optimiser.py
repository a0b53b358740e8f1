"""ELEKTRONN2's optimisers on torch.optim, with ELEKTRONN2's hyper-parameter names.

Each model owns one :class:`Optimisers` set: the hyper-parameters ``lr``, ``mom``,
``beta2`` and ``wd`` are shared by all of the model's optimisers (as in
ELEKTRONN2), but never across models.

=========  =====================================================================
name       torch optimiser and mapping
=========  =====================================================================
SGD        SGD(lr, momentum=mom, weight_decay=wd)
AdaGrad    Adagrad(lr, weight_decay=wd)
AdaDelta   Adadelta(lr, rho=mom, weight_decay=wd)
Adam       AdamW(lr, betas=(mom, beta2), weight_decay=wd): decay decoupled from
           the gradient statistics, as ELEKTRONN2's Adam did
Rprop      Rprop(lr) (no weight decay)
LBFGS      LBFGS(lr) (no weight decay; the step re-evaluates the loss)
=========  =====================================================================

Weight decay applies only to parameters marked ``apply_reg`` (filter and
perceptron weights), not to biases or batch-norm parameters.

ELEKTRONN2's optimiser objects (:class:`Optimiser` and its subclasses :class:`SGD`,
:class:`AdaGrad`, :class:`AdaDelta`, :class:`Adam`) are thin callables over the same
step (:func:`.training_step.run`) and the same per-model hyper-parameters.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError, GraphError
from . import training_step
from .graph_compile import GraphFunction, to_numpy

if TYPE_CHECKING:
    from .node import Node

DEFAULT_HYPER_PARAMS = {'lr': 1e-3, 'mom': 0.9, 'beta2': 0.999, 'wd': 0.0}


def _sgd(groups, hp):
    return torch.optim.SGD(groups, lr=hp['lr'], momentum=hp['mom'])


def _adagrad(groups, hp):
    return torch.optim.Adagrad(groups, lr=hp['lr'])


def _adadelta(groups, hp):
    return torch.optim.Adadelta(groups, lr=hp['lr'], rho=hp['mom'])


def _adam(groups, hp):
    return torch.optim.AdamW(groups, lr=hp['lr'], betas=(hp['mom'], hp['beta2']))


def _rprop(groups, hp):
    return torch.optim.Rprop(groups, lr=hp['lr'])


def _lbfgs(groups, hp):
    return torch.optim.LBFGS([p for g in groups for p in g['params']], lr=hp['lr'])


OPTIMISERS: dict[str, Callable] = {'SGD': _sgd, 'AdaGrad': _adagrad, 'AdaDelta': _adadelta,
                                   'Adam': _adam, 'Rprop': _rprop, 'LBFGS': _lbfgs}
_DECAYING = {'SGD', 'AdaGrad', 'AdaDelta', 'Adam'}
_MOMENTUM_KEY = {'SGD': 'momentum', 'AdaDelta': 'rho'}


def mark_regularised(param: torch.Tensor, regularise: bool = True) -> None:
    """Mark ``param`` for weight decay or not (its ``apply_reg`` attribute)."""
    setattr(param, 'apply_reg', regularise)  # torch's Tensor declares no such attribute


def is_regularised(param: torch.Tensor) -> bool:
    """Whether weight decay applies to ``param`` (see :func:`mark_regularised`)."""
    return bool(getattr(param, 'apply_reg', False))


def check_optimiser_name(name: str) -> str:
    if name not in OPTIMISERS:
        raise ConfigError(f"Unknown optimiser {name!r}; choose one of {sorted(OPTIMISERS)}")
    return name


class Optimisers:
    """A model's torch optimisers, created on first use, and their hyper-parameters."""

    def __init__(self, hyper_params: dict | None = None):
        self.hyper_params = dict(DEFAULT_HYPER_PARAMS)
        self._instances: dict[str, torch.optim.Optimizer] = {}
        self._param_ids: dict[str, tuple[int, ...]] = {}
        if hyper_params:
            for key, value in hyper_params.items():
                self.set(key, value)

    def get(self, name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        """The optimiser ``name`` over ``params`` (rebuilt if the trainable set changed)."""
        check_optimiser_name(name)
        ids = tuple(id(p) for p in params)
        if name not in self._instances or self._param_ids[name] != ids:
            groups = [{'params': [p for p in params if is_regularised(p)], 'apply_reg': True},
                      {'params': [p for p in params if not is_regularised(p)], 'apply_reg': False}]
            groups = [g for g in groups if g['params']]
            self._instances[name] = OPTIMISERS[name](groups, self.hyper_params)
            self._param_ids[name] = ids
            self._apply(self._instances[name], name)
        return self._instances[name]

    def set(self, key: str, value: float) -> None:
        """Set ``lr``, ``mom``, ``beta2`` or ``wd`` for all optimisers at once."""
        if key not in DEFAULT_HYPER_PARAMS:
            raise ConfigError(f"Unknown optimiser parameter {key!r}; "
                              f"known: {sorted(DEFAULT_HYPER_PARAMS)}")
        value = float(value)
        if value < 0 or value != value:
            raise ConfigError(f"Optimiser parameter {key}={value} must be a finite number >= 0")
        self.hyper_params[key] = value
        for name, opt in self._instances.items():
            self._apply(opt, name)

    def _apply(self, opt: torch.optim.Optimizer, name: str) -> None:
        hp = self.hyper_params
        for group in opt.param_groups:
            group['lr'] = hp['lr']
            if name in _DECAYING:
                group['weight_decay'] = hp['wd'] if group.get('apply_reg') else 0.0
            if name in _MOMENTUM_KEY:
                group[_MOMENTUM_KEY[name]] = hp['mom']
            if name == 'Adam':
                group['betas'] = (hp['mom'], hp['beta2'])

    def state_dict(self) -> dict:
        """Hyper-parameters and the state of every optimiser created so far."""
        return {'hyper_params': dict(self.hyper_params),
                'optimisers': {n: o.state_dict() for n, o in self._instances.items()}}

    def load_state_dict(self, state: dict, params: list[torch.Tensor]) -> None:
        for key, value in state['hyper_params'].items():
            self.set(key, value)
        for name, opt_state in state['optimisers'].items():
            self.get(name, params).load_state_dict(opt_state)


class Optimiser:
    """ELEKTRONN2's optimiser object: each call is one update step on a batch.

    Args:
        inputs: the Input nodes fed by the call's arguments, in order (None: the
            model's order, see :meth:`.Model.ordered_inputs`).
        loss: the scalar loss node.
        grads: must be None ('auto'): torch differentiates the loss itself.
        params: parameters to update (tensors, or a dict of them); None: all trainable
            parameters of the loss.
        additional_outputs: nodes whose values each call returns after the loss.

    ``opt(*batch) -> [loss, *additional_outputs]`` (numpy). The hyper-parameters are the
    model's (``lr``, ``mom``, ``beta2``, ``wd``; :meth:`set_opt_meta_params`), as
    ELEKTRONN2 shared them among all optimisers, but here per model.
    """
    #: name in :data:`OPTIMISERS` of the update rule
    method = 'SGD'

    def __init__(self, inputs: Sequence[Node] | None, loss: Node, grads, params,
                 additional_outputs: Sequence[Node] | None):
        if grads not in (None, 'auto'):
            raise ConfigError(f"{type(self).__name__}: grads are computed by torch autograd; "
                              f"pass grads=None")
        self.loss = loss
        self.model = loss.model
        self.output = [loss, *(additional_outputs or [])]
        self.input = (self.model.ordered_inputs(self.output) if inputs is None else list(inputs))
        if isinstance(params, dict):
            params = list(params.values())
        self.params = list(loss.all_trainable_params.values()) if params is None else list(params)
        if not all(isinstance(p, torch.Tensor) and p.requires_grad for p in self.params):
            raise GraphError(f"{type(self).__name__}: params must be trainable tensors "
                             f"(e.g. node.w or loss.all_trainable_params)")
        self.last_exec_time: float | None = None
        self._fn = GraphFunction(self.output, self.input, training=True)

    @property
    def meta_params(self) -> dict[str, float]:
        """The model's hyper-parameters (lr, mom, beta2, wd)."""
        return dict(self.model.optimisers.hyper_params)

    def set_opt_meta_params(self, value_dict: dict[str, float]) -> None:
        """Set hyper-parameters, e.g. ``{'lr': 1e-3, 'mom': 0.9, 'wd': 5e-4}``."""
        for key, value in value_dict.items():
            self.model.optimisers.set(key, value)

    def setlr(self, val: float) -> None:
        self.model.optimisers.set('lr', val)

    def setmom(self, val: float) -> None:
        self.model.optimisers.set('mom', val)

    def setwd(self, val: float) -> None:
        self.model.optimisers.set('wd', val)

    def __call__(self, *args: np.ndarray) -> list:
        """One update on the batch ``args``; returns [loss, *additional outputs]."""
        loss, elapsed, outs = training_step.run(self.model, self.loss, args, self.method,
                                                params=self.params, fn=self._fn)
        self.last_exec_time = elapsed
        return [np.float32(loss)] + [to_numpy(o) for o in outs[1:]]


def _no_extra_updates(cls_name: str, extra_updates) -> None:
    if extra_updates:
        raise ConfigError(f"{cls_name}: extra_updates (Theano update pairs) do not exist in "
                          f"torch; state such as batch-norm statistics is updated by the "
                          f"nodes in training mode")


class SGD(Optimiser):
    """Stochastic gradient descent with momentum ``mom`` (see :class:`Optimiser`)."""
    method = 'SGD'

    def __init__(self, inputs, loss, grads, params, extra_updates,
                 additional_outputs: Sequence[Node] | None = None):
        _no_extra_updates(type(self).__name__, extra_updates)
        super().__init__(inputs, loss, grads, params, additional_outputs)


class AdaGrad(SGD):
    """AdaGrad (see :class:`Optimiser`)."""
    method = 'AdaGrad'


class AdaDelta(SGD):
    """AdaDelta with decay ``mom`` (see :class:`Optimiser`)."""
    method = 'AdaDelta'


class Adam(SGD):
    """Adam with ``mom`` (beta1) and ``beta2`` (see :class:`Optimiser`)."""
    method = 'Adam'


class CG(Optimiser):
    """ELEKTRONN2 declared a conjugate-gradient optimiser but never implemented it."""

    def __init__(self, *args, **kwargs):
        raise ConfigError("ELEKTRONN2's CG optimiser was never implemented; use the "
                          "quasi-Newton optimiser 'LBFGS' instead (model.trainingstep(..., "
                          "optimiser='LBFGS'), or optimiser='LBFGS' in a training config)")
