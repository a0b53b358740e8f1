"""Dense prediction by tiling a (possibly strided) network over an image.

A network with output stride S evaluated on a patch starting at input position q gives
outputs for the dense positions ``q + j * S`` (j < out), where dense position d is centred
at input coordinate ``offsets + d``. :func:`predict_tile` evaluates every patch start of
:meth:`.Footprint.patch_starts` (bases on the phase grid, every shift below S) and writes
each output voxel from the patch that computes it; with max-fragment pooling (a
FragmentsToDense output) S is 1 and one evaluation per placement suffices.
:func:`predict_dense` is the whole-image call of ELEKTRONN2's API; blockwise prediction
(:mod:`elektronn2.inference`) calls :func:`predict_tile` per block.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ShapeError
from .execution import ExecutionSettings
from .footprint import Footprint, to_unit_float
from .traversal import release_schedule, topological_order

if TYPE_CHECKING:
    from .node import Node

logger = logging.getLogger('elektronn2')


def evaluate_patches(node: Node, footprint: Footprint, batch: np.ndarray,
                     settings: ExecutionSettings | None = None) -> np.ndarray:
    """(b, c, z, y, x) float32 input patches -> (b, f, z, y, x) float32 outputs of ``node``.

    An input with a hardcoded batch size gets the batch padded to it. ``settings``: how
    the graph runs (precision, layout; default: :func:`.execution.resolve`).
    """
    function = node.model.function([node], training=False)
    net = footprint.patch_to_net(batch)
    inp = function.inputs[0]
    fixed = inp.shape.batch_size if inp.hardcoded_shape else None
    if fixed is not None and len(net) != fixed:
        net = np.concatenate([net, np.zeros((fixed - len(net),) + net.shape[1:], net.dtype)])
    with torch.no_grad():
        out = function.numpy(net, settings=settings)[0][:len(batch)]
    return footprint.patch_from_net(out)


def evaluation_bytes(node: Node, batch_size: int) -> int:
    """Peak float32 bytes of the node outputs held while ``node`` is evaluated for
    ``batch_size`` examples without gradients (max-fragment-pooling fragments included):
    the graph function drops each value after its last consumer
    (:func:`.traversal.release_schedule`), so the peak is the largest set of values alive
    at once, plus twice the output being computed for what operations allocate on the
    way (concatenated fragments, layout copies; measured on neuro3d MFP blocks within
    10 %). An input with a hardcoded batch size is always filled to it."""
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
    return 4 * batch_size * peak


#: bytes of activations one evaluation of several patches may plan to hold (fewer patches
#: per evaluation where one patch's activations are large: a big U-Net gets one at a time)
BATCH_MEMORY = 2 ** 30


def patches_per_evaluation(node: Node, most: int) -> int:
    """Patches evaluated together: ``most``, or fewer (at least one) where their
    activations (:func:`evaluation_bytes`) would exceed :data:`BATCH_MEMORY`."""
    return max(1, min(most, BATCH_MEMORY // max(1, evaluation_bytes(node, 1))))


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
                 settings: ExecutionSettings | None = None) -> np.ndarray:
    """(f, *tile) float32 outputs of ``node`` for an output tile (data order z, y, x).

    Args:
        raw: (c, z, y, x) input covering ``footprint.tile_extent(tile)`` grown by
            ``footprint.context`` (integer data is scaled by :func:`.to_unit_float`).
        batch_size: patches per evaluation (an input with a hardcoded batch size sets it).
        settings: execution settings of the evaluations (see :func:`evaluate_patches`).
    """
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
        for start, pred in zip(chunk, evaluate_patches(node, footprint, batch, settings)):
            result[(slice(None),) + tuple(slice(p, p + o * s, s) for p, o, s in
                                          zip(start, footprint.out, footprint.strides))] = pred
    return result[(slice(None),) + tuple(slice(0, t) for t in tile)]


def predict_dense(node: Node, raw_img: np.ndarray, as_uint8: bool = False, pad_raw: bool = False,
                  batch_size: int | None = None, progress: bool = True) -> np.ndarray:
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
    """
    footprint = Footprint.of(node)
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
        batch_size = patches_per_evaluation(node, min(int(np.prod(footprint.strides)), 16))
    result = predict_tile(node, footprint, volume, tile, batch_size, progress)
    result = footprint.to_net(result)
    result = result.reshape(result.shape[:1] + result.shape[1 + missing:])
    logger.info("predict_dense %r: %s -> %s with %d evaluations", node.name, raw_img.shape,
                result.shape, footprint.evaluations(tile))
    if as_uint8:
        return np.clip(np.round(result * 255), 0, 255).astype(np.uint8)
    return result
