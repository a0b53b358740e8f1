"""Learnable layers: Perceptron, Conv (1-, 2-, 3-D), Pool, UpConv and LRN; FaithlessMerge.

ELEKTRONN2's ``neural`` module also held Crop, Pad (:mod:`.basic`), FragmentsToDense
(:mod:`.mfp`), GRU and LSTM (:mod:`.recurrent`); they are importable from here too.

Order of operations in a Conv: convolution + bias, batch normalisation,
activation, pooling, dropout. For max pooling and a monotone activation the
pooling runs before the activation (equal result, less work). With ``mfp=True``
the pooling is max-fragment pooling (see :mod:`.mfp`).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from .basic import Add, Concat, Crop, merged_geometry

# ELEKTRONN2's neural module held these too (re-exports; their homes are named here)
from .basic import Pad as Pad
from .conv_paths import convolve
from .layer import NeuralLayer
from .mfp import FragmentsToDense as FragmentsToDense
from .mfp import fragment_pool, fragmented_shape, pool
from .node import Node
from .recurrent import GRU as GRU
from .recurrent import LSTM as LSTM
from .shape import SPATIAL_TAGS, TaggedShape, as_tuple

_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class Perceptron(NeuralLayer):
    """A fully connected layer acting on the 'f' axis of any-rank input.

    With ``flatten=True`` all non-batch axes are flattened into the features
    first and the output is ``(b, n_f)`` with tags 'b,f'. Weights ``w`` have shape
    (n_in, n_f), bias ``b`` (n_f,). 'maxout k' divides the outputs by k. ``w``/``b`` may
    also be another layer (or its ``.w``/``.b``) to share its parameter; ``gamma``,
    ``mean``, ``std`` initialise batch normalisation. ``w_init``: see :mod:`.init`.
    ``dual_of``: a Perceptron whose weights this layer uses transposed (tied auto-encoder
    decoders; see :meth:`make_dual`).
    """

    def __init__(self, parent: Node, n_f: int, activation_func: str = 'relu',
                 flatten: bool = False, batch_normalisation=False, dropout_rate: float = 0,
                 name: str = 'dot', print_repr: bool = True, w=None, b=None, gamma=None,
                 mean=None, std=None, gradnet_mode=None, w_init: str | float = 'auto',
                 dual_of: Perceptron | None = None):
        self._store_neural_options(n_f, activation_func, batch_normalisation, dropout_rate,
                                   w, b, name, w_init, dual_of, gamma, mean, std, gradnet_mode)
        self.flatten = flatten
        super().__init__(parent, name, print_repr)

    def make_dual(self, parent: Node, activation_func: str = 'lin', name: str = 'dual',
                  **kwargs) -> Perceptron:
        """A Perceptron from this layer's outputs back to its inputs with tied (transposed)
        weights and its own bias, applied to ``parent``."""
        return Perceptron(parent, self.params['w'].shape[0], activation_func=activation_func,
                          name=name, dual_of=self, **kwargs)

    def _tied_shape(self, w_shape: tuple) -> tuple:
        return w_shape[::-1]

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
        w = self.params['w']
        y = x @ (w.t() if self.dual_of is not None else w)
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


def _pooled(sh: TaggedShape, pool_shape: tuple, stride: tuple, mfp: bool) -> TaggedShape:
    """Shape after (max-fragment) pooling."""
    out = sh.map_spatial(lambda k, g: g.pool(pool_shape[k], stride[k], mfp=mfp))
    return fragmented_shape(out, pool_shape) if mfp else out


class Conv(NeuralLayer):
    """Convolution over the spatial axes (1-, 2- or 3-D), optionally followed by pooling.

    Args:
        parent: node with tags 'b,f' + spatial axes.
        n_f: number of filters.
        filter_shape: per spatial axis (an int applies to all).
        pool_shape: max pooling after the convolution (default no pooling).
        conv_mode: 'valid' (no padding), 'same' (output size = input size) or 'full'.
        activation_func: see :mod:`.activations`.
        mfp: max-fragment pooling: all pooling offsets, as fragments on the batch axis.
        batch_normalisation: False, 'train' (batch statistics while training,
            accumulated statistics for prediction) or 'predict' (fixed statistics).
        dropout_rate: fraction of outputs dropped while training.
        w, b: initial filters (n_f, n_in, *filter_shape) and biases (n_f,), or
            ``[value, 'const']`` for constants, or another layer (or its ``.w``/``.b``)
            whose parameter this layer shares.
        gamma, mean, std: initial batch-normalisation scale and statistics.
        gradnet_mode: accepted for ELEKTRONN2 scripts (it had no effect there).
        invalidate_fov: mark the output's field of view as unknown (-1), e.g. where
            later layers make it meaningless.
        w_init: initialisation of w when not given (see :mod:`.init`; 'gabor' suits
            first layers).
    """

    def __init__(self, parent: Node, n_f: int, filter_shape: int | Sequence[int],
                 pool_shape: int | Sequence[int] | None = None, conv_mode: str = 'valid',
                 activation_func: str = 'relu', mfp: bool = False, batch_normalisation=False,
                 dropout_rate: float = 0, name: str = 'conv', print_repr: bool = True,
                 w=None, b=None, gamma=None, mean=None, std=None, gradnet_mode=None,
                 invalidate_fov: bool = False, w_init: str | float = 'auto'):
        self._store_neural_options(n_f, activation_func, batch_normalisation, dropout_rate,
                                   w, b, name, w_init, None, gamma, mean, std, gradnet_mode)
        self.invalidate_fov = bool(invalidate_fov)
        n_sp = len(parent.shape.spatial_axes)
        self.filter_shape = as_tuple(filter_shape, n_sp, 'filter_shape')
        self.pool_shape = as_tuple(pool_shape, n_sp, 'pool_shape')
        if conv_mode not in ('valid', 'same', 'full'):
            raise ConfigError(f"Node {name!r}: conv_mode={conv_mode!r}; valid: 'valid', 'same', 'full'")
        self.conv_mode = conv_mode
        self.mfp = bool(mfp)
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        _check_conv_tags(sh)
        conv = sh.map_spatial(lambda k, g: g.conv(self.filter_shape[k], self.conv_mode))
        out = _pooled(conv, self.pool_shape, self.pool_shape, self.mfp)
        if self.invalidate_fov:
            out = replace(out, fov=(-1,) * len(out.fov))
        return out.updateshape('f', self.activation.n_out(self.n_f, self.name))

    def _make_params(self):
        n_in = self.parent.shape['f']
        taps = math.prod(self.filter_shape)
        return self._layer_params((self.n_f, n_in) + self.filter_shape, n_in * taps,
                                  self.n_f * taps)

    @property
    def macs_per_input_position(self) -> int:
        return self.n_f * self.parent.shape['f'] * math.prod(self.filter_shape)

    def _compute_cost(self) -> int:
        sh = self.parent.shape
        conv_out = math.prod(sh.geometry(i).conv(k, self.conv_mode).size or 1  # unknown: 1
                             for i, k in zip(sh.spatial_axes, self.filter_shape))
        return self.n_f * sh['f'] * math.prod(self.filter_shape) * conv_out * sh.n_fragments

    @property
    def sees_padding(self) -> bool:
        """'same' and 'full' convolutions see the zeros around the input."""
        return self.conv_mode != 'valid'

    def _padding(self):
        if self.conv_mode == 'valid':
            return 0
        if self.conv_mode == 'same':
            return 'same'
        return tuple(k - 1 for k in self.filter_shape)

    def _pool(self, y: torch.Tensor) -> torch.Tensor:
        return fragment_pool(y, self.pool_shape) if self.mfp else pool(y, self.pool_shape)

    def forward(self, x, training=False, padding=None):
        """``padding`` (per spatial axis, or 0) replaces the conv_mode's, e.g. 0 for an input
        the caller has padded itself."""
        y = convolve(x, self.params['w'], self.params.get('b'),
                     padding=self._padding() if padding is None else padding)
        y = self._normalise(y, 1, training)
        if self.activation.name == 'relu' and not torch.is_grad_enabled():
            y = torch.relu_(self._pool(y))  # a new tensor of this node: no new allocation
        elif self.activation.is_monotone and self.activation.name != 'maxout':
            y = self._activate(self._pool(y), 1)
        else:
            y = self._pool(self._activate(y, 1))
        return self._dropout(y, training)

    def make_dual(self, parent: Node, activation_func: str = 'lin', name: str = 'dual',
                  **kwargs) -> UpConv:
        """The transposed convolution with this layer's (tied) filters, from its outputs back
        to its inputs' features; up-samples by this layer's pool_shape."""
        return UpConv(parent, self.parent.shape['f'], self.pool_shape,
                      filter_shape=self.filter_shape, activation_func=activation_func,
                      identity_init=False, name=name, dual_of=self, **kwargs)

    def _repr_details(self) -> str:
        pool_text = f", pool {self.pool_shape}" if any(p > 1 for p in self.pool_shape) else ''
        mfp = ' (mfp)' if self.mfp else ''
        return (f"filter {self.filter_shape}{pool_text}{mfp}, {self.conv_mode}, "
                + super()._repr_details())


class Pool(Node):
    """Max or average pooling over the spatial axes.

    Args:
        pool_shape: window per spatial axis (an int applies to all).
        stride: step per spatial axis (default: the window, i.e. non-overlapping).
        mfp: max-fragment pooling (all window offsets as batch fragments).
        mode: 'max' or 'average'.
    """

    def __init__(self, parent: Node, pool_shape: int | Sequence[int], stride=None,
                 mfp: bool = False, mode: str = 'max', name: str = 'pool', print_repr: bool = True):
        n_sp = len(parent.shape.spatial_axes)
        self.pool_shape = as_tuple(pool_shape, n_sp, 'pool_shape')
        self.stride = as_tuple(stride, n_sp, 'stride') if stride is not None else self.pool_shape
        if mode not in ('max', 'average'):
            raise ConfigError(f"Node {name!r}: pooling mode={mode!r}; valid: 'max', 'average'")
        self.mode = mode
        self.mfp = bool(mfp)
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        _check_conv_tags(sh)
        return _pooled(sh, self.pool_shape, self.stride, self.mfp)

    def forward(self, x, training=False):
        if self.mfp:
            return fragment_pool(x, self.pool_shape, self.mode)
        return pool(x, self.pool_shape, self.stride, self.mode)

    def _repr_details(self) -> str:
        return f"{self.mode} {self.pool_shape}, stride {self.stride}" + (' (mfp)' if self.mfp else '')


class UpConv(NeuralLayer):
    """Transposed convolution: up-samples by ``pool_shape`` (stride) with ``filter_shape`` taps.

    The default filter equals the pool shape (non-overlapping, the inverse of pooling);
    then ``size -> size * pool``. With ``identity_init`` the initial weights make it
    nearest-neighbour up-sampling of the first min(n_in, n_f) features. Weights
    have shape (n_in, n_f, *filter_shape). ``dual_of``: a Conv whose filters this
    layer shares (see :meth:`Conv.make_dual`).
    """

    def __init__(self, parent: Node, n_f: int, pool_shape: int | Sequence[int],
                 activation_func: str = 'relu', identity_init: bool = True,
                 batch_normalisation=False, dropout_rate: float = 0, name: str = 'upconv',
                 print_repr: bool = True, w=None, b=None, gamma=None, mean=None, std=None,
                 gradnet_mode=None, filter_shape: int | Sequence[int] | None = None,
                 w_init: str | float = 'auto', dual_of: Conv | None = None):
        n_sp = len(parent.shape.spatial_axes)
        self.pool_shape = as_tuple(pool_shape, n_sp, 'pool_shape')
        self.filter_shape = (self.pool_shape if filter_shape is None
                             else as_tuple(filter_shape, n_sp, 'filter_shape'))
        if identity_init and w_init == 'auto':
            w_init = 'identity'
        self.identity_init = identity_init
        self._store_neural_options(n_f, activation_func, batch_normalisation, dropout_rate,
                                   w, b, name, w_init, dual_of, gamma, mean, std, gradnet_mode)
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        _check_conv_tags(sh)
        out = sh.map_spatial(lambda k, g: g.upconv(self.filter_shape[k], self.pool_shape[k]))
        return out.updateshape('f', self.activation.n_out(self.n_f, self.name))

    def _make_params(self):
        n_in = self.parent.shape['f']
        taps = math.prod(self.filter_shape)
        return self._layer_params((n_in, self.n_f) + self.filter_shape, n_in * taps,
                                  self.n_f * taps)

    @property
    def macs_per_input_position(self) -> int:
        return self.n_f * self.parent.shape['f'] * math.prod(self.filter_shape)

    def _compute_cost(self) -> int:
        return self.macs_per_input_position * (self.parent.shape.spatial_size or 1)

    def forward(self, x, training=False):
        y = _CONV_T[x.ndim - 2](x, self.params['w'], self.params.get('b'), stride=self.pool_shape)
        y = self._normalise(y, 1, training)
        return self._dropout(self._activate(y, 1), training)

    @property
    def sees_padding(self) -> bool:
        """Overlapping filters see the zeros around the input."""
        return self.filter_shape != self.pool_shape

    def _repr_details(self) -> str:
        return f"up {self.pool_shape}, filter {self.filter_shape}, " + super()._repr_details()


class LRN(Node):
    """Local response normalisation.

    ``mode='channel'``: across ``filter_shape`` (an int) neighbouring features,
    ``x / (k + alpha / n * sum x**2) ** beta``; ``mode='spatial'``: over a spatial
    window ``filter_shape`` of each feature map, ``x / (k + alpha * mean x**2) ** beta``.
    """

    def __init__(self, parent: Node, filter_shape: int | Sequence[int] = 5,
                 mode: str = 'spatial', alpha: float = 1e-4, k: float = 1.0, beta: float = 0.75,
                 name: str = 'LRN', print_repr: bool = True):
        if mode not in ('spatial', 'channel'):
            raise ConfigError(f"Node {name!r}: LRN mode={mode!r}; valid: 'spatial', 'channel'")
        n_sp = len(parent.shape.spatial_axes)
        self.filter_shape: int | tuple[int, ...]
        if mode == 'channel':
            if not isinstance(filter_shape, (int, np.integer)):
                raise ConfigError(f"Node {name!r}: channel LRN needs an int filter_shape (the "
                                  f"number of features), got {filter_shape!r}")
            self.filter_shape = int(filter_shape)
        else:
            window = as_tuple(filter_shape, n_sp, 'filter_shape')
            if any(f % 2 == 0 for f in window):
                raise ConfigError(f"Node {name!r}: spatial LRN needs odd filter sizes, got "
                                  f"{window}")
            self.filter_shape = window
        self.mode, self.alpha, self.k, self.beta = mode, alpha, k, beta
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        _check_conv_tags(sh)
        return sh

    def forward(self, x, training=False):
        if self.mode == 'channel':
            return F.local_response_norm(x, self.filter_shape, self.alpha, self.beta, self.k)
        pad = [f // 2 for f in self.filter_shape]
        avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[x.ndim - 2]
        energy = avg(x * x, self.filter_shape, 1, pad, count_include_pad=False)
        return x / (self.k + self.alpha * energy) ** self.beta


def _alignment_crop(node: TaggedShape, other: TaggedShape, node_name: str,
                    other_name: str) -> list[tuple[int, int]] | None:
    """(left, right) crop per spatial axis that makes ``node`` cover exactly what ``other``
    covers, on the axes where it covers more (equal strides). None if there is nothing to crop."""
    crop = []
    for k, tag in enumerate(node.spatial_tags):
        left = (other.offsets[k] - node.offsets[k]) / node.strides[k]
        right = node.spatial_shape[k] - other.spatial_shape[k] - left
        if left <= 0 and right <= 0:  # the other map is the larger one here
            crop.append((0, 0))
        elif left < 0 or right < 0:
            raise ShapeError(f"cannot align {node_name!r} {node} with {other_name!r} {other} on "
                             f"axis {tag!r}: neither map covers the other", axis=tag)
        elif not (float(left).is_integer() and float(right).is_integer()):
            raise ShapeError(f"cannot align {node_name!r} {node} with {other_name!r} {other} on "
                             f"axis {tag!r}: the crop would be {left} on the left and {right} on "
                             f"the right (an odd size difference); change the input size", axis=tag)
        else:
            crop.append((int(left), int(right)))
    return None if all(c == (0, 0) for c in crop) else crop


def UpConvMerge(parent1: Node, parent2: Node, upconv_n_f: int | None = None,  # noqa: N802
                merge_mode: str = 'concat', disable_upconv: bool = False,
                upconv_kwargs: dict | None = None, name: str = 'merge',
                print_repr: bool = True) -> Node:
    """Up-convolve ``parent2`` (the coarser map) to the stride of ``parent1``, then merge them
    with :func:`AutoMerge` (``parent1`` is cropped to fit)."""
    up = parent2
    if not disable_upconv:
        ratio = []
        for s1, s2, tag in zip(parent1.shape.strides, parent2.shape.strides,
                               parent1.shape.spatial_tags):
            if s2 % s1:
                raise ShapeError(f"{name!r}: stride {s2} of {parent2.name!r} on axis {tag!r} is "
                                 f"not a multiple of the stride {s1} of {parent1.name!r}", axis=tag)
            ratio.append(s2 // s1)
        up = UpConv(parent2, upconv_n_f or parent2.shape['f'], tuple(ratio),
                    name=f"{name}_upconv", print_repr=print_repr, **(upconv_kwargs or {}))
    return AutoMerge(parent1, up, merge_mode=merge_mode, disable_upconv=True, name=name,
                     print_repr=print_repr)


def AutoMerge(parent1: Node, parent2: Node, upconv_n_f: int | None = None,  # noqa: N802
              merge_mode: str = 'concat', disable_upconv: bool = False,
              upconv_kwargs: dict | None = None, name: str = 'merge',
              print_repr: bool = True) -> Node:
    """Merge two maps ('concat' along 'f', parent1 first, or 'add').

    If their strides differ, the coarser is up-convolved (unless ``disable_upconv``);
    then the larger map is cropped so both cover the same input region (a clear
    error when that needs a fractional or negative crop, e.g. odd size differences).
    """
    if merge_mode not in ('concat', 'add'):
        raise ConfigError(f"{name!r}: merge_mode={merge_mode!r}; valid: 'concat', 'add'")
    if parent1.shape.strides != parent2.shape.strides:
        if disable_upconv:
            raise ShapeError(f"{name!r}: {parent1.name!r} has strides {parent1.shape.strides}, "
                             f"{parent2.name!r} {parent2.shape.strides}; they must match")
        fine, coarse = ((parent1, parent2) if parent1.shape.strides <= parent2.shape.strides
                        else (parent2, parent1))
        return UpConvMerge(fine, coarse, upconv_n_f, merge_mode, False, upconv_kwargs, name,
                           print_repr)
    merged = []
    for node, other in ((parent1, parent2), (parent2, parent1)):
        crop = _alignment_crop(node.shape, other.shape, node.name, other.name)
        merged.append(node if crop is None else
                      Crop(node, crop, name=f"{name}_crop", print_repr=print_repr))
    if merge_mode == 'add':
        return Add(merged[0], merged[1], name=name, print_repr=print_repr)
    return Concat(merged, name=name, print_repr=print_repr)


class FaithlessMerge(Node):
    """Concatenate ``hard_features`` and ``easy_features`` along ``axis``, one of them
    failing (all zero) now and then while training, so that the next layers cannot
    rely on either alone.

    In each training step, with probability ``failing_prob`` one part fails: the hard
    features with probability ``1 - hardeasy_ratio``, else the easy ones (as ELEKTRONN2
    drew them: one draw for the whole batch). In inference nothing fails. Both
    probabilities are constant parameters (``node.params``), changeable while training.
    """

    def __init__(self, hard_features: Node, easy_features: Node, axis: str | int = 'f',
                 failing_prob: float = 0.5, hardeasy_ratio: float = 0.8,
                 name: str = 'faithless_merge', print_repr: bool = True):
        for what, p in (('failing_prob', failing_prob), ('hardeasy_ratio', hardeasy_ratio)):
            if not 0 <= p <= 1:
                raise ConfigError(f"FaithlessMerge {name!r}: {what}={p} must be in [0, 1]")
        self.axis = axis
        self._probs = (float(failing_prob), float(hardeasy_ratio))
        super().__init__([hard_features, easy_features], name, print_repr)

    def _infer_shape(self, hard: TaggedShape, easy: TaggedShape) -> TaggedShape:
        axis = hard.index(self.axis)
        merged = merged_geometry((hard, easy), [p.name for p in self.parents],
                                 f"FaithlessMerge {self.name!r}", axis)
        sizes = [hard.shape[axis], easy.shape[axis]]
        known = [s for s in sizes if s is not None]
        return merged.updateshape(axis, None if len(known) < len(sizes) else sum(known))

    def _make_params(self):
        return {'failing_prob': self._new_param([self._probs[0]], trainable=False),
                'hardeasy_ratio': self._new_param([self._probs[1]], trainable=False)}

    def forward(self, hard, easy, training=False):
        if training:
            fails = torch.bernoulli(self.params['failing_prob'])
            hard_fails = torch.bernoulli(1 - self.params['hardeasy_ratio'])
            hard = hard * (1 - hard_fails * fails)
            easy = easy * (1 - (1 - hard_fails) * fails)
        return torch.cat([hard, easy], dim=self.shape.index(self.axis))

    def _compute_cost(self) -> int:
        return 0
