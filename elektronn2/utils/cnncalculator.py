"""CNN calculator: valid patch sizes, output size, strides, fov and offsets of a conv stack.

Uses the same per-axis rules as the Conv node
(:class:`elektronn2.neuromancer.shape.AxisGeometry`).

>>> calc = cnncalculator([(1, 6, 6), (1, 5, 5)], [(1, 2, 2), (1, 2, 2)],
...                      desired_patch_size=(23, 185, 185), ndim=3)
>>> calc.output_size, calc.fov
((23, 43, 43), (1, 17, 17))
"""
from __future__ import annotations

import logging
import math
import sys
import types
from dataclasses import dataclass
from typing import Sequence

from ..errors import ShapeError
from ..neuromancer.shape import AxisGeometry, as_tuple, nearest_valid_sizes

logger = logging.getLogger('elektronn2')


def _per_layer(values, n_layers: int, ndim: int, name: str) -> list[tuple[int, ...]]:
    values = list(values)
    if len(values) != n_layers:
        raise ShapeError(f"{name} has {len(values)} entries for {n_layers} layers")
    return [as_tuple(v, ndim, name) for v in values]


@dataclass(frozen=True)
class CNNCalculator:
    """Geometry of a conv stack for one patch size (per spatial axis).

    With max-fragment pooling, output size and strides are those of the dense
    output (after FragmentsToDense).
    """
    filters: tuple
    poolings: tuple
    mfp: tuple
    patch_size: tuple
    output_size: tuple
    strides: tuple
    fov: tuple
    offsets: tuple
    valid_patch_sizes: tuple
    messages: tuple

    @property
    def overlap(self) -> tuple:
        """Input voxels shared by neighbouring patches whose outputs tile the image."""
        return tuple(p - o * s for p, o, s in zip(self.patch_size, self.output_size, self.strides))

    @property
    def report(self) -> str:
        lines = [f"patch size {self.patch_size} -> output {self.output_size}",
                 f"strides {self.strides}, fov {self.fov}, offsets {self.offsets}",
                 f"overlap of tiled patches {self.overlap}"]
        for k, sizes in enumerate(self.valid_patch_sizes):
            lines.append(f"axis {k}: valid patch sizes near {self.patch_size[k]}: {list(sizes)}")
        return '\n'.join(lines + list(self.messages))

    def __repr__(self) -> str:
        return self.report


def _axis_chain(size: int, filters, poolings, mfp) -> AxisGeometry:
    g = AxisGeometry(size)
    for k, p, m in zip(filters, poolings, mfp):
        g = g.conv_pool(k, p, mfp=m)
    return g


def _is_valid(size: int, filters, poolings, mfp) -> bool:
    """Whether an input of ``size`` passes every layer of one axis."""
    try:
        _axis_chain(size, filters, poolings, mfp)
    except ShapeError:
        return False
    return True


def _layers(filters, poolings, mfp, ndim: int) -> tuple[list, list, list]:
    """Per-layer filter and pool tuples (one entry per axis) and per-layer mfp flags."""
    n_layers = len(filters)
    filt = _per_layer(filters, n_layers, ndim, 'filters')
    pools = _per_layer(poolings, n_layers, ndim, 'poolings')
    mfps = [bool(mfp)] * n_layers if isinstance(mfp, bool) else [bool(m) for m in mfp]
    if len(mfps) != n_layers:
        raise ShapeError(f"mfp has {len(mfps)} entries for {n_layers} layers")
    return filt, pools, mfps


