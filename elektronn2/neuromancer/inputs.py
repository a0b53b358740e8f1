"""Nodes that feed values into a graph: Input, Input_like (placeholders filled by the
caller), GenericInput (any Python object), ValueNode and InitialState_like (values held
by the model); the dtypes they accept."""
from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Sequence

import numpy as np
import torch

from ..errors import ShapeError
from .node import Node
from .shape import TaggedShape
from .variables import init_tensor

logger = logging.getLogger('elektronn2')

#: The dtypes of inputs and value nodes, by name.
TORCH_DTYPES = MappingProxyType({
    'float32': torch.float32, 'float64': torch.float64, 'float16': torch.float16,
    'bfloat16': torch.bfloat16, 'int8': torch.int8, 'int16': torch.int16, 'int32': torch.int32,
    'int64': torch.int64, 'uint8': torch.uint8, 'bool': torch.bool})
_DTYPES = tuple(TORCH_DTYPES)


def _check_dtype(dtype, what: str) -> None:
    if not isinstance(dtype, str) or dtype not in TORCH_DTYPES:
        raise ShapeError(f"{what}: unknown dtype {dtype!r}; valid: {_DTYPES}")


class Input(Node):
    """A graph input fed with numpy arrays.

    Args:
        shape: sizes, ``None`` for unknown (usually the batch size).
        tags: axis tags, e.g. ``'b,f,z,x,y'``.
        strides, fov: spatial geometry of the data (default 1).
        dtype: dtype the input is converted to.
        hardcoded_shape: if True even the batch size must match exactly; else a
            batch of any size is accepted.
    """
    is_input = True

    def __init__(self, shape: Sequence[int | None], tags: str | Sequence[str], strides=None,
                 fov=None, dtype: str = 'float32', hardcoded_shape: bool = False,
                 name: str = 'input', print_repr: bool = True):
        _check_dtype(dtype, f"Input {name!r}")
        self.dtype = dtype
        self.hardcoded_shape = hardcoded_shape
        self._declared = dict(shape=tuple(shape), tags=tags, strides=strides, fov=fov)
        super().__init__(None, name, print_repr)

    def _infer_shape(self) -> TaggedShape:
        return TaggedShape(**self._declared)

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    def to_tensor(self, array) -> torch.Tensor:
        """Check a numpy array against this input and move it to the model's device."""
        arr = np.asarray(array)
        sh = self.shape
        if arr.ndim != len(sh.shape):
            raise ShapeError(f"Input {self.name!r} expects {len(sh.shape)} axes "
                             f"({','.join(sh.tags)}, shape {sh.shape}), got an array of shape {arr.shape}")
        for want, got, tag in zip(sh.shape, arr.shape, sh.tags):
            if want is not None and want != got and (tag != 'b' or self.hardcoded_shape):
                raise ShapeError(f"Input {self.name!r}: axis {tag!r} has size {got}, expected "
                                 f"{want} (shape {sh.shape}, tags {','.join(sh.tags)}); a model "
                                 f"for other patch sizes is made by modelload(imposed_patch_size=...)",
                                 axis=tag)
        if arr.dtype.kind not in 'biuf':
            raise ShapeError(f"Input {self.name!r} expects numeric data ({self.dtype}), got "
                             f"dtype {arr.dtype}")
        if self.torch_dtype.is_floating_point is False and arr.dtype.kind == 'f':
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ShapeError(f"Input {self.name!r} has integer dtype {self.dtype} but got "
                                 f"non-integer floats (dtype {arr.dtype})")
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
        return tensor.to(device=self.model.device, dtype=self.torch_dtype)

    def random_value(self, batch_size: int = 1) -> np.ndarray:
        """A random array of this input's shape (unknown sizes -> ``batch_size``)."""
        shape = tuple(batch_size if s is None else s for s in self.shape.shape)
        if self.torch_dtype.is_floating_point:
            return np.random.rand(*shape).astype(np.float32 if self.dtype == 'bfloat16' else self.dtype)
        return np.random.randint(0, 2, size=shape).astype(self.dtype)

    def forward(self, *inputs, training=False):
        raise RuntimeError(f"Input {self.name!r} is fed, not computed")

    def _compute_cost(self) -> int:
        return 0

    def _repr_details(self) -> str:
        return self.dtype


