"""Merges and shape operations: Concat, Add, MultMerge, Crop, Pad, split, FromTensor,
Reshape, ApplyFunc; :func:`choose_name` (ELEKTRONN2's naming rule). The nodes that feed
values in (Input, Input_like, GenericInput, ValueNode, InitialState_like) live in
:mod:`.inputs`."""
from __future__ import annotations

import re
from dataclasses import replace
from types import EllipsisType, MappingProxyType
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from .node import Node
from .shape import TaggedShape


def merged_geometry(shapes: Sequence[TaggedShape], names: Sequence[str], node_label: str,
                     skip_axis: int | None) -> TaggedShape:
    """Check shapes have equal tags, sizes (except ``skip_axis``) and strides; merge fov."""
    first = shapes[0]
    for sh, name in zip(shapes[1:], names[1:]):
        if sh.tags != first.tags:
            raise ShapeError(f"{node_label}: parent {name!r} has tags {sh.tags}, "
                             f"{names[0]!r} has {first.tags}")
        for i, (a, b) in enumerate(zip(first.shape, sh.shape)):
            if i != skip_axis and a != b:
                raise ShapeError(f"{node_label}: axis {first.tags[i]!r} of parent {name!r} has "
                                 f"size {b}, of {names[0]!r} {a}; they must be equal "
                                 f"(crop the larger one first)", axis=first.tags[i])
        if sh.strides != first.strides or sh.mfp_pools != first.mfp_pools:
            raise ShapeError(f"{node_label}: parent {name!r} has strides {sh.strides}, "
                             f"{names[0]!r} has {first.strides}; they must be equal")
        if sh.offsets != first.offsets:
            raise ShapeError(f"{node_label}: parent {name!r} is not aligned with {names[0]!r}: "
                             f"their first outputs lie at input offsets {sh.offsets} and "
                             f"{first.offsets}; crop the larger one (AutoMerge does this)")
    fovs = np.array([sh.fov for sh in shapes]).reshape(len(shapes), -1)
    fov = tuple(-1 if (col < 0).any() else int(col.max()) for col in fovs.T)
    return replace(first, fov=fov)


class Concat(Node):
    """Concatenate nodes along ``axis`` (default 'f'); all other sizes must be equal."""

    def __init__(self, parent_nodes: Sequence[Node], axis: str | int = 'f', name: str = 'concat',
                 print_repr: bool = True):
        self.axis = axis
        super().__init__(list(parent_nodes), name, print_repr)

    def _infer_shape(self, *shapes: TaggedShape) -> TaggedShape:
        axis = shapes[0].index(self.axis)
        merged = merged_geometry(shapes, [p.name for p in self.parents],
                                  f"Concat {self.name!r}", axis)
        sizes = [s.shape[axis] for s in shapes]
        known = [s for s in sizes if s is not None]
        return merged.updateshape(axis, None if len(known) < len(sizes) else sum(known))

    def forward(self, *inputs, training=False):
        return torch.cat(inputs, dim=self.shape.index(self.axis))


class Add(Node):
    """Element-wise sum of two nodes of equal shape."""

    def __init__(self, n1: Node, n2: Node, name: str = 'add', print_repr: bool = True):
        super().__init__([n1, n2], name, print_repr)

    def _infer_shape(self, *shapes: TaggedShape) -> TaggedShape:
        return merged_geometry(shapes, [p.name for p in self.parents], f"Add {self.name!r}", None)

    def forward(self, a, b, training=False):
        return a + b


class MultMerge(Node):
    """Element-wise product of two nodes of equal shape."""

    def __init__(self, n1: Node, n2: Node, name: str = 'multmerge', print_repr: bool = True):
        super().__init__([n1, n2], name, print_repr)

    def _infer_shape(self, *shapes: TaggedShape) -> TaggedShape:
        return merged_geometry(shapes, [p.name for p in self.parents],
                                f"MultMerge {self.name!r}", None)

    def forward(self, a, b, training=False):
        return a * b


def _per_axis_pairs(amounts, n_sp: int, what: str, node_name: str) -> tuple[tuple[int, int], ...]:
    """int, or per spatial axis an int (both sides) or a (left, right) pair."""
    if isinstance(amounts, (int, np.integer)):
        amounts = [amounts] * n_sp
    amounts = [np.asarray(a).tolist() for a in amounts]  # plain ints in messages
    if len(amounts) != n_sp:
        raise ShapeError(f"{what} {node_name!r}: {amounts} has {len(amounts)} entries for "
                         f"{n_sp} spatial axes")
    pairs = tuple((int(a), int(a)) if isinstance(a, (int, np.integer)) else (int(a[0]), int(a[1]))
                  for a in amounts)
    if any(v < 0 for pair in pairs for v in pair):
        raise ShapeError(f"{what} {node_name!r}: amounts {amounts} must be >= 0")
    return pairs


