"""Geometry of volume-scale prediction: boxes and the block grid.

All coordinates are voxels in data order ``(z, y, x)``. What one network evaluation
reads and writes (patch, outputs, strides, phase) is the network's
:class:`~elektronn2.neuromancer.footprint.Footprint`; blocks start on its phase grid.
Values here are small immutable dataclasses whose operations return new values.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..errors import ShapeError


def _ints(values: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@dataclass(frozen=True, init=False)
class Box:
    """The half-open box ``[lo, hi)`` (one entry per axis, data order)."""
    lo: tuple[int, ...]
    hi: tuple[int, ...]

    def __init__(self, lo: Sequence[int], hi: Sequence[int]) -> None:
        object.__setattr__(self, 'lo', _ints(lo))
        object.__setattr__(self, 'hi', _ints(hi))
        if len(self.lo) != len(self.hi) or any(b < a for a, b in zip(self.lo, self.hi)):
            raise ShapeError(f"Box lo={self.lo}, hi={self.hi}: needs one lo and one hi per "
                             f"axis with hi >= lo")

    @classmethod
    def from_shape(cls, shape: Sequence[int], lo: Sequence[int] | None = None) -> Box:
        lo = (0,) * len(shape) if lo is None else _ints(lo)
        return cls(lo, tuple(a + s for a, s in zip(lo, shape)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.lo, self.hi))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def grow(self, before: Sequence[int], after: Sequence[int]) -> Box:
        """The box extended by ``before`` below lo and ``after`` above hi."""
        return Box(tuple(lo - n for lo, n in zip(self.lo, before)),
                   tuple(hi + n for hi, n in zip(self.hi, after)))

    def contains(self, other: Box) -> bool:
        return all(a <= c and d <= b for a, b, c, d in zip(self.lo, self.hi, other.lo, other.hi))

    def slices_in(self, outer: Box) -> tuple[slice, ...]:
        """Index of this box within an array covering ``outer``."""
        if not outer.contains(self):
            raise ShapeError(f"{self} does not lie inside {outer}")
        return tuple(slice(lo - o, hi - o) for lo, hi, o in zip(self.lo, self.hi, outer.lo))

    def relative_to(self, outer: Box) -> Box:
        """This box in coordinates where ``outer`` starts at 0."""
        return Box([a - o for a, o in zip(self.lo, outer.lo)],
                   [b - o for b, o in zip(self.hi, outer.lo)])

    def __str__(self) -> str:
        return f"[{', '.join(f'{lo}:{hi}' for lo, hi in zip(self.lo, self.hi))})"


@dataclass(frozen=True)
class Block:
    """One unit of work: compute ``compute`` (a full block), write ``write`` (inside it).

    ``index`` is the block's position in the grid; ``write`` is in output-volume
    coordinates and covers exactly one chunk of the output array.
    """
    index: tuple[int, ...]
    compute: Box
    write: Box

    @property
    def name(self) -> str:
        return '_'.join(str(i) for i in self.index)


@dataclass(frozen=True, init=False)
class BlockGrid:
    """Where the blocks are: ``region`` (output voxels, volume coordinates) in tiles of
    ``block_shape``, aligned to ``region.lo``.

    Every block computes a full ``block_shape`` tile from its start (overhanging the
    region's end where the region does not divide) and writes only its part of the region.
    """
    region: Box
    block_shape: tuple[int, ...]

    def __init__(self, region: Box, block_shape: Sequence[int]) -> None:
        object.__setattr__(self, 'region', region)
        object.__setattr__(self, 'block_shape', _ints(block_shape))
        if len(self.block_shape) != len(self.region.lo) or min(self.block_shape) < 1:
            raise ShapeError(f"block shape {self.block_shape} must have one positive size per "
                             f"axis of the region {self.region} (z, y, x)")

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.region.shape, self.block_shape))

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def __iter__(self) -> Iterator[Block]:
        for index in itertools.product(*(range(c) for c in self.counts)):
            yield self.block(index)

    def block(self, index: Sequence[int]) -> Block:
        starts = [lo + i * b for lo, i, b in zip(self.region.lo, index, self.block_shape)]
        write = Box(starts, [min(s + b, hi) for s, b, hi in
                             zip(starts, self.block_shape, self.region.hi)])
        return Block(tuple(int(i) for i in index), Box.from_shape(self.block_shape, starts), write)