class Input_like(Input):  # noqa: N801  (ELEKTRONN2's name)
    """An Input shaped like another node's output (typically a target for a prediction).

    Args:
        ref: the node whose output shape (and geometry) to copy; a TaggedShape gives a
            plain :class:`Input` of that shape (then ``dtype`` is needed).
        dtype: defaults to 'float32'.
        override_f: if an int, the size of the 'f' axis (e.g. 1 for sparse labels). For
            a Softmax of ``n_indep`` > 1 groups, 1 means sparse labels too: one per group,
            so 'f' is ``n_indep`` (ELEKTRONN2 took such targets, its shapes unchecked).
        hardcoded_shape: as for :class:`Input` (the batch size must match too).
    """

    def __new__(cls, ref, dtype: str | None = None, name: str = 'input', print_repr: bool = True,
                override_f: int | bool = False, hardcoded_shape: bool = False):
        if isinstance(ref, TaggedShape):
            if dtype is None:
                raise ShapeError(f"Input_like {name!r}: a TaggedShape reference needs a dtype")
            shape = ref if override_f is False else ref.updateshape('f', int(override_f))
            return Input(shape.shape, shape.tags, shape.strides, shape.fov, dtype=dtype,
                         hardcoded_shape=hardcoded_shape, name=name, print_repr=print_repr)
        return super().__new__(cls, ref, dtype, name, print_repr, override_f, hardcoded_shape)

    def __init__(self, ref: Node, dtype: str | None = None, name: str = 'input',
                 print_repr: bool = True, override_f: int | bool = False,
                 hardcoded_shape: bool = False):
        self.ref = ref
        self.override_f = override_f
        sh = self._like_ref()
        Input.__init__(self, sh.shape, sh.tags, dtype=dtype or 'float32',
                       hardcoded_shape=hardcoded_shape, name=name, print_repr=print_repr)

    @property
    def class_count(self) -> int | None:
        return self.ref.class_count

    def _like_ref(self) -> TaggedShape:
        sh = self.ref.shape
        if self.override_f is False:
            return sh
        n_f = int(self.override_f)
        groups = int(getattr(self.ref, 'n_indep', 1))
        return sh.updateshape('f', groups if n_f == 1 and groups > 1 else n_f)

    def _infer_shape(self) -> TaggedShape:
        return self._like_ref()


class GenericInput(Node):
    """A source fed with an arbitrary Python object (not converted to a tensor).

    Nodes written for it receive the object itself in ``forward``; its shape is
    empty (no axes). ELEKTRONN2 fed skeletons and coordinate transforms this way.
    """
    is_input = True

    def __init__(self, name: str = 'generic_input', print_repr: bool = True):
        super().__init__(None, name, print_repr)

    def _infer_shape(self) -> TaggedShape:
        return TaggedShape((), ())

    def to_tensor(self, value):
        """The value itself (passed to the child nodes unchanged)."""
        return value

    def random_value(self, batch_size: int = 1):
        return None

    def forward(self, *inputs, training=False):
        raise RuntimeError(f"GenericInput {self.name!r} is fed, not computed")

    def _compute_cost(self) -> int:
        return 0


def _filled(value, shape: tuple, dtype: str, what: str) -> torch.Tensor:
    """``value`` (None: zeros, a number or an array) broadcast to ``shape`` as ``dtype``.

    A torch tensor of the default device, so that a model file built on the meta
    device allocates nothing before its sizes are checked.
    """
    fill = torch.zeros(()) if value is None else torch.as_tensor(np.asarray(value))
    try:
        return fill.to(TORCH_DTYPES[dtype]).expand(shape)
    except RuntimeError:
        raise ShapeError(f"{what}: value of shape {tuple(fill.shape)} does not broadcast to "
                         f"{tuple(shape)}") from None


def _own_shape(value, declared: tuple) -> tuple[int, ...] | None:
    """The shape of an array ``value`` with as many axes as ``declared`` that does not
    broadcast to it; None when the declared shape stands."""
    if value is None or None in declared:
        return None
    shape = tuple(int(n) for n in np.shape(value))
    if len(shape) != len(declared):
        return None
    try:
        fits = np.broadcast_shapes(shape, declared) == tuple(declared)
    except ValueError:
        fits = False
    return None if fits else shape