class Crop(Node):
    """Remove border outputs of the spatial axes.

    ``crop``: an int, or per spatial axis an int (each side) or (left, right).
    The offsets move inwards, so cropped maps stay aligned with the input.
    """

    def __init__(self, parent: Node, crop, name: str = 'crop', print_repr: bool = True):
        self.crop = _per_axis_pairs(crop, len(parent.shape.spatial_axes), 'Crop', name)
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        return sh.map_spatial(lambda k, g: g.crop(*self.crop[k]))

    def forward(self, x, training=False):
        index = [slice(None)] * x.ndim
        for k, i in enumerate(self.parent.shape.spatial_axes):
            left, right = self.crop[k]
            index[i] = slice(left, x.shape[i] - right)
        return x[tuple(index)]

    def _compute_cost(self) -> int:
        return 0


class Pad(Node):
    """Pad the spatial axes (``mode`` 'constant' with ``value``, 'reflect' or 'replicate').

    ``pad``: an int, or per spatial axis an int (each side) or (left, right).
    """
    sees_padding = True

    def __init__(self, parent: Node, pad, value: float = 0.0, name: str = 'pad',
                 print_repr: bool = True, mode: str = 'constant'):
        if mode not in ('constant', 'reflect', 'replicate'):
            raise ShapeError(f"Pad {name!r}: mode {mode!r}; valid: 'constant', 'reflect', 'replicate'")
        self.pad = _per_axis_pairs(pad, len(parent.shape.spatial_axes), 'Pad', name)
        self.mode, self.value = mode, value
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        if sh.spatial_axes != tuple(range(len(sh.shape) - len(sh.spatial_axes), len(sh.shape))):
            raise ShapeError(f"Pad needs the spatial axes last, tags are {sh.tags}")
        return sh.map_spatial(lambda k, g: g.crop(-self.pad[k][0], -self.pad[k][1]))

    def forward(self, x, training=False):
        widths = [w for pair in reversed(self.pad) for w in pair]
        if self.mode == 'constant':
            return F.pad(x, widths, value=self.value)
        return F.pad(x, widths, mode=self.mode)

    def _compute_cost(self) -> int:
        return 0


class Split(Node):
    """The part ``start:stop`` of ``parent`` along ``axis`` (see :func:`split`)."""

    def __init__(self, parent: Node, axis: str | int, start: int, stop: int,
                 strip_singleton_dims: bool = False, name: str = 'split', print_repr: bool = True):
        self.axis, self.start, self.stop = axis, int(start), int(stop)
        self.strip_singleton_dims = strip_singleton_dims
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        i = sh.index(self.axis)
        size = sh.shape[i]
        if not 0 <= self.start < self.stop <= (size if size is not None else self.stop):
            raise ShapeError(f"part {self.start}:{self.stop} of axis {sh.tags[i]!r} (size {size}) "
                             f"is empty or out of range", axis=sh.tags[i])
        if sh.tags[i] in ('z', 'x', 'y'):
            g = sh.geometry(i)
            out = sh.with_geometry(i, g.crop(self.start, (size or self.stop) - self.stop))
        else:
            out = sh.updateshape(i, self.stop - self.start)
        if self.strip_singleton_dims and self.stop - self.start == 1:
            out = out.delaxis(i)
        return out

    def forward(self, x, training=False):
        i = self.parent.shape.index(self.axis)
        part = x.narrow(i, self.start, self.stop - self.start)
        return part.squeeze(i) if self.strip_singleton_dims and self.stop - self.start == 1 else part

    def _compute_cost(self) -> int:
        return 0


