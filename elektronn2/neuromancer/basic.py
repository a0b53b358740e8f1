"""Source nodes and merges: Input, Input_like, Concat, Add."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import ShapeError
from .node import Node
from .shape import TaggedShape

_DTYPES = ('float32', 'float64', 'float16', 'bfloat16', 'int8', 'int16', 'int32', 'int64',
           'uint8', 'bool')


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
        if dtype not in _DTYPES:
            raise ShapeError(f"Input {name!r}: unknown dtype {dtype!r}; valid: {_DTYPES}")
        self.dtype = dtype
        self.hardcoded_shape = hardcoded_shape
        self._declared = (tuple(shape), tags, strides, fov)
        super().__init__(None, name, print_repr)

    def _infer_shape(self) -> TaggedShape:
        return TaggedShape(*self._declared)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_tensor(self, array) -> torch.Tensor:
        """Check a numpy array against this input and move it to the model's device."""
        arr = np.asarray(array)
        sh = self.shape
        if arr.ndim != sh.ndim:
            raise ShapeError(f"Input {self.name!r} expects {sh.ndim} axes ({','.join(sh.tags)}, "
                             f"shape {sh.shape}), got an array of shape {arr.shape}")
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
        ref: the node whose output shape (and geometry) to copy.
        dtype: defaults to 'float32'.
        override_f: if an int, the size of the 'f' axis (e.g. 1 for sparse labels).
    """

    def __init__(self, ref: Node, dtype: str | None = None, name: str = 'input',
                 print_repr: bool = True, override_f: int | bool = False):
        sh = ref.shape
        if override_f is not False:
            sh = sh.updateshape('f', int(override_f))
        self.ref = ref
        Input.__init__(self, sh.shape, sh.tags, sh.strides, sh.fov, dtype or 'float32',
                       name=name, print_repr=print_repr)


def _merged_geometry(shapes: Sequence[TaggedShape], names: Sequence[str], node_label: str,
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
        if sh.strides != first.strides:
            raise ShapeError(f"{node_label}: parent {name!r} has strides {sh.strides}, "
                             f"{names[0]!r} has {first.strides}")
    fovs = np.array([sh.fov for sh in shapes]).reshape(len(shapes), -1)
    fov = tuple(-1 if (col < 0).any() else int(col.max()) for col in fovs.T)
    return TaggedShape(first.shape, first.tags, first.strides, fov, first.mfp_offsets)


class Concat(Node):
    """Concatenate nodes along ``axis`` (default 'f'); all other sizes must be equal."""

    def __init__(self, parent_nodes: Sequence[Node], axis: str | int = 'f', name: str = 'concat',
                 print_repr: bool = True):
        self.axis = axis
        super().__init__(list(parent_nodes), name, print_repr)

    def _infer_shape(self, *shapes: TaggedShape) -> TaggedShape:
        axis = shapes[0].index(self.axis)
        merged = _merged_geometry(shapes, [p.name for p in self.parents],
                                  f"Concat {self.name!r}", axis)
        sizes = [s.shape[axis] for s in shapes]
        return merged.updateshape(axis, None if None in sizes else sum(sizes))

    def forward(self, *inputs, training=False):
        return torch.cat(inputs, dim=self.shape.index(self.axis))


class Add(Node):
    """Element-wise sum of two nodes of equal shape."""

    def __init__(self, n1: Node, n2: Node, name: str = 'add', print_repr: bool = True):
        super().__init__([n1, n2], name, print_repr)

    def _infer_shape(self, *shapes: TaggedShape) -> TaggedShape:
        return _merged_geometry(shapes, [p.name for p in self.parents], f"Add {self.name!r}", None)

    def forward(self, a, b, training=False):
        return a + b
