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
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError

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
            groups = [{'params': [p for p in params if getattr(p, 'apply_reg', False)],
                       'apply_reg': True},
                      {'params': [p for p in params if not getattr(p, 'apply_reg', False)],
                       'apply_reg': False}]
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
