"""ELEKTRONN2's tensor helpers (``neuromancer.computations``) on torch tensors.

Each is a small function of torch tensors with ELEKTRONN2's arguments; the nodes of
this package compute the same things (the functions reuse their pieces:
:mod:`.activations`, :mod:`.conv_paths`, :mod:`.mfp`). Tensors are (b, f, *spatial)
unless ``spatial_axes`` says otherwise.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from .activations import parse_activation
from .conv_paths import convolve
from .mfp import pool

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def apply_except_axis(x: torch.Tensor, axis: int, func: Callable) -> torch.Tensor:
    """Reduce ``x`` over all axes but ``axis``: ``func(x2d, 1)`` of ``x`` with ``axis``
    first and the rest flattened (e.g. ``torch.mean``); returns shape (x.shape[axis],)."""
    flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    out = func(flat, 1)
    return out[0] if isinstance(out, tuple) else out  # torch.max & co. return (values, indices)


def apply_activation(x: torch.Tensor, activation_func: str, b1: torch.Tensor | None = None) -> torch.Tensor:
    """``activation_func`` (e.g. 'relu', 'maxout 2', 'prelu') applied to (b, f, ...) ``x``;
    ``b1``: the prelu slopes (f,)."""
    activation = parse_activation(activation_func, 'apply_activation')
    if activation.has_param and b1 is None:
        raise ConfigError(f"apply_activation: {activation_func!r} needs its slopes as b1")
    return activation(x, 1 if x.ndim > 1 else 0, b1)


def softmax(x: torch.Tensor, axis: int = 1, force_builtin: bool = False) -> torch.Tensor:
    """Softmax along ``axis`` (always torch's stable implementation)."""
    return torch.softmax(x, dim=axis)


def dot(x: torch.Tensor, W: torch.Tensor, axis: int = 1) -> torch.Tensor:  # noqa: N803
    """Contract axis ``axis`` of ``x`` with the first axis of ``W`` (f_in, f_out); the result
    has f_out in place of that axis."""
    if axis < 1:
        raise ShapeError("dot on the first (batch) axis is not supported")
    return (x.movedim(axis, -1) @ W).movedim(-1, axis)


def conv(x: torch.Tensor, w: torch.Tensor, axis_order: str | None = None, conv_dim: int | None = None,
         x_shape=None, w_shape=None, border_mode: str = 'valid', stride=None) -> torch.Tensor:
    """Convolution of (b, f_in, *spatial) ``x`` with filters (f_out, f_in, *kernel).

    ``border_mode``: 'valid', 'same' (odd kernels) or 'full'; ``stride`` subsamples.
    ``axis_order`` 'theano' (b, z, f, x, y) inputs and filters are moved to 'dnn' order
    and back. ``x_shape``/``w_shape`` are accepted and unused (torch knows the shapes).
    """
    theano_order = axis_order == 'theano' and x.ndim == 5
    if theano_order:
        x, w = x.transpose(1, 2), w.transpose(1, 2)
    n_sp = x.ndim - 2
    if conv_dim is not None and conv_dim != n_sp:
        raise ShapeError(f"conv: conv_dim={conv_dim} does not fit inputs of {x.ndim} axes")
    if w.ndim != x.ndim:
        raise ShapeError(f"conv: filters of {w.ndim} axes for inputs of {x.ndim}")
    kernel = tuple(w.shape[2:])
    paddings: dict[str, int | tuple[int, ...]] = {'valid': 0, 'full': tuple(k - 1 for k in kernel)}
    padding = paddings.get(border_mode)
    if border_mode == 'same':
        if any(k % 2 == 0 for k in kernel):
            raise ShapeError(f"conv: border_mode 'same' needs odd kernels, got {kernel}")
        padding = tuple(k // 2 for k in kernel)
    if padding is None:
        raise ConfigError(f"conv: border_mode={border_mode!r}; valid: 'valid', 'same', 'full'")
    if stride is None or all(s == 1 for s in np.atleast_1d(stride)):
        y = convolve(x, w, None, padding=padding)
    else:
        y = _CONV[n_sp](x, w, None, stride=tuple(np.atleast_1d(stride).tolist()), padding=padding)
    return y.transpose(1, 2) if theano_order else y


def upconv(x: torch.Tensor, w: torch.Tensor, stride, x_shape=None, w_shape=None,
           axis_order: str = 'dnn') -> torch.Tensor:
    """Transposed convolution (the gradient of a strided ``conv``): (b, f_in, *spatial) ``x``,
    filters (f_in, f_out, *kernel), up-sampling by ``stride``."""
    stride = tuple(np.atleast_1d(stride).tolist())
    if len(stride) != x.ndim - 2:
        raise ShapeError(f"upconv: stride {stride} for {x.ndim - 2} spatial axes")
    return _CONV_T[len(stride)](x, w, stride=stride)


def maxout(x: torch.Tensor, factor: int = 2, axis: int | None = None) -> torch.Tensor:
    """Maximum over groups of ``factor`` consecutive features of axis ``axis`` (default 1):
    output feature j is the maximum of features j*factor ... j*factor + factor - 1."""
    axis = 1 if axis is None else axis
    if x.shape[axis] % factor:
        raise ShapeError(f"maxout: {x.shape[axis]} features do not form groups of {factor}")
    return x.unflatten(axis, (x.shape[axis] // factor, factor)).amax(dim=axis + 1)


def _spatial_last(x: torch.Tensor, spatial_axes: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """``x`` with its spatial axes moved behind the others, and the permutation used."""
    spatial = [a % x.ndim for a in spatial_axes]
    order = [a for a in range(x.ndim) if a not in spatial] + spatial
    return x.permute(order), order


def _restore(x: torch.Tensor, order: list[int]) -> torch.Tensor:
    return x.permute(list(np.argsort(order)))


def pooling(x: torch.Tensor, pool: Sequence[int], spatial_axes: Sequence[int], mode: str = 'max',
            stride=None) -> torch.Tensor:
    """Max ('max') or average ('average', 'average_exc_pad') pooling over ``spatial_axes``
    with windows ``pool`` and steps ``stride`` (default ``pool``)."""
    pool_shape = tuple(np.atleast_1d(pool).tolist())
    if all(p == 1 for p in pool_shape) and stride is None:
        return x
    moved, order = _spatial_last(x, spatial_axes)
    lead = moved.shape[:moved.ndim - len(pool_shape)]
    flat = moved.reshape((1, -1) + moved.shape[len(lead):])
    step = None if stride is None else tuple(np.atleast_1d(stride).tolist())
    out = _pool(flat, pool_shape, step, mode)
    return _restore(out.reshape(lead + out.shape[2:]), order)


def _pool(x, pool_shape, stride, mode):
    if mode not in ('max', 'average', 'average_exc_pad', 'average_inc_pad'):
        raise ConfigError(f"pooling: mode={mode!r}; valid: 'max', 'average'")
    return pool(x, pool_shape, stride, 'max' if mode == 'max' else 'average')


def fragmentpool(conv_out: torch.Tensor, pool: Sequence[int], offsets, strides,
                 spatial_axes: Sequence[int], mode: str = 'max'):
    """Max-fragment pooling: pool at every window offset; fragments stacked on axis 0
    (new offsets outermost).

    ``offsets`` (n_fragments, n_spatial) and ``strides`` (n_spatial,) describe where the
    existing fragments' outputs lie (in output-grid units of the dense map); returns
    (pooled fragments, new offsets, new strides), each offset ``o`` of this layer adding
    ``o * strides`` to the old ones.
    """
    pool_shape = tuple(np.atleast_1d(pool).tolist())
    offsets, strides = np.atleast_2d(np.asarray(offsets, int)), np.asarray(strides, int)
    if all(p == 1 for p in pool_shape):
        return conv_out, offsets, strides
    spatial = [a % conv_out.ndim for a in spatial_axes]
    results: list[torch.Tensor] = []
    new_offsets: list[np.ndarray] = []
    for shift in itertools.product(*(range(p) for p in pool_shape)):
        window = [slice(None)] * conv_out.ndim
        for axis, o, p in zip(spatial, shift, pool_shape):  # equal sizes for all offsets
            window[axis] = slice(o, o + (conv_out.shape[axis] - p + 1) // p * p)
        results.append(pooling(conv_out[tuple(window)], pool_shape, spatial, mode))
        new_offsets.extend(old + np.multiply(shift, strides) for old in offsets)
    return torch.cat(results, dim=0), np.array(new_offsets), np.multiply(pool_shape, strides)


def fragments2dense(fragments: torch.Tensor, offsets, strides, spatial_axes: Sequence[int]) -> torch.Tensor:
    """Interleave max-fragment-pooling fragments into dense maps.

    ``fragments`` (n_offsets * b, ...) holds the fragment of ``offsets[i]`` for all b
    examples at rows i*b ... (i+1)*b - 1; along spatial axis k the dense output takes
    it at positions ``offsets[i][k] :: strides[k]``.
    """
    offsets, strides = np.atleast_2d(np.asarray(offsets, int)), np.asarray(strides, int)
    batch = fragments.shape[0] // len(offsets)
    spatial = [a % fragments.ndim for a in spatial_axes]
    out_shape = list(fragments.shape)
    out_shape[0] = batch
    for axis, s in zip(spatial, strides):
        out_shape[axis] *= int(s)
    dense = fragments.new_zeros(out_shape)
    for i, off in enumerate(offsets):
        index = [slice(None)] * fragments.ndim
        for axis, o, s in zip(spatial, off, strides):
            index[axis] = slice(int(o), None, int(s))
        dense[tuple(index)] = fragments[i * batch:(i + 1) * batch]
    return dense


def upsampling_nd(x: torch.Tensor, pool: Sequence[int]) -> torch.Tensor:
    """Repeat every entry ``pool[a]`` times along each axis a ('aaabbb' for 3)."""
    for axis, p in enumerate(np.atleast_1d(pool).tolist()):
        if p > 1:
            x = x.repeat_interleave(int(p), dim=axis)
    return x


def upsampling(x: torch.Tensor, pool, spatial_axes: Sequence[int]) -> torch.Tensor:
    """:func:`upsampling_nd` by ``pool`` along ``spatial_axes`` (size -> size * pool)."""
    return upsampling_nd(x, _per_axis(x.ndim, pool, spatial_axes))


def unpooling_nd(x: torch.Tensor, pool: Sequence[int]) -> torch.Tensor:
    """Spread the entries with ``pool[a] - 1`` zeros around each ('00x00x00' for 3):
    size -> size * p + p - 1."""
    pool = [int(p) for p in np.atleast_1d(pool)]
    out = x.new_zeros([n * p + p - 1 for n, p in zip(x.shape, pool)])
    out[tuple(slice(p - 1, n * p, p) for n, p in zip(x.shape, pool))] = x
    return out


def unpooling(x: torch.Tensor, pool, spatial_axes: Sequence[int]) -> torch.Tensor:
    """:func:`unpooling_nd` by ``pool`` along ``spatial_axes``."""
    return unpooling_nd(x, _per_axis(x.ndim, pool, spatial_axes))


def _per_axis(ndim: int, pool, spatial_axes: Sequence[int]) -> list[int]:
    full = [1] * ndim
    values = np.broadcast_to(np.atleast_1d(pool), (len(spatial_axes),))
    for axis, p in zip(spatial_axes, values):
        full[axis] = int(p)
    return full
