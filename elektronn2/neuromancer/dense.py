"""Dense prediction by tiling a (possibly strided) network over an image.

A network with output stride S evaluated on a patch starting at input position q gives
outputs for the dense positions ``q + j * S`` (j < out), where dense position d is centred
at input coordinate ``offsets + d``. :func:`predict_tile` evaluates every patch start of
:meth:`.Footprint.patch_starts` (bases on the phase grid, every shift below S) and writes
each output voxel from the patch that computes it; with max-fragment pooling (a
FragmentsToDense output) S is 1 and one evaluation per placement suffices.
:func:`predict_dense` is the whole-image call of ELEKTRONN2's API; blockwise prediction
(:mod:`elektronn2.inference`) calls :func:`predict_tile` per block.

Test-time augmentation (``tta``, :data:`TTA_CHOICES`) averages the outputs over flips of
the network's spatial axes ('flips') and also the transpose of y and x ('dihedral': the
in-plane 90-degree rotations and reflections). It acts on each evaluated patch
(:func:`evaluate_patches`): every transformed patch is evaluated in turn, its output
transformed back and added to a float64 running sum, which is divided by the number of
transforms. A patch's outputs are symmetric about the patch's centre (the first output's
window starts at the patch's start, the last one's ends at its end), so the flipped
patch's outputs, flipped back, are those of the same windows; this holds for even fields
of view too, whose outputs are stored on the voxel after their x.5 centre (ELEKTRONN2's
``fov // 2``, :meth:`.Footprint.of`) in either case. Mirror padding, tiling, max-fragment
pooling and blending work as without augmentation, on untransformed coordinates, so
blockwise prediction equals :func:`predict_dense` with the same ``tta``. Each output
channel is averaged as a scalar map: channels tied to axes (affinities, vectors,
directions) are not permuted or negated, so augmentation is for scalar outputs such as
class probabilities and boundaries.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, ShapeError
from . import execution
from .execution import ExecutionSettings
from .footprint import DATA_AXES, Footprint, to_unit_float
from .traversal import release_schedule, topological_order

if TYPE_CHECKING:
    from .node import Node

logger = logging.getLogger('elektronn2')


#: test-time augmentation: 'none', the flips of the spatial axes ('flips': 2**d
#: transforms for a d-dimensional net), or those times the transpose of y and x
#: ('dihedral': the dihedral group of the square in-plane, times z flips for 3-D nets)
TTA_CHOICES = ('none', 'flips', 'dihedral')


@dataclass(frozen=True)
class PatchTransform:
    """A transpose of y and x (first, if any), then flips of some spatial axes, acting on
    arrays (..., z, y, x) in data order; :meth:`invert` undoes it."""
    flips: tuple[str, ...] = ()
    transpose: bool = False

    @property
    def _flip_axes(self) -> tuple[int, ...]:
        return tuple(DATA_AXES.index(a) - len(DATA_AXES) for a in self.flips)

    def apply(self, array: np.ndarray) -> np.ndarray:
        if self.transpose:
            array = array.swapaxes(-1, -2)
        return np.flip(array, self._flip_axes) if self.flips else array

    def invert(self, array: np.ndarray) -> np.ndarray:
        if self.flips:
            array = np.flip(array, self._flip_axes)
        return array.swapaxes(-1, -2) if self.transpose else array

    def __str__(self) -> str:
        parts = [f"flip {','.join(self.flips)}"] if self.flips else []
        return ' + '.join((['transpose y,x'] if self.transpose else []) + parts) or 'identity'


def tta_transforms(footprint: Footprint, tta: str = 'none',
                   name: str = 'the network') -> tuple[PatchTransform, ...]:
    """The transforms of test-time augmentation ``tta`` (:data:`TTA_CHOICES`) of a net with
    ``footprint`` (``name``: for messages), the identity first.

    'flips' flips every combination of the net's spatial axes (a 2-D net: y and x, its
    slices are not flipped). 'dihedral' adds the transpose of y and x, which needs both
    axes with the same patch size, outputs per patch and stride (hence field of view):
    refused with a ShapeError naming them otherwise. A 3-D net is only ever rotated
    in-plane, so anisotropic nets (z unlike y, x) are fine.
    """
    if tta not in TTA_CHOICES:
        raise ConfigError(f"tta={tta!r}; valid: {TTA_CHOICES}")
    if tta == 'none':
        return (PatchTransform(),)
    axes = tuple(a for a in DATA_AXES if a in footprint.net_tags)
    flips = [tuple(a for a, f in zip(axes, chosen) if f)
             for chosen in itertools.product((False, True), repeat=len(axes))]
    transposes: tuple[bool, ...] = (False,)
    if tta == 'dihedral':
        _check_transpose(footprint, name)
        transposes = (False, True)
    return tuple(PatchTransform(f, t) for t in transposes for f in flips)


def _check_transpose(footprint: Footprint, name: str) -> None:
    """Raise a ShapeError unless the net's y and x axes can be swapped (see tta_transforms)."""
    if not {'y', 'x'} <= set(footprint.net_tags):
        raise ShapeError(f"tta='dihedral' transposes the in-plane axes y and x, but {name!r} "
                         f"has the spatial axes {','.join(footprint.net_tags)}; use "
                         f"tta='flips'")
    yx = {'patch': footprint.patch, 'outputs per patch': footprint.out,
          'strides': footprint.strides, 'field of view': footprint.fov}
    differ = [what for what, values in yx.items() if values[1] != values[2]]
    if differ:
        described = ', '.join(f"{what} {tuple(values[1:])}" for what, values in yx.items())
        raise ShapeError(f"tta='dihedral' transposes the in-plane axes y and x, but {name!r} "
                         f"differs along them in {' and '.join(differ)} ({described}, y,x): "
                         f"use tta='flips', or a net with a square in-plane patch "
                         f"(imposed_patch_size)")


