"""Max-fragment pooling (MFP): dense outputs from strided networks in one pass.

A pooling layer with ``mfp=True`` computes the pooled map for every window
offset (a *fragment*) and stacks the fragments on the batch axis, offsets
outermost: after layers with pools P1, P2, ... the batch index is
``(o_L, ..., o_1, b)`` in C order, each ``o_l`` running over the offsets of
layer l (themselves C-ordered over the spatial axes). :class:`FragmentsToDense`
interleaves them back: along each axis the dense index is
``j * (p_L ... p_1) + o_L * (p_{L-1} ... p_1) + ... + o_1``.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from ..errors import ShapeError
from .execution import memory_format_of
from .node import Node
from .shape import TaggedShape

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def pool(x: torch.Tensor, pool_shape: tuple, stride: tuple | None = None,
         mode: str = 'max') -> torch.Tensor:
    """Max or average pooling of (b, f, *spatial) ``x``; no-op for all-ones windows."""
    if all(p == 1 for p in pool_shape) and (stride is None or all(s == 1 for s in stride)):
        return x
    stride = tuple(stride or pool_shape)
    if mode != 'max':
        return _AVG_POOL[x.ndim - 2](x, pool_shape, stride)
    if tuple(pool_shape) == stride and torch.is_autocast_enabled(x.device.type):
        # Autocast runs max pooling in float32 (on CPU): a cast of the reduced-precision
        # input there and one of the gradient back. A maximum of bf16/fp16 values is
        # exact in their own dtype and, without overlapping windows, so is routing the
        # gradient back: the same values at half the cost (benchmarks/RESULTS.md).
        with torch.autocast(x.device.type, enabled=False):
            return _MAX_POOL[x.ndim - 2](x, pool_shape, stride)
    return _MAX_POOL[x.ndim - 2](x, pool_shape, stride)


def fragment_pool(x: torch.Tensor, pool_shape: tuple, mode: str = 'max') -> torch.Tensor:
    """Pool (b, f, *spatial) at every window offset; fragments stacked on the batch axis.

    Each spatial size n must satisfy (n + 1) % p == 0; every fragment then has
    (n + 1) // p - 1 outputs along that axis.
    """
    if all(p == 1 for p in pool_shape):
        return x
    sizes = x.shape[2:]
    counts = [(n + 1) // p - 1 for n, p in zip(sizes, pool_shape)]
    if mode == 'max' and not (x.requires_grad and torch.is_grad_enabled()):
        return _max_fragments(x, pool_shape, counts)
    fragments = []
    for offsets in itertools.product(*(range(p) for p in pool_shape)):
        window = tuple(slice(o, o + m * p) for o, m, p in zip(offsets, counts, pool_shape))
        fragments.append(pool(x[(Ellipsis,) + window], pool_shape, None, mode))
    return torch.cat(fragments, dim=0)


def _max_fragments(x: torch.Tensor, pool_shape: tuple, counts: list[int]) -> torch.Tensor:
    """:func:`fragment_pool` (max) without gradients: each fragment is the elementwise
    ``torch.maximum`` of the strided views of its window positions, written straight
    into its part of one output (in ``x``'s layout, channels-last kept). Equal values to
    pooling each fragment's window, without intermediate maps or a concatenation: on a
    fresh process's large blocks 0.4x the time of a running maximum plus ``torch.cat``
    (page faults of the intermediates dominate there; benchmarks/RESULTS.md), and the
    peak memory of input and output only. Not used where gradients flow:
    ``torch.maximum`` splits the gradient between ties, max pooling gives it to one
    element."""
    windows = list(itertools.product(*(range(p) for p in pool_shape)))
    batch = x.shape[0]
    out = torch.empty((len(windows) * batch, x.shape[1]) + tuple(counts), dtype=x.dtype,
                      device=x.device, memory_format=memory_format_of(x))
    for index, offsets in enumerate(windows):
        target = out.narrow(0, index * batch, batch)
        views = [x[(Ellipsis,) + tuple(slice(o + s, o + s + m * p, p) for o, s, m, p
                                       in zip(offsets, shift, counts, pool_shape))]
                 for shift in windows]
        torch.maximum(views[0], views[1], out=target)
        for view in views[2:]:
            torch.maximum(target, view, out=target)
    return out


def fragmented_shape(sh: TaggedShape, pool_shape: tuple) -> TaggedShape:
    """The shape after an MFP layer has applied its pooling geometry: more batch fragments."""
    if all(p == 1 for p in pool_shape):
        return sh
    b = sh.batch_size
    out = sh.updateshape('b', None if b is None else b * math.prod(pool_shape))
    return TaggedShape(out.shape, out.tags, out.strides, fov=out.fov, offsets=out.offsets,
                       mfp_pools=out.mfp_pools + (tuple(pool_shape),))


class FragmentsToDense(Node):
    """Reassemble the fragments of max-fragment pooling into a dense output.

    The output stride along each axis is the input stride divided by the product
    of that axis's MFP pools; the batch shrinks by the number of fragments.
    """

    def __init__(self, parent: Node, name: str = 'to_dense', print_repr: bool = True):
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        if not sh.mfp_pools:
            raise ShapeError("the input has no max-fragment-pooling fragments (no mfp=True layer)")
        if sh.tags[0] != 'b' or any(t not in ('z', 'x', 'y') for t in sh.tags[2:]):
            raise ShapeError(f"tags {','.join(sh.tags)}: FragmentsToDense needs 'b,f' + spatial axes")
        factors = [math.prod(pool[k] for pool in sh.mfp_pools) for k in range(len(sh.spatial_axes))]
        b = sh.batch_size
        out = sh.updateshape('b', None if b is None else b // sh.n_fragments)
        for k, i in enumerate(sh.spatial_axes):
            size = sh.shape[i]
            out = out.updateshape(i, None if size is None else size * factors[k])
        strides = tuple(s // f for s, f in zip(sh.strides, factors))
        return TaggedShape(out.shape, out.tags, strides, fov=sh.fov, offsets=sh.offsets)

    def forward(self, x, training=False):
        pools = self.parent.shape.mfp_pools
        n_sp = x.ndim - 2
        batch = x.shape[0] // self.parent.shape.n_fragments
        # (p_L,axes..., ..., p_1,axes..., b, f, m_axes...)
        digits = [p for pool in reversed(pools) for p in pool]
        y = x.reshape(digits + [batch, x.shape[1]] + list(x.shape[2:]))
        n_digits = len(digits)
        order = [n_digits, n_digits + 1]
        for k in range(n_sp):  # per axis: j, then o_L ... o_1
            order.append(n_digits + 2 + k)
            order.extend(layer * n_sp + k for layer in range(len(pools)))
        y = y.permute(order)
        dense = [x.shape[2 + k] * math.prod(pool[k] for pool in pools) for k in range(n_sp)]
        return y.reshape([batch, x.shape[1]] + dense)

    def _compute_cost(self) -> int:
        return 0
