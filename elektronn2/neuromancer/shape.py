"""Tagged shapes and the geometry rules of convolutional networks.

A :class:`TaggedShape` is an immutable value: sizes, one axis tag per size, and
for every spatial axis the stride (output spacing in input voxels), the field of
view (fov, -1 when unknown) and the offset (input coordinate of the centre of the
first output, from the start of the input patch; x.5 for even fields of view).
It also records the pool shapes of the max-fragment-pooling layers passed so far,
whose fragments ride on the batch axis. Operations return new values.

The per-axis rules (:class:`AxisGeometry`) are the single implementation used
by the Conv and Pool nodes and by :func:`elektronn2.utils.cnncalculator`.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from ..errors import ShapeError

#: Meaning of the axis tags.
TAG_MEANINGS = {'b': 'batch', 'f': 'features/channels/classes', 'z': 'spatial',
                'x': 'spatial', 'y': 'spatial', 'r': 'recurrence/time', 's': 'samples'}
SPATIAL_TAGS = ('z', 'x', 'y')


def parse_tags(tags: str | Sequence[str]) -> tuple[str, ...]:
    """``'b,f,z,x,y'`` or ``['b', 'f', ...]`` -> tuple of validated tags."""
    if isinstance(tags, str):
        parsed = tuple(t.strip() for t in tags.split(',')) if tags.strip() else ()
    else:
        parsed = tuple(tags)
    for tag in parsed:
        if tag not in TAG_MEANINGS:
            raise ShapeError(f"Unknown axis tag {tag!r} in {tags!r}; valid tags are "
                             + ', '.join(f"{t!r} ({m})" for t, m in TAG_MEANINGS.items()))
    duplicates = sorted({t for t in parsed if parsed.count(t) > 1})
    if duplicates:
        raise ShapeError(f"Axis tags {tags!r} repeat {duplicates}; each tag may occur once")
    return parsed


#: A per-spatial-axis value as the constructors accept it: one number for every
#: axis, one per axis, or None for the default.
PerAxis = float | Sequence[float] | np.ndarray | None


def _per_spatial(name: str, values: PerAxis, n_spatial: int, default: float) -> tuple:
    if values is None:
        return (default,) * n_spatial
    if np.ndim(values) == 0:
        return (values,) * n_spatial
    values = tuple(np.asarray(values).tolist())
    if len(values) != n_spatial:
        raise ShapeError(f"{name}={values} must have one entry per spatial axis "
                         f"({n_spatial})")
    return values


@dataclass(frozen=True, init=False)
class TaggedShape:
    """Sizes with axis tags and spatial geometry.

    Args:
        shape: sizes; ``None`` for an unknown size (usually the batch axis).
        tags: one tag per axis, e.g. ``'b,f,z,x,y'``.
        strides: per spatial axis (in tag order), output spacing in input voxels.
        fov: per spatial axis, field of view in input voxels (-1: unknown).
        offsets: per spatial axis, input coordinate of the first output's centre
            (default ``(fov - 1) / 2``, i.e. a valid-convolution net).
        mfp_pools: pool shapes (one tuple per layer, per spatial axis) of the
            max-fragment-pooling layers whose fragments are on the batch axis.
        mfp_offsets: ELEKTRONN2's argument, derived from ``mfp_pools`` here (must be None).

    The positional order is ELEKTRONN2's ``(shape, tags, strides, mfp_offsets, fov)``.
    """
    shape: tuple[int | None, ...]
    tags: tuple[str, ...]
    strides: tuple[int, ...]
    fov: tuple[int, ...]
    offsets: tuple[float, ...]
    mfp_pools: tuple[tuple[int, ...], ...]

    def __init__(self, shape: Iterable[int | None], tags: str | Sequence[str],
                 strides: PerAxis = None, mfp_offsets: None = None, fov: PerAxis = None,
                 offsets: PerAxis = None, mfp_pools: Iterable[PerAxis] = ()) -> None:
        if mfp_offsets is not None:
            raise ShapeError("TaggedShape(mfp_offsets=...) is derived here: give mfp_pools (the "
                             "pool shapes of the max-fragment-pooling layers) and read "
                             "TaggedShape.mfp_offsets")
        tags = parse_tags(tags)
        shape = tuple(None if s is None else int(s) for s in shape)
        if len(shape) != len(tags):
            raise ShapeError(f"Shape {shape} has {len(shape)} axes but tags {tags} "
                             f"name {len(tags)}")
        for size, tag in zip(shape, tags):
            if size is not None and size < 1:
                raise ShapeError(f"Axis {tag!r} of shape {shape} has size {size}; "
                                 f"sizes must be positive or None")
        n_sp = sum(t in SPATIAL_TAGS for t in tags)
        object.__setattr__(self, 'shape', shape)
        object.__setattr__(self, 'tags', tags)
        object.__setattr__(self, 'strides',
                           tuple(int(s) for s in _per_spatial('strides', strides, n_sp, 1)))
        fov_ = tuple(int(f) for f in _per_spatial('fov', fov, n_sp, 1))
        object.__setattr__(self, 'fov', fov_)
        offsets_ = (tuple((f - 1) / 2 if f > 0 else 0.0 for f in fov_) if offsets is None
                    else _per_spatial('offsets', offsets, n_sp, 0.0))
        object.__setattr__(self, 'offsets', tuple(_half_steps(o) for o in offsets_))
        pools = tuple(tuple(int(p) for p in _per_spatial('mfp_pools', pool, n_sp, 1))
                      for pool in mfp_pools)
        object.__setattr__(self, 'mfp_pools', pools)

    # --- sizes and tags -------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial axes (ELEKTRONN2's meaning; ``len(shape)`` counts all)."""
        return len(self.spatial_axes)

    def hastag(self, tag: str) -> bool:
        return tag in self.tags

    def copy(self) -> TaggedShape:
        """The same shape (shapes are immutable; kept for ELEKTRONN2 scripts)."""
        return replace(self)

    def __len__(self) -> int:
        return len(self.shape)

    def __iter__(self):
        return iter(self.shape)

    def __getitem__(self, key: int | str):
        """Size by axis index or by tag (``shape['f']``)."""
        if isinstance(key, str):
            return self.shape[self.tag2index(key)]
        return self.shape[key]

    def tag2index(self, tag: str) -> int:
        if tag not in self.tags:
            raise ShapeError(f"Shape {self} has no axis {tag!r}; its axes are {self.tags}",
                             axis=tag)
        return self.tags.index(tag)

    def index(self, axis: int | str) -> int:
        """Axis index of a tag or (possibly negative) index."""
        if isinstance(axis, str):
            return self.tag2index(axis)
        if not -len(self.shape) <= axis < len(self.shape):
            raise ShapeError(f"Axis index {axis} out of range for {self}")
        return axis % len(self.shape)

    @property
    def hasbatch(self) -> bool:
        return 'b' in self.tags

    @property
    def batch_size(self) -> int | None:
        return self['b'] if self.hasbatch else None

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.tags) if t in SPATIAL_TAGS)

    @property
    def spatial_tags(self) -> tuple[str, ...]:
        return tuple(t for t in self.tags if t in SPATIAL_TAGS)

    @property
    def spatial_shape(self) -> tuple:
        return tuple(self.shape[i] for i in self.spatial_axes)

    @property
    def spatial_size(self) -> int | None:
        """Number of spatial positions (1 when there are no spatial axes)."""
        sizes = self.spatial_shape
        return None if None in sizes else math.prod(sizes)

    @property
    def stripnone(self) -> tuple[int, ...]:
        return tuple(s for s in self.shape if s is not None)

    @property
    def stripnone_prod(self) -> int:
        return math.prod(self.stripnone)

    @property
    def stripbatch_prod(self) -> int:
        """Product of all sizes except the batch axis (unknown sizes count as 1)."""
        return math.prod(s for s, t in zip(self.shape, self.tags) if t != 'b' and s is not None)

    # --- geometry --------------------------------------------------------------------
    @property
    def fov_all_centered(self) -> bool:
        """Whether every output centre falls on an input voxel (integer offsets)."""
        return all(float(o).is_integer() for o in self.offsets)

    @property
    def mfp_offsets(self) -> list[tuple[int, ...]]:
        """Per fragment on the batch axis (in batch order), its offset along each spatial
        axis in the dense output (:mod:`.mfp`: ``o_L (p_{L-1}...p_1) + ... + o_1``)."""
        per_layer = [list(itertools.product(*(range(p) for p in pool)))
                     for pool in self.mfp_pools]
        result = []
        for outer_first in itertools.product(*reversed(per_layer)):
            offsets, scale = [0] * len(self.spatial_axes), [1] * len(self.spatial_axes)
            for layer_offsets, pool in zip(reversed(outer_first), self.mfp_pools):
                offsets = [o + lo * s for o, lo, s in zip(offsets, layer_offsets, scale)]
                scale = [s * p for s, p in zip(scale, pool)]
            result.append(tuple(offsets))
        return result

    def updatefov(self, axis: int | str, fov: int) -> TaggedShape:
        """New shape with the field of view of spatial ``axis`` changed (offset recentred)."""
        geom = self.geometry(axis)
        return self.with_geometry(axis, replace(geom, fov=int(fov), offset=(int(fov) - 1) / 2))

    @property
    def n_fragments(self) -> int:
        """Number of max-fragment-pooling fragments stacked on the batch axis."""
        return math.prod(math.prod(pool) for pool in self.mfp_pools)

    def geometry(self, axis: int | str) -> AxisGeometry:
        """The :class:`AxisGeometry` of one spatial axis (by tag or index)."""
        i = self.index(axis)
        if self.tags[i] not in SPATIAL_TAGS:
            raise ShapeError(f"Axis {self.tags[i]!r} of {self} is not spatial")
        k = self.spatial_axes.index(i)
        return AxisGeometry(self.shape[i], self.strides[k], self.fov[k], self.offsets[k],
                            self.tags[i])

    def with_geometry(self, axis: int | str, geom: AxisGeometry) -> TaggedShape:
        """New shape with one spatial axis replaced by ``geom``."""
        i = self.index(axis)
        k = self.spatial_axes.index(i)

        def put(values, value):
            return values[:k] + (value,) + values[k + 1:]
        return replace(self, shape=self.shape[:i] + (geom.size,) + self.shape[i + 1:],
                       strides=put(self.strides, geom.stride), fov=put(self.fov, geom.fov),
                       offsets=put(self.offsets, geom.offset))

    def map_spatial(self, fn) -> TaggedShape:
        """Apply ``fn(k, AxisGeometry) -> AxisGeometry`` to every spatial axis k."""
        out = self
        for k, i in enumerate(self.spatial_axes):
            out = out.with_geometry(i, fn(k, self.geometry(i)))
        return out

    # --- derived shapes -----------------------------------------------------------------
    def updateshape(self, axis: int | str, size: int | None) -> TaggedShape:
        """New shape with the size of ``axis`` (index or tag) changed."""
        i = self.index(axis)
        return replace(self, shape=self.shape[:i] + (size,) + self.shape[i + 1:])

    def addaxis(self, index: int, size: int | None, tag: str) -> TaggedShape:
        """New shape with an axis inserted before ``index``."""
        tags = list(self.tags)
        tags.insert(index, tag)
        shape = list(self.shape)
        shape.insert(index, size)
        strides, fov, offsets = list(self.strides), list(self.fov), list(self.offsets)
        pools = [list(pool) for pool in self.mfp_pools]
        if tag in SPATIAL_TAGS:
            k = sum(t in SPATIAL_TAGS for t in self.tags[:index])
            strides.insert(k, 1)
            fov.insert(k, 1)
            offsets.insert(k, 0.0)
            for pool in pools:
                pool.insert(k, 1)
        return TaggedShape(shape, tags, strides, fov=fov, offsets=offsets,
                           mfp_pools=tuple(map(tuple, pools)))

    def delaxis(self, axis: int | str) -> TaggedShape:
        """New shape without ``axis``."""
        i = self.index(axis)
        strides, fov, offsets = list(self.strides), list(self.fov), list(self.offsets)
        pools = [list(pool) for pool in self.mfp_pools]
        if self.tags[i] in SPATIAL_TAGS:
            k = self.spatial_axes.index(i)
            del strides[k], fov[k], offsets[k]
            for pool in pools:
                del pool[k]
        return TaggedShape(self.shape[:i] + self.shape[i + 1:], self.tags[:i] + self.tags[i + 1:],
                           strides, fov=fov, offsets=offsets, mfp_pools=tuple(map(tuple, pools)))

    # --- text ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        sizes = ', '.join(f"{s}({t})" for s, t in zip(self.shape, self.tags))
        if not self.spatial_axes:
            return f"[{sizes}]"
        return f"[{sizes}] strides={self.strides} fov={self.fov}"

    @property
    def ext_repr(self) -> str:
        """Multi-line description with offsets."""
        mfp = f", mfp pools {list(self.mfp_pools)}" if self.mfp_pools else ''
        return (f"shape {list(self.shape)}, tags {','.join(self.tags)}\n"
                f"strides {list(self.strides)}, fov {list(self.fov)}, "
                f"offsets {[_pretty(o) for o in self.offsets]}{mfp}")