def evaluate_patches(node: Node, footprint: Footprint, batch: np.ndarray,
                     settings: ExecutionSettings | None = None, tta: str = 'none') -> np.ndarray:
    """(b, c, z, y, x) float32 input patches -> (b, f, z, y, x) float32 outputs of ``node``.

    An input with a hardcoded batch size gets the batch padded to it. ``settings``: how
    the graph runs (precision, layout; default: :func:`.execution.resolve`). ``tta``:
    test-time augmentation (:func:`tta_transforms`; module docstring): the mean of the
    outputs of the transformed patches, transformed back, summed one transform at a time.
    """
    transforms = tta_transforms(footprint, tta, node.name)
    if len(transforms) == 1:
        return _evaluate(node, footprint, batch, settings)
    total = None
    for transform in transforms:
        out = transform.invert(_evaluate(node, footprint,
                                         np.ascontiguousarray(transform.apply(batch)), settings))
        if total is None:
            total = out.astype(np.float64)
        else:
            total += out
    assert total is not None
    total /= len(transforms)
    return total.astype(np.float32)


def _evaluate(node: Node, footprint: Footprint, batch: np.ndarray,
              settings: ExecutionSettings | None) -> np.ndarray:
    """:func:`evaluate_patches` without augmentation."""
    function = node.model.function([node], training=False)
    net = footprint.patch_to_net(batch)
    inp = function.inputs[0]
    fixed = inp.shape.batch_size if inp.hardcoded_shape else None
    if fixed is not None and len(net) != fixed:
        net = np.concatenate([net, np.zeros((fixed - len(net),) + net.shape[1:], net.dtype)])
    with torch.no_grad():
        out = function.numpy(net, settings=settings)[0][:len(batch)]
    return footprint.patch_from_net(out)


