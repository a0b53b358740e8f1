"""Where a network's input patch and its output voxels lie, in data order (z, y, x).

Volumes are stored ``(z, y, x)``; networks name their spatial axes by tags
(``'z,x,y'``, ``'x,y'``, ``'y,x'``). :class:`PatchGeometry` keeps all sizes in data
order and converts arrays to the network's tag order at the end. A 2-D network
samples single slices: its patch has depth 1 in z.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError

DATA_AXES = ('z', 'y', 'x')


def _checked_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    if sorted(tags) not in (['x', 'y'], ['x', 'y', 'z']):
        raise ShapeError(f"Spatial axes {tags} are not supported by the volume batch "
                         f"creators; use 3-D tags z,x,y (any order) or 2-D x,y / y,x")
    return tuple(tags)


@dataclass(frozen=True)
class PatchGeometry:
    """Input patch and output grid of a network, in data order (z, y, x).

    Args:
        patch_shape: input patch size.
        out_shape: output size.
        offsets: patch coordinate of the first output voxel (x.5 for even fields of view).
        strides: spacing of the output voxels in input voxels.
        net_tags: the network's spatial tags in its axis order, e.g. ``('z', 'x', 'y')``.
    """
    patch_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    offsets: tuple[float, float, float]
    strides: tuple[int, int, int]
    net_tags: tuple[str, ...]

    def __post_init__(self):
        _checked_tags(self.net_tags)
        first = np.asarray(self.offsets, float)
        last = first + (np.asarray(self.out_shape) - 1) * np.asarray(self.strides)
        if np.any(first < 0) or np.any(last > np.asarray(self.patch_shape) - 1):
            raise ShapeError(f"The output grid (offsets {self.offsets}, strides {self.strides}, "
                             f"size {self.out_shape}, z,y,x) does not lie inside the input patch "
                             f"{self.patch_shape}; the network's output geometry is inconsistent")

    @classmethod
    def from_nodes(cls, input_node, target_node) -> PatchGeometry:
        """Read patch size from the input node, output grid from the target node's shape."""
        inp, out = input_node.shape, target_node.shape
        if inp.spatial_tags != out.spatial_tags:
            raise ShapeError(f"Target node {target_node.name!r} has spatial axes "
                             f"{out.spatial_tags}, input node {input_node.name!r} has "
                             f"{inp.spatial_tags}; they must be the same, in the same order")
        for node, sh in ((input_node, inp), (target_node, out)):
            if None in sh.spatial_shape:
                raise ShapeError(f"Node {node.name!r} has unknown spatial sizes "
                                 f"{sh.spatial_shape}; patches need a fixed size")
        tags = _checked_tags(inp.spatial_tags)
        data_tags = tags if len(tags) == 3 else ('z',) + tags

        def to_data(values, fill):
            values = tuple(values) if len(tags) == 3 else (fill,) + tuple(values)
            return tuple(values[data_tags.index(t)] for t in DATA_AXES)
        return cls(patch_shape=to_data(inp.spatial_shape, 1),
                   out_shape=to_data(out.spatial_shape, 1),
                   offsets=to_data([float(o) for o in out.offsets], 0.0),
                   strides=to_data(out.strides, 1), net_tags=tags)

    @property
    def planar(self) -> bool:
        """True for 2-D networks (patches of depth 1)."""
        return len(self.net_tags) == 2

    def dense(self) -> PatchGeometry:
        """The same output region sampled at every input voxel (stride 1)."""
        extent = (np.asarray(self.out_shape) - 1) * np.asarray(self.strides) + 1
        return PatchGeometry(self.patch_shape, tuple(int(e) for e in extent), self.offsets,
                             (1, 1, 1), self.net_tags)

    def to_net_order(self, array: np.ndarray) -> np.ndarray:
        """(..., c, z, y, x) array -> (..., c, *spatial in the network's tag order)."""
        lead = array.ndim - 3
        tags = self.net_tags
        if self.planar:
            array = array[..., 0, :, :]
            axes = [DATA_AXES[1:].index(t) for t in tags]
        else:
            axes = [DATA_AXES.index(t) for t in tags]
        return array.transpose(list(range(lead)) + [lead + a for a in axes])

    def net_order(self, zyx_values) -> tuple:
        """Per-axis values in data order -> in the network's spatial tag order."""
        return tuple(zyx_values[DATA_AXES.index(t)] for t in self.net_tags)


def class_count(target_node) -> int | None:
    """n_class of the prediction a target node belongs to (a Softmax), if known."""
    ref = getattr(target_node, 'ref', None)
    prediction = getattr(getattr(target_node, 'model', None), 'prediction_node', None)
    for node in (ref, prediction):
        if getattr(node, 'n_class', None) is not None:
            return int(node.n_class)
    return None