@dataclass(frozen=True)
class AxisGeometry:
    """Size, stride, field of view and offset of one spatial axis, and how layers change them.

    All lengths are in input voxels. Valid convolution with k taps:
    ``size -> size - k + 1``, ``fov += (k - 1) * stride``, ``offset += (k - 1) / 2 * stride``;
    'same' and 'full' pad by (k - 1) // 2 resp. k - 1 on the left. Pooling by p:
    the size must divide exactly, ``fov += (p - 1) * stride``, ``offset += (p - 1) / 2 * stride``,
    ``stride *= p``; so a Conv with pool_shape adds ``(k + p - 2) * stride`` to the fov.
    Max-fragment pooling keeps all p window offsets as fragments: per fragment
    ``size -> (size + 1) / p - 1`` (size + 1 must be divisible by p).
    An unknown fov (-1) stays unknown; unknown sizes stay None.
    """
    size: int | None
    stride: int = 1
    fov: int = 1
    offset: float = 0.0
    tag: str = '?'

    def _grow(self, extent: int, shift: float) -> dict:
        return {'fov': -1 if self.fov < 0 else self.fov + extent * self.stride,
                'offset': _half_steps(self.offset + shift * self.stride)}

    def conv(self, kernel: int, mode: str = 'valid') -> AxisGeometry:
        """Geometry after a stride-1 convolution with ``kernel`` taps."""
        if kernel < 1:
            raise ShapeError(f"Filter size {kernel} on axis {self.tag!r} must be >= 1", axis=self.tag)
        pad_left = {'valid': 0, 'same': (kernel - 1) // 2, 'full': kernel - 1}.get(mode)
        if pad_left is None:
            raise ShapeError(f"conv_mode {mode!r} is invalid; use 'valid', 'same' or 'full'")
        size = self.size
        if size is not None:
            size = {'valid': size - kernel + 1, 'same': size, 'full': size + kernel - 1}[mode]
            if size < 1:
                raise ShapeError(f"Axis {self.tag!r}: size {self.size} is smaller than the "
                                 f"filter size {kernel}", axis=self.tag)
        return replace(self, size=size, **self._grow(kernel - 1, (kernel - 1) / 2 - pad_left))

    def pool(self, pool: int, stride: int | None = None, mfp: bool = False) -> AxisGeometry:
        """Geometry after pooling windows of ``pool`` with step ``stride`` (default pool)."""
        stride = pool if stride is None else stride
        if pool < 1 or stride < 1:
            raise ShapeError(f"Pooling {pool} / stride {stride} on axis {self.tag!r} must be >= 1",
                             axis=self.tag)
        if pool == 1 and stride == 1:
            return self
        size = self.size
        if mfp and stride != pool:
            raise ShapeError(f"Max-fragment pooling on axis {self.tag!r} needs stride == "
                             f"pool ({pool}), got stride {stride}", axis=self.tag)
        if size is not None and mfp:
            if (size + 1) % pool or size + 1 < 2 * pool:
                raise ShapeError(f"Axis {self.tag!r}: max-fragment pooling by {pool} needs "
                                 f"size+1 divisible by {pool}, but size is {size}", axis=self.tag)
            size = (size + 1) // pool - 1
        elif size is not None:
            if size < pool or (size - pool) % stride:
                what = (f"pooling by {pool} does not divide size {size}" if stride == pool else
                        f"windows of {pool} with stride {stride} do not tile size {size}")
                raise ShapeError(f"Axis {self.tag!r}: {what}", axis=self.tag)
            size = (size - pool) // stride + 1
        # each MFP fragment is spaced like an ordinary pooling output
        return replace(self, size=size, stride=self.stride * stride, **self._grow(pool - 1, (pool - 1) / 2))

    def conv_pool(self, kernel: int, pool: int = 1, mode: str = 'valid',
                  mfp: bool = False) -> AxisGeometry:
        """Convolution followed by pooling, as in a Conv node with ``pool_shape``."""
        return self.conv(kernel, mode).pool(pool, mfp=mfp)

    def upconv(self, kernel: int, stride: int) -> AxisGeometry:
        """Transposed convolution: ``size -> (size - 1) * stride + kernel``, stride divided.

        The fov grows by ``(kernel - 1)`` output spacings, centred on the outputs.
        """
        if self.stride % stride:
            raise ShapeError(f"Axis {self.tag!r}: up-sampling by {stride} needs the stride "
                             f"({self.stride}) to be divisible by it", axis=self.tag)
        out_stride = self.stride // stride
        size = None if self.size is None else (self.size - 1) * stride + kernel
        fov = -1 if self.fov < 0 else self.fov + (kernel - 1) * out_stride
        return replace(self, size=size, stride=out_stride, fov=fov,
                       offset=_half_steps(self.offset - (kernel - 1) / 2 * out_stride))

    def crop(self, left: int, right: int) -> AxisGeometry:
        """Remove ``left``/``right`` outputs (negative: pad)."""
        size = None if self.size is None else self.size - left - right
        if size is not None and size < 1:
            raise ShapeError(f"Axis {self.tag!r}: cropping {left}+{right} from size {self.size} "
                             f"leaves nothing", axis=self.tag)
        return replace(self, size=size, offset=_half_steps(self.offset + left * self.stride))


def _half_steps(value: float) -> float:
    """Round to the nearest half voxel (offsets are multiples of 0.5)."""
    return round(float(value) * 2) / 2


def _pretty(value: float):
    return int(value) if float(value).is_integer() else value


def nearest_valid_sizes(is_valid, size: int, n_each_side: int = 1,
                        search_range: int = 512) -> list[int]:
    """Up to ``n_each_side`` valid sizes below and above ``size`` (ascending).

    ``is_valid(n) -> bool`` decides validity.
    """
    below = [n for n in range(size - 1, max(size - search_range, 0), -1) if is_valid(n)][:n_each_side]
    above = [n for n in range(size + 1, size + search_range) if is_valid(n)][:n_each_side]
    return sorted(below) + above


def as_tuple(value: int | Iterable[int] | None, n: int, name: str, default: int = 1) -> tuple[int, ...]:
    """Broadcast an int (or None -> default) to ``n`` entries, or check a sequence's length."""
    if value is None:
        return (default,) * n
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ShapeError(f"{name}={value} has {len(value)} entries, but the input has "
                         f"{n} spatial axes")
    return value


#: the shape of a scalar (losses, error rates)
SCALAR = TaggedShape((), ())