def evaluation_bytes(node: Node, batch_size: int, tta: str = 'none') -> int:
    """Peak float32 bytes of the node outputs held while ``node`` is evaluated for
    ``batch_size`` examples without gradients (max-fragment-pooling fragments included):
    the graph function drops each value after its last consumer
    (:func:`.traversal.release_schedule`), so the peak is the largest set of values alive
    at once, plus twice the output being computed for what operations allocate on the
    way (concatenated fragments, layout copies; measured on neuro3d MFP blocks within
    10 %). An input with a hardcoded batch size is always filled to it.

    With test-time augmentation (``tta`` other than 'none') the transforms are evaluated
    one after another, so the peak grows only by what lives across them: the transformed
    copy of the input and the float64 running sum of the outputs (two float32 outputs)."""
    inp = node.input_nodes[0]
    if inp.hardcoded_shape and inp.shape.batch_size is not None:
        batch_size = inp.shape.batch_size
    order = topological_order([node])
    size = {n: n.shape.n_fragments * n.shape.stripbatch_prod for n in order}
    live = peak = 0
    for n, done in zip(order, release_schedule(order, [node])):
        live += size[n]
        peak = max(peak, live + 2 * size[n])
        live -= sum(size[d] for d in done)
    if tta != 'none':
        peak += inp.shape.stripbatch_prod + 2 * size[node]
    return 4 * batch_size * peak


#: bytes of activations one evaluation of several patches may plan to hold (fewer patches
#: per evaluation where one patch's activations are large: a big U-Net gets one at a time)
BATCH_MEMORY = 2 ** 30