class ValueNode(Node):
    """A source holding a parameter ``value`` of the given shape (trainable if ``apply_train``).

    ``value``: None (zeros, or drawn by ``init_kwargs``, the arguments of
    :func:`.variables.initweights`), a number (constant fill), an array, or
    ``[array, 'const']`` (never trained). An array with as many axes as ``shape`` that
    does not broadcast to it gives the node its own shape, as in ELEKTRONN2 (a warning
    says so), e.g. class weights ``(0.2, 1.8)`` shared by the groups of a Softmax.
    """

    def __init__(self, shape: Sequence[int], tags: str | Sequence[str], strides=None, fov=None,
                 dtype: str = 'float32', apply_train: bool = False, value=None,
                 init_kwargs: dict | None = None, name: str = 'value_state',
                 print_repr: bool = True):
        _check_dtype(dtype, f"ValueNode {name!r}")
        if isinstance(value, (list, tuple)) and len(value) == 2 and value[1] == 'const':
            value, apply_train = value[0], False
        self._declared = dict(shape=tuple(shape), tags=tags, strides=strides, fov=fov)
        self.dtype, self.apply_train, self._value = dtype, apply_train, value
        self.init_kwargs = init_kwargs
        super().__init__(None, name, print_repr)

    def _infer_shape(self) -> TaggedShape:
        declared = dict(self._declared)
        own = _own_shape(self._value, declared['shape'])
        if own is not None:
            logger.warning("ValueNode %r: value of shape %s does not broadcast to the declared "
                           "shape %s; the node takes the value's shape (as ELEKTRONN2 did)",
                           self.name, own, declared['shape'])
            declared['shape'] = own
        sh = TaggedShape(**declared)
        if None in sh.shape:
            raise ShapeError(f"a ValueNode needs known sizes, got {sh.shape}")
        return sh

    def _make_params(self):
        if self._value is None and self.init_kwargs is not None:
            value = init_tensor(self.shape.shape, **{'dtype': self.dtype, **self.init_kwargs})
        else:
            value = _filled(self._value, self.shape.shape, self.dtype, f"ValueNode {self.name!r}")
        return {'value': self._new_param(value, trainable=self.apply_train)}

    def forward(self, training=False):
        return self.params['value']

    def get_value(self) -> np.ndarray:
        return self.get_param_values()['value']


class InitialState_like(Node):  # noqa: N801  (ELEKTRONN2's name)
    """A learnable initial state: ``parent``'s shape with 'f' = ``override_f``, holding one
    value per feature (broadcast over the other axes, e.g. the batch).

    Used as the memory of a recurrent step before the first iteration. The values
    start at ``value`` (default 0), or are drawn by ``init_kwargs`` (the arguments of
    :func:`.variables.initweights`, e.g. ``dict(mode='const', scale=0.1)``).
    """

    def __init__(self, parent: Node, override_f: int, dtype: str | None = None,
                 name: str = 'initial_state', print_repr: bool = True,
                 init_kwargs: dict | None = None, value=None, apply_train: bool = True):
        self.n_f, self.dtype = int(override_f), dtype or 'float32'
        _check_dtype(self.dtype, f"InitialState_like {name!r}")
        self._value, self.apply_train, self.init_kwargs = value, apply_train, init_kwargs
        super().__init__(parent, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        if 'f' not in sh.tags:
            raise ShapeError(f"the parent {sh} has no 'f' axis to override")
        return sh.updateshape('f', self.n_f)

    def _make_params(self):
        if self._value is None and self.init_kwargs is not None:
            value = init_tensor((self.n_f,), **{'dtype': self.dtype, **self.init_kwargs})
        else:
            value = _filled(self._value, (self.n_f,), self.dtype,
                            f"InitialState_like {self.name!r}")
        return {'value': self._new_param(value, self.apply_train)}

    def forward(self, x, training=False):
        f = self.parent.shape.tag2index('f')
        shape = list(x.shape)
        shape[f] = self.n_f
        view = [1] * x.ndim
        view[f] = self.n_f
        return self.params['value'].view(view).expand(shape)

    def get_value(self) -> np.ndarray:
        return self.get_param_values()['value']
