"""ELEKTRONN2's parameter variables on torch: :class:`VariableParam`, :class:`VariableWeight`,
:class:`ConstantParam` and :func:`initweights`.

In ELEKTRONN2 these were Theano shared variables with two flags: ``apply_train``
(the optimiser updates it) and ``apply_reg`` (weight decay applies). Here they are
``torch.nn.Parameter`` subclasses: ``apply_train`` is ``requires_grad`` and
``apply_reg`` the attribute every parameter of this package carries (see
:mod:`.optimiser`). ``get_value``/``set_value`` read and write numpy arrays. The Theano
arguments ``strict``, ``allow_downcast``, ``borrow`` and ``broadcastable`` are accepted
and have no effect (torch broadcasts by shape).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..config import config
from ..errors import ConfigError, GraphError, ShapeError
from .optimiser import mark_regularised


def _as_tensor(value, dtype) -> torch.Tensor:
    if torch.is_tensor(value):
        tensor = value.detach().clone()
    else:
        tensor = torch.as_tensor(np.array(value, dtype=dtype, copy=True))
    if dtype is not None:
        tensor = tensor.to(getattr(torch, str(np.dtype(dtype))))
    elif tensor.is_floating_point():
        tensor = tensor.to(config.torch_float_dtype)
    return tensor


class VariableParam(torch.nn.Parameter):
    """A parameter holding ``value``; trained if ``apply_train``, decayed if ``apply_reg``.

    ``get_value()`` returns a numpy copy, ``set_value(array)`` writes into it (same shape,
    or a scalar that fills it).
    """

    param_name: str | None

    def __new__(cls, value=None, name: str | None = None, apply_train: bool = True,
                apply_reg: bool = True, dtype=None, strict: bool = False, allow_downcast=None,
                borrow: bool = False, broadcastable=None):
        if value is None:
            raise GraphError(f"{cls.__name__} {name!r}: a value is required")
        data = _as_tensor(value, dtype)
        param = super().__new__(cls, data, requires_grad=bool(apply_train) and data.is_floating_point())
        mark_regularised(param, apply_reg)
        param.param_name = name
        return param

    def __init__(self, *args, **kwargs):  # all done in __new__
        pass

    def __deepcopy__(self, memo):
        result = VariableParam.__new__(type(self), self.data.clone(), getattr(self, 'param_name', None),
                                       self.requires_grad, getattr(self, 'apply_reg', False))
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, protocol):
        return (_rebuild_variable, (type(self), self.detach().cpu().numpy(), self.param_name,
                                    self.requires_grad, self.apply_reg))

    @property
    def apply_train(self) -> bool:
        """Whether the optimiser updates this parameter."""
        return self.requires_grad

    def get_value(self, borrow: bool = False) -> np.ndarray:
        """The value as a numpy array (a copy)."""
        value = self.detach()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.cpu().numpy().copy()

    def set_value(self, new_value, borrow: bool = False) -> None:
        """Write ``new_value`` (an array of this shape, or a number) into the parameter."""
        value = torch.as_tensor(np.asarray(new_value))
        if value.ndim and tuple(value.shape) != tuple(self.shape):
            raise ShapeError(f"{type(self).__name__} {self.param_name!r} has shape "
                             f"{tuple(self.shape)}, the new value has {tuple(value.shape)}")
        with torch.no_grad():
            self.copy_(value.to(self.dtype).expand(self.shape))


def _rebuild_variable(cls, value, name, apply_train, apply_reg):
    return VariableParam.__new__(cls, value, name, apply_train, apply_reg)


class VariableWeight(VariableParam):
    """A :class:`VariableParam` initialised by :func:`initweights` (``shape``, ``init_kwargs``)
    or from ``value``; a scalar ``value`` with a ``shape`` fills that shape."""

    def __new__(cls, shape=None, init_kwargs: dict | None = None, value=None, name: str | None = None,
                apply_train: bool = True, apply_reg: bool = True, dtype=None, strict: bool = False,
                allow_downcast=None, borrow: bool = False, broadcastable=None):
        if value is None:
            if shape is None or init_kwargs is None:
                raise GraphError(f"VariableWeight {name!r}: give a value, or shape and init_kwargs")
            value = init_tensor(shape, **init_kwargs)
        elif shape is not None:
            if np.ndim(value) > 0:
                raise ShapeError(f"VariableWeight {name!r}: with a shape, the value must be a "
                                 f"number (it fills the shape), got shape {np.shape(value)}")
            value = torch.full(tuple(np.atleast_1d(shape).tolist()), float(value))
        return super().__new__(cls, value, name, apply_train, apply_reg, dtype)


class ConstantParam(VariableParam):
    """A constant (never trained nor decayed); ``set_value`` refuses."""

    def __new__(cls, value, name: str | None = None, dtype=None,
                make_singletons_broadcastable: bool = True):
        return super().__new__(cls, value, name, False, False, dtype)

    def set_value(self, new_value, borrow: bool = False) -> None:
        raise GraphError(f"ConstantParam {self.param_name!r} is a constant; make a "
                         f"VariableParam(..., apply_train=False) to change its value")


_MODES = ('const', 'prelu', 'fix-uni', 'normal', 'uni', 'ortho')


def init_tensor(shape, dtype='float32', scale='glorot', mode: str = 'normal', pool=None,
                spatial_axes: Sequence[int] | None = None) -> torch.Tensor:
    """:func:`initweights` as a torch tensor (drawn from torch's RNG; on the meta device
    when built there)."""
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    if mode == 'const':
        w = torch.full(shape, float(scale))
    elif mode == 'prelu':  # (n_out, 2): bias, then slope 1 (initially linear)
        w = torch.full(shape, float(scale))
        w[:, 1] = 1.0
    elif mode == 'fix-uni':
        w = torch.empty(shape).uniform_(-float(scale), float(scale))
    elif scale == 'glorot' and mode in ('normal', 'uni', 'ortho'):
        fan_in, fan_out = _glorot_fans(shape, pool, spatial_axes)
        std = math.sqrt(2.0 / (fan_in + fan_out))
        # the fans are fractional with pooling, so this draws directly rather than through
        # .init's glorot_normal/orthogonal (whose fans are ints): the same draws
        if mode == 'normal':
            w = torch.randn(shape) * std
        elif mode == 'uni':
            w = torch.empty(shape).uniform_(-std, std)
        else:
            flat = torch.nn.init.orthogonal_(torch.empty(shape[0], math.prod(shape[1:])))
            w = (flat / flat.std(dim=1, keepdim=True).clamp(min=1e-12) * std).reshape(shape)
    else:
        raise ConfigError(f"initweights: scale={scale!r}, mode={mode!r} is not an "
                          f"initialisation; modes: {_MODES} (normal, uni, ortho need "
                          f"scale='glorot', the others a number)")
    return w.to(getattr(torch, str(np.dtype(dtype))))


def _glorot_fans(shape: tuple, pool, spatial_axes) -> tuple[float, float]:
    """(fan_in, fan_out): (n_in, n_out) matrices, or filters (n_out, n_in, *kernel)."""
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    if spatial_axes is None:
        raise ConfigError(f"initweights: filters of shape {shape} need spatial_axes")
    kernel = [s for i, s in enumerate(shape) if i in spatial_axes]
    other = [s for i, s in enumerate(shape) if i not in spatial_axes]
    if len(other) != 2:
        raise ShapeError(f"initweights: shape {shape} with spatial_axes {spatial_axes} must "
                         f"leave two axes (n_out, n_in)")
    n_out, n_in = other
    taps = math.prod(kernel)
    pooled = math.prod(np.atleast_1d(pool).tolist()) if pool is not None else 1
    return float(n_in * taps), float(n_out * taps / pooled)


def initweights(shape, dtype='float32', scale='glorot', mode: str = 'normal', pool=None,
                spatial_axes: Sequence[int] | None = None) -> np.ndarray:
    """Initial weights as a numpy array, as ELEKTRONN2 drew them.

    Modes: 'const' (all ``scale``), 'prelu' ((n, 2): ``scale`` then 1), 'fix-uni'
    (uniform in +-``scale``), and with ``scale='glorot'``: 'normal' (std
    ``sqrt(2 / s)``), 'uni' (uniform in +-``sqrt(2 / s)``) or 'ortho' (orthogonal rows of
    that std), where ``s = n_in + n_out`` for (n_in, n_out) matrices and
    ``(n_in + n_out / prod(pool)) * prod(kernel)`` for filters (n_out, n_in, *kernel)
    whose kernel axes are ``spatial_axes``.
    """
    return init_tensor(shape, dtype, scale, mode, pool, spatial_axes).numpy()