def patches_per_evaluation(node: Node, most: int, tta: str = 'none') -> int:
    """Patches evaluated together: ``most``, or fewer (at least one) where their
    activations (:func:`evaluation_bytes` with ``tta``) would exceed :data:`BATCH_MEMORY`."""
    return max(1, min(most, BATCH_MEMORY // max(1, evaluation_bytes(node, 1, tta))))


class PatchEvaluator:
    """What a block predictor needs to evaluate patches of ``node``: its footprint, the
    patches per evaluation (at most ``batch_size``, fewer for large activations), the
    ``precision`` (None: the config's) and the test-time augmentation ``tta``."""

    def __init__(self, node: Node, batch_size: int, precision: str | None = None,
                 tta: str = 'none'):
        self.node = node
        self.geometry = Footprint.of(node)
        self.tta = tta
        self.n_transforms = len(tta_transforms(self.geometry, tta, node.name))
        self.batch_size = patches_per_evaluation(node, batch_size, tta)
        self.precision = precision

    @property
    def settings(self) -> ExecutionSettings:
        """The execution settings of the next evaluation: ``precision`` (None: the
        config's), the rest from ``elektronn2.config`` as it is now."""
        return execution.resolve(self.node.model.device, precision=self.precision)


def useful_macs_per_voxel(node: Node) -> float:
    """Multiply-adds per output voxel of a dense evaluation of ``node`` without redundancy
    (no patch borders, no recomputation): each node's :attr:`~.Node.macs_per_input_position`
    once per position it works at; a node working at a coarser stride than ``node``'s
    output (a U-Net's lower levels) on a fraction of them. ``node``: the net as saved (a
    strided net's output stride says which positions a dense output needs)."""
    out_strides = node.shape.strides
    total = 0.0
    for n in topological_order([node]):
        if n.macs_per_input_position:
            coarser = math.prod(max(1.0, s / o) for s, o in
                                zip(n.parent.shape.strides, out_strides))
            total += n.macs_per_input_position / coarser
    return total


def predict_tile(node: Node, footprint: Footprint, raw: np.ndarray, tile: Sequence[int],
                 batch_size: int = 16, progress: bool = False,
                 settings: ExecutionSettings | None = None, tta: str = 'none') -> np.ndarray:
    """(f, *tile) float32 outputs of ``node`` for an output tile (data order z, y, x).

    Args:
        raw: (c, z, y, x) input covering ``footprint.tile_extent(tile)`` grown by
            ``footprint.context`` (integer data is scaled by :func:`.to_unit_float`).
        batch_size: patches per evaluation (an input with a hardcoded batch size sets it).
        settings: execution settings of the evaluations (see :func:`evaluate_patches`).
        tta: test-time augmentation of each patch (:func:`tta_transforms`).
    """
    tta_transforms(footprint, tta, node.name)  # refuse a bad request before any evaluation
    raw = to_unit_float(raw)
    inp = node.input_nodes[0]
    if inp.hardcoded_shape and inp.shape.batch_size is not None:
        batch_size = inp.shape.batch_size
    starts = footprint.patch_starts(tile)
    extent = footprint.tile_extent(tile)
    result = np.zeros((footprint.n_outputs,) + extent, np.float32)
    chunks = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
    for chunk in tqdm(chunks, desc=f'predict {node.name}', disable=not progress):
        batch = np.stack([raw[(slice(None),) + tuple(slice(p, p + n) for p, n in
                                                     zip(start, footprint.patch))] for start in chunk])
        for start, pred in zip(chunk, evaluate_patches(node, footprint, batch, settings, tta)):
            result[(slice(None),) + tuple(slice(p, p + o * s, s) for p, o, s in
                                          zip(start, footprint.out, footprint.strides))] = pred
    return result[(slice(None),) + tuple(slice(0, t) for t in tile)]


def predict_dense(node: Node, raw_img: np.ndarray, as_uint8: bool = False, pad_raw: bool = False,
                  batch_size: int | None = None, progress: bool = True,
                  tta: str = 'none') -> np.ndarray:
    """Dense outputs (f, *spatial) of ``node`` for a whole image.

    Axis convention: the network's own spatial tag order (ELEKTRONN2's), not data order.

    Args:
        node: output node with tags 'b,f' + the spatial axes of its single Input.
        raw_img: (ch, *spatial) image of any size (at least the field of view). For a
            2-D network a (ch, z, *spatial) stack is predicted slice by slice.
        as_uint8: return probabilities scaled to 0..255 as uint8.
        pad_raw: mirror-pad the image so the output covers all of it; otherwise the
            output covers the valid region (the image minus the network's borders).
        batch_size: patches per evaluation (default: one per output shift, at most 16,
            fewer for large activations: :func:`patches_per_evaluation`).
        tta: test-time augmentation, :data:`TTA_CHOICES`: 'none', 'flips' (the mean over
            all flips of the net's spatial axes) or 'dihedral' (also transposing y and x:
            the in-plane 90-degree rotations; needs a net alike along y and x). The
            outputs stay aligned to the same voxels (also for even fields of view); each
            channel is averaged as a scalar map (module docstring).
    """
    footprint = Footprint.of(node)
    transforms = tta_transforms(footprint, tta, node.name)
    raw = to_unit_float(raw_img)
    n_spatial = len(footprint.net_tags)
    stack = n_spatial == 2 and raw.ndim == n_spatial + 2
    if not stack and raw.ndim != n_spatial + 1 or raw.shape[0] != footprint.n_channels:
        raise ShapeError(f"raw_img has shape {raw.shape}; {node.name!r} needs "
                         f"({footprint.n_channels}, {', '.join(footprint.net_tags)}) with "
                         f"{footprint.n_channels} channel(s)")
    missing = 3 - n_spatial - stack   # data axes the image lacks: size 1
    volume = footprint.from_net(raw.reshape(raw.shape[:1] + (1,) * missing + raw.shape[1:]))
    before, after = footprint.context
    if pad_raw:
        volume = np.pad(volume, [(0, 0)] + list(zip(before, after)), mode='symmetric')
    tile = tuple(n - b for n, b in zip(volume.shape[1:], footprint.border))
    if min(tile) < 1:
        raise ShapeError(f"raw_img spatial shape {raw.shape[1:]} is smaller than the field of "
                         f"view {footprint.net_order(footprint.fov)} of {node.name!r} "
                         f"({','.join(footprint.net_tags)}); use pad_raw=True")
    needed = tuple(e + b for e, b in zip(footprint.tile_extent(tile), footprint.border))
    volume = np.pad(volume, [(0, 0)] + [(0, n - v) for n, v in zip(needed, volume.shape[1:])],
                    mode='symmetric')  # the last patches overhang the image: mirror it
    if batch_size is None:
        batch_size = patches_per_evaluation(node, min(int(np.prod(footprint.strides)), 16), tta)
    result = predict_tile(node, footprint, volume, tile, batch_size, progress, tta=tta)
    result = footprint.to_net(result)
    result = result.reshape(result.shape[:1] + result.shape[1 + missing:])
    logger.info("predict_dense %r: %s -> %s with %d evaluations", node.name, raw_img.shape,
                result.shape, footprint.evaluations(tile) * len(transforms))
    if as_uint8:
        return np.clip(np.round(result * 255), 0, 255).astype(np.uint8)
    return result