def split(node: Node, axis: str | int = 'f', index: int | Sequence[int] | None = None,
          n_out: int | None = None, strip_singleton_dims: bool = False,
          name: str | Sequence[str] = 'split') -> tuple[Split, ...]:
    """Split ``node`` along ``axis``: at position(s) ``index`` or into ``n_out`` equal parts.

    ``name``: one name for all parts (made unique: 'split', 'split1', ...) or a list
    with one name per part.
    """
    size = node.shape[node.shape.index(axis)]
    if (index is None) == (n_out is None):
        raise ShapeError(f"split of {node.name!r}: give either index or n_out")
    if n_out is not None:
        if size is None or size % n_out:
            raise ShapeError(f"split of {node.name!r}: axis {axis!r} of size {size} cannot be "
                             f"split into {n_out} equal parts")
        cuts = [size // n_out * k for k in range(1, n_out)]
    elif index is not None:  # always, by the check above
        cuts = [index] if isinstance(index, (int, np.integer)) else list(index)
    bounds = [0] + cuts + [size]
    names = [name] * (len(bounds) - 1) if isinstance(name, str) else list(name)
    if len(names) != len(bounds) - 1:
        raise ShapeError(f"split of {node.name!r}: {len(names)} names {names} for "
                         f"{len(bounds) - 1} parts")
    return tuple(Split(node, axis, a, b, strip_singleton_dims, name=n)
                 for a, b, n in zip(bounds[:-1], bounds[1:], names))


def choose_name(proposal: str, names) -> str:
    """ELEKTRONN2's rule for a unique name: ``proposal`` if free; else a trailing number
    is counted up ('conv1' -> 'conv2'), or '1' appended ('conv' -> 'conv1')."""
    names = set(names)
    if proposal not in names:
        return proposal
    if not re.search(r'\d+$', proposal):
        proposal += '1'
    while proposal in names:
        proposal = re.sub(r'\d+$', lambda m: str(int(m.group(0)) + 1), proposal)
    return proposal


def _index_spec(index) -> list:
    """A tuple index (ints, slices, None, Ellipsis) as a JSON-able list."""
    items = index if isinstance(index, (tuple, list)) else (index,)
    spec: list[list | int | None] = []
    for item in items:
        if isinstance(item, slice):
            spec.append(['slice', item.start, item.stop, item.step])
        elif item is Ellipsis:
            spec.append(['ellipsis'])
        elif item is None or isinstance(item, (int, np.integer)):
            spec.append(None if item is None else int(item))
        elif isinstance(item, list) and item and item[0] in ('slice', 'ellipsis'):
            spec.append(list(item))
        else:
            raise ShapeError(f"FromTensor: index item {item!r} is not an int, slice, None "
                             f"or Ellipsis")
    return spec


def _index_from_spec(spec: list) -> tuple:
    out: list[slice | int | None | EllipsisType] = []
    for item in spec:
        if isinstance(item, list):
            if item[0] == 'ellipsis':
                out.append(Ellipsis)
            elif item[0] == 'slice' and len(item) == 4 and all(
                    v is None or isinstance(v, int) for v in item[1:]):
                out.append(slice(*item[1:]))
            else:
                raise ShapeError(f"FromTensor: invalid index item {item!r}")
        else:
            out.append(item)
    return tuple(out)


def _shape_spec(sh: TaggedShape) -> dict:
    return {'shape': list(sh.shape), 'tags': ','.join(sh.tags), 'strides': list(sh.strides),
            'fov': list(sh.fov), 'offsets': list(sh.offsets)}


class FromTensor(Node):
    """A node computed from ``tensor_parent``'s output by ``tensor``, with the declared
    shape ``tensor_shape``.

    ELEKTRONN2 wrapped a symbolic expression of the parent's output; here ``tensor``
    is an index (e.g. ``(slice(None), slice(0, 2))``: ``parent_output[index]``) or a
    function of :data:`APPLY_FUNCTIONS` (name or object). ``tensor_shape``: a
    TaggedShape (the result is checked against it).
    """
    functor: Callable | None  # exactly one of functor and index is set
    index: tuple | None

    def __init__(self, tensor, tensor_shape, tensor_parent: Node, name: str = 'from_tensor',
                 print_repr: bool = False):
        if callable(tensor) or (isinstance(tensor, str) and tensor in APPLY_FUNCTIONS):
            self.functor_name, self.functor = resolve_function(tensor, name)
            self.index = None
            self._call_args['tensor'] = self.functor_name
        else:
            spec = _index_spec(tensor)
            self.index, self.functor = _index_from_spec(spec), None
            self._call_args['tensor'] = spec
        if isinstance(tensor_shape, dict):
            tensor_shape = TaggedShape(**tensor_shape)
        if not isinstance(tensor_shape, TaggedShape):
            raise ShapeError(f"FromTensor {name!r}: tensor_shape must be a TaggedShape, got "
                             f"{tensor_shape!r:.80}")
        self.declared_shape = tensor_shape
        self._call_args['tensor_shape'] = _shape_spec(tensor_shape)
        super().__init__(tensor_parent, name, print_repr)

    def _apply(self, x):
        return self.functor(x) if self.functor is not None else x[self.index]

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        unknown = 7919  # a size no declared axis is likely to have
        probe = torch.empty([unknown if s is None else s for s in sh.shape], device='meta')
        try:
            out = tuple(self._apply(probe).shape)
        except (IndexError, RuntimeError, TypeError) as err:
            raise ShapeError(f"cannot apply {self._call_args['tensor']} to {sh}: {err}") from None
        want = self.declared_shape
        if len(out) != len(want.shape) or any(w is not None and o != unknown and w != o
                                        for w, o in zip(want.shape, out)):
            raise ShapeError(f"{self._call_args['tensor']} of {sh} gives shape "
                             f"{tuple(None if o == unknown else o for o in out)}, the declared "
                             f"tensor_shape is {want}")
        return want

    def forward(self, x, training=False):
        return self._apply(x)

    def _compute_cost(self) -> int:
        return 0 if self.functor is None else self.shape.stripbatch_prod


class Reshape(Node):
    """Reshape to ``shape`` (None: the batch size, -1: inferred) with new ``tags`` (or to
    the TaggedShape ``shape``).

    Spatial geometry (strides, fov) must be given anew if the spatial axes change.
    """

    def __init__(self, parent: Node, shape: Sequence[int | None] | TaggedShape,
                 tags: str | Sequence[str] | None = None, strides=None, fov=None,
                 name: str = 'reshape', print_repr: bool = True):
        if isinstance(shape, TaggedShape):  # ELEKTRONN2 took a TaggedShape too
            given = shape
            shape, tags, strides, fov = given.shape, ','.join(given.tags), given.strides, given.fov
            self._call_args.update(shape=shape, tags=tags, strides=strides, fov=fov)
        if tags is None:
            raise ShapeError(f"Reshape {name!r}: give tags (or a TaggedShape as shape)")
        self.new_shape, self.new_tags = tuple(shape), tags
        self.strides, self.fov = strides, fov
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        known = sh.stripbatch_prod if sh.hasbatch else sh.stripnone_prod
        sizes = [s for s in self.new_shape if s not in (None, -1)]
        n_infer = sum(s == -1 for s in self.new_shape)
        if n_infer > 1 or (n_infer == 0 and int(np.prod(sizes)) != known) or known % int(np.prod(sizes)):
            raise ShapeError(f"cannot reshape {sh} ({known} values per example) to {self.new_shape}")
        shape = tuple(known // int(np.prod(sizes)) if s == -1 else s for s in self.new_shape)
        return TaggedShape(shape, self.new_tags, self.strides, fov=self.fov)

    def forward(self, x, training=False):
        return x.reshape([x.shape[0] if s is None else s for s in self.shape.shape])

    def _compute_cost(self) -> int:
        return 0


#: The functions ApplyFunc accepts, by qualified name: pure element-wise functions and
#: normalisations along one axis, which keep the shape. None does I/O, takes a callable
#: or allocates by an argument-given size, so a model file can only describe computation.
APPLY_FUNCTIONS: MappingProxyType = MappingProxyType({
    'torch.abs': torch.abs, 'torch.neg': torch.neg, 'torch.sign': torch.sign,
    'torch.square': torch.square, 'torch.sqrt': torch.sqrt, 'torch.rsqrt': torch.rsqrt,
    'torch.reciprocal': torch.reciprocal, 'torch.exp': torch.exp, 'torch.expm1': torch.expm1,
    'torch.log': torch.log, 'torch.log1p': torch.log1p, 'torch.sin': torch.sin,
    'torch.cos': torch.cos, 'torch.tanh': torch.tanh, 'torch.sigmoid': torch.sigmoid,
    'torch.relu': torch.relu, 'torch.erf': torch.erf, 'torch.erfc': torch.erfc,
    'torch.floor': torch.floor, 'torch.ceil': torch.ceil, 'torch.round': torch.round,
    'torch.trunc': torch.trunc, 'torch.clamp': torch.clamp, 'torch.clip': torch.clip,
    'torch.pow': torch.pow, 'torch.add': torch.add, 'torch.sub': torch.sub,
    'torch.mul': torch.mul, 'torch.div': torch.div, 'torch.nan_to_num': torch.nan_to_num,
    'torch.logit': torch.logit, 'torch.softmax': torch.softmax,
    'torch.log_softmax': torch.log_softmax,
    'torch.nn.functional.relu': F.relu, 'torch.nn.functional.relu6': F.relu6,
    'torch.nn.functional.elu': F.elu, 'torch.nn.functional.selu': F.selu,
    'torch.nn.functional.celu': F.celu, 'torch.nn.functional.gelu': F.gelu,
    'torch.nn.functional.silu': F.silu, 'torch.nn.functional.mish': F.mish,
    'torch.nn.functional.softsign': F.softsign, 'torch.nn.functional.softplus': F.softplus,
    'torch.nn.functional.hardtanh': F.hardtanh, 'torch.nn.functional.hardsigmoid': F.hardsigmoid,
    'torch.nn.functional.hardswish': F.hardswish, 'torch.nn.functional.leaky_relu': F.leaky_relu,
    'torch.nn.functional.logsigmoid': F.logsigmoid, 'torch.nn.functional.tanhshrink': F.tanhshrink,
    'torch.nn.functional.softshrink': F.softshrink, 'torch.nn.functional.hardshrink': F.hardshrink,
    'torch.nn.functional.threshold': F.threshold, 'torch.nn.functional.softmax': F.softmax,
    'torch.nn.functional.log_softmax': F.log_softmax, 'torch.nn.functional.softmin': F.softmin,
    'torch.special.expit': torch.special.expit, 'torch.special.logit': torch.special.logit,
    'torch.special.erf': torch.special.erf, 'torch.special.erfc': torch.special.erfc,
    'torch.special.erfinv': torch.special.erfinv, 'torch.special.ndtr': torch.special.ndtr,
    'torch.special.ndtri': torch.special.ndtri, 'torch.special.log_ndtr': torch.special.log_ndtr,
    'torch.special.expm1': torch.special.expm1, 'torch.special.exp2': torch.special.exp2,
    'torch.special.log1p': torch.special.log1p, 'torch.special.sinc': torch.special.sinc,
    'torch.special.entr': torch.special.entr, 'torch.special.i0': torch.special.i0,
    'torch.special.softmax': torch.special.softmax,
    'torch.special.log_softmax': torch.special.log_softmax,
    **{f"torch.{name}": getattr(torch, name) for name in (
        'mean', 'sum', 'amax', 'amin', 'std', 'var', 'logsumexp')},
})
#: The reductions among them: ApplyFunc removes the axes ``dim`` (or ``axis``) names.
REDUCTIONS = frozenset(f"torch.{name}" for name in
                       ('mean', 'sum', 'amax', 'amin', 'std', 'var', 'logsumexp'))
#: Longest string ApplyFunc passes to its function (e.g. ``approximate='tanh'``).
MAX_APPLY_STRING = 32


def resolve_function(functor, node_name: str = 'apply') -> tuple[str, Callable]:
    """An allowed function, given by qualified name or as the object -> (name, function)."""
    if isinstance(functor, str) and functor in APPLY_FUNCTIONS:
        return functor, APPLY_FUNCTIONS[functor]
    name = next((n for n, fn in APPLY_FUNCTIONS.items() if fn is functor), None)
    if name is not None:
        return name, functor
    hint = ("only those can be saved in a model file and restored without running code"
            if callable(functor) else "give a qualified name from it")
    raise ShapeError(f"ApplyFunc {node_name!r}: {functor!r:.100} is not a function of the "
                     f"allow-list elektronn2.neuromancer.basic.APPLY_FUNCTIONS "
                     f"({len(APPLY_FUNCTIONS)} element-wise functions and normalisations such "
                     f"as 'torch.sigmoid', 'torch.nn.functional.softsign', 'torch.softmax'); "
                     f"{hint}")


def _check_apply_arguments(args, kwargs, name: str) -> None:
    """ApplyFunc passes only numbers, bools, None and short strings to its function."""
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ConfigError(f"ApplyFunc {name!r}: args must be a sequence and kwargs a dict, "
                          f"got {type(args).__name__} and {type(kwargs).__name__}")
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier() or key.startswith('_'):
            raise ConfigError(f"ApplyFunc {name!r}: keyword {key!r} is not a plain argument name")
    values = [(f"args[{i}]", v) for i, v in enumerate(args)] + [(f"kwargs[{k!r}]", v)
                                                                 for k, v in kwargs.items()]
    for key in ('dim', 'axis'):  # reduction axes: an axis or a short list of them
        if isinstance(kwargs.get(key), (list, tuple)) and len(kwargs[key]) <= 8:
            values = [v for v in values if v[0] != f"kwargs[{key!r}]"]
            values += [(f"kwargs[{key!r}][{i}]", v) for i, v in enumerate(kwargs[key])]
    for where, value in values:
        plain = (value is None or isinstance(value, (bool, int, float, np.integer, np.floating))
                 or (isinstance(value, str) and len(value) <= MAX_APPLY_STRING))
        if not plain:
            raise ConfigError(f"ApplyFunc {name!r}: {where} = {value!r:.80} is not a plain "
                              f"value; only numbers, bools, None and strings of up to "
                              f"{MAX_APPLY_STRING} characters are passed to the function")


class ApplyFunc(Node):
    """Apply an allowed torch function, e.g. ``ApplyFunc(node, 'torch.sigmoid')`` or
    ``ApplyFunc(node, F.softsign)``.

    Only the functions of :data:`APPLY_FUNCTIONS` are accepted (element-wise functions,
    softmax-like normalisations and the :data:`REDUCTIONS` of torch, torch.nn.functional
    and torch.special), so that a saved model is restored without executing stored code.
    ``args`` and ``kwargs`` (numbers, bools, None or short strings) are passed after the
    tensor. The shape must not change, except that a reduction removes the axes named
    by ``dim`` (or ELEKTRONN2's ``axis``: indices or tags, e.g. ``{'axis': 'f'}``; neither:
    all axes) or keeps them with size 1 (``keepdim=True``); the function must not work in
    place.
    """

    def __init__(self, parent: Node, functor, args: Sequence = (), kwargs: dict | None = None,
                 name: str = 'apply', print_repr: bool = True):
        self.functor_name, self.functor = resolve_function(functor, name)
        self._call_args['functor'] = self.functor_name
        kwargs = {} if kwargs is None else kwargs
        _check_apply_arguments(args, kwargs, name)
        self.args, self.kwargs = tuple(args), dict(kwargs)
        self.reduced: tuple[int, ...] = ()
        if self.functor_name in REDUCTIONS:
            self.reduced = _reduced_axes(parent.shape, self.kwargs, name)
            self.kwargs = {k: v for k, v in self.kwargs.items() if k != 'axis'}
            self.kwargs['dim'] = self.reduced
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        probe = torch.empty([2 if s is None else s for s in sh.shape], device='meta')
        out = self.functor(probe, *self.args, **self.kwargs)
        if out is probe:
            raise ConfigError(f"{self.functor_name} works in place (on its parent's output); "
                              f"drop inplace=True")
        expected = sh
        for axis in sorted(self.reduced, reverse=True):
            expected = (expected.updateshape(axis, 1) if self.kwargs.get('keepdim')
                        else expected.delaxis(axis))
        if tuple(out.shape) != tuple(2 if s is None else s for s in expected.shape):
            raise ShapeError(f"{self.functor_name} changes the shape {tuple(probe.shape)} -> "
                             f"{tuple(out.shape)}; ApplyFunc keeps shapes (reductions remove "
                             f"the axes given as dim=...)")
        return expected

    def forward(self, x, training=False):
        return self.functor(x, *self.args, **self.kwargs)

    def _repr_details(self) -> str:
        return self.functor_name


def _reduced_axes(sh: TaggedShape, kwargs: dict, name: str) -> tuple[int, ...]:
    """The axis indices a reduction's ``dim`` / ``axis`` (indices or tags) names; neither
    (or None): every axis, as ELEKTRONN2's ``T.mean(x)``."""
    if 'dim' in kwargs and 'axis' in kwargs:
        raise ConfigError(f"ApplyFunc {name!r}: give the axes to reduce as dim=... or axis=..., "
                          f"not both (indices or tags of {','.join(sh.tags)})")
    given = kwargs.get('dim', kwargs.get('axis'))
    if given is None:
        return tuple(range(len(sh.shape)))
    axes = given if isinstance(given, (list, tuple)) else [given]
    try:
        return tuple(sorted({sh.index(a) for a in axes}))
    except (ShapeError, TypeError):
        raise ConfigError(f"ApplyFunc {name!r}: dim/axis {given!r} must name axes of "
                          f"{','.join(sh.tags)} (indices or tags)") from None