def cnncalculator(filters: Sequence, poolings: Sequence, desired_patch_size=None,
                  mfp: bool | Sequence[bool] = False, force_center: bool = False,
                  desired_output=None, ndim: int = 1) -> CNNCalculator:
    """Geometry of valid convolutions ``filters`` each followed by pooling ``poolings``.

    Args:
        filters, poolings: one entry per layer, an int or one int per spatial axis.
        desired_patch_size: wanted input size per axis; an invalid size is snapped to the
            largest valid size below it (the smallest valid size if there is none).
        mfp: max-fragment pooling for all layers, or per layer.
        force_center: refuse even fields of view (outputs between input voxels).
        desired_output: wanted output size per axis; the patch size is derived from it.
        ndim: number of spatial axes.
    """
    filt, pools, mfps = _layers(filters, poolings, mfp, ndim)
    messages = []
    patch, valid_near = [], []
    for k in range(ndim):
        fk, pk = [f[k] for f in filt], [p[k] for p in pools]

        def valid(n: int) -> bool:
            return _is_valid(n, fk, pk, mfps)
        smallest = next(n for n in range(1, 100_000) if valid(n))
        if desired_output is not None:
            want = as_tuple(desired_output, ndim, 'desired_output')[k]
            size = next(n for n in range(smallest, 1_000_000) if valid(n)
                        and _axis_chain(n, fk, pk, mfps).size >= want)
        elif desired_patch_size is not None:
            want = as_tuple(desired_patch_size, ndim, 'desired_patch_size')[k]
            size = next((n for n in range(want, smallest - 1, -1) if valid(n)), smallest)
            if size != want:
                messages.append(f"axis {k}: patch size {want} is not valid, snapped to {size}")
        else:
            size = smallest
        patch.append(size)
        valid_near.append(tuple(sorted(set(nearest_valid_sizes(valid, size, 2, 10_000) + [size]))))
    geoms = [_axis_chain(n, [f[k] for f in filt], [p[k] for p in pools], mfps)
             for k, n in enumerate(patch)]
    fov = tuple(g.fov for g in geoms)
    if any(f % 2 == 0 for f in fov):
        text = (f"field of view {fov} is even on some axis: outputs lie between input voxels "
                f"(choose filter and pool sizes with k + p odd)")
        if force_center:
            raise ShapeError(text)
        messages.append('warning: ' + text)
    for message in messages:
        logger.warning(message)
    dense = [math.prod(p[k] for p, m in zip(pools, mfps) if m) for k in range(ndim)]
    return CNNCalculator(tuple(filt), tuple(pools), tuple(mfps), tuple(patch),
                         tuple(g.size * d for g, d in zip(geoms, dense)),
                         tuple(g.stride // d for g, d in zip(geoms, dense)), fov,
                         tuple(g.offset for g in geoms), tuple(valid_near), tuple(messages))



def get_valid_patch_sizes(filters: Sequence, poolings: Sequence, desired_patch_size=100,
                          mfp: bool | Sequence[bool] = False, ndim: int = 1) -> list:
    """Every valid input size below 5000: a list of ints (``ndim=1``), else one such list
    per spatial axis. (``desired_patch_size`` is accepted for ELEKTRONN2's signature.)"""
    filt, pools, mfps = _layers(filters, poolings, mfp, ndim)
    sizes = [[n for n in range(2, 5000) if _is_valid(n, [f[k] for f in filt], [p[k] for p in pools],
                                                      mfps)] for k in range(ndim)]
    return sizes[0] if ndim == 1 else sizes


def get_cloesest_valid_patch_size(filters: Sequence, poolings: Sequence, desired_patch_size=100,
                                  mfp: bool | Sequence[bool] = False, ndim: int = 1) -> int | list[int]:
    """The valid input size :func:`cnncalculator` snaps ``desired_patch_size`` to: an int
    (``ndim=1``), else a list per spatial axis. (ELEKTRONN2's spelling of the name.)"""
    size = cnncalculator(filters, poolings, desired_patch_size, mfp=mfp, ndim=ndim).patch_size
    return size[0] if ndim == 1 else list(size)


class _CallableModule(types.ModuleType):
    """ELEKTRONN2 exported the function as ``elektronn2.utils.cnncalculator``, the name of
    this module too; once the module is imported it takes that place in the package, so
    calling it calls the function."""

    def __call__(self, *args, **kwargs) -> CNNCalculator:
        return cnncalculator(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
