"""Dense prediction of a whole image by tiling a (possibly strided) network.

A network with output stride S evaluated on a patch starting at input position
q gives outputs for the dense positions ``q + j * S`` (j < O, the output size),
where dense position d is centred at input coordinate ``offset + d``. Evaluating
all S shifts of a patch placement covers O * S consecutive dense positions; the
placements tile the image, starting on the grid of the network's internal
strides (so U-Nets pool as if the whole image were one patch), and the image is
mirrored at its end where the last tile reaches past it. With max-fragment
pooling (a FragmentsToDense output) S is 1 and one evaluation per placement
suffices.
"""
from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from tqdm import tqdm

from ..errors import GraphError, ShapeError

logger = logging.getLogger('elektronn2')


def as_float_image(raw: np.ndarray) -> np.ndarray:
    """float32 image; integer data is scaled to [0, 1] by its dtype's maximum."""
    raw = np.asarray(raw)
    if raw.dtype.kind in 'iu':
        return raw.astype(np.float32) / np.iinfo(raw.dtype).max
    if raw.dtype.kind == 'b':
        return raw.astype(np.float32)
    return raw.astype(np.float32, copy=False)


def _pooling_grid(node) -> np.ndarray:
    """Per spatial axis, the lcm of the strides of every node up to ``node``.

    Patches must start on this grid: a network that pools inside and up-samples
    again (a U-Net) gives outputs that depend on where its pooling windows lie.
    """
    from .node import topological_order
    grid = np.ones(len(node.shape.spatial_axes), dtype=int)
    for ancestor in topological_order([node]):
        if ancestor.shape.spatial_tags == node.shape.spatial_tags:
            grid = np.lcm(grid, np.array(ancestor.shape.strides, dtype=int))
    return grid


def _placements(dense: int, out: int, stride: int, grid: int) -> tuple[list[int], int]:
    """Patch starts along one axis covering ``dense`` outputs, and the dense extent they
    reach (at least ``dense``; the image is padded at the end to provide it).

    Tiles of ``out * stride`` outputs (rounded down to the pooling grid) start on the
    grid; each is evaluated at all ``stride`` shifts.
    """
    tile = (out * stride) // grid * grid
    if tile < 1:
        raise ShapeError(f"the output ({out} x stride {stride}) is smaller than the network's "
                         f"internal pooling grid {grid}: use a larger patch")
    bases = list(range(0, dense, tile))
    return [b + s for b in bases for s in range(stride)], bases[-1] + out * stride


def predict_dense(node, raw_img: np.ndarray, as_uint8: bool = False, pad_raw: bool = False,
                  batch_size: int | None = None, progress: bool = True) -> np.ndarray:
    """Dense class probabilities (f, *spatial) of ``node`` for a whole image.

    Args:
        node: output node with tags 'b,f' + the spatial axes of its single Input.
        raw_img: (ch, *spatial) image of any size (at least the input patch). For a
            2-D network a (ch, z, y, x) volume is predicted slice by slice.
        as_uint8: return probabilities scaled to 0..255 as uint8.
        pad_raw: mirror-pad the image so the output covers all of it; otherwise the
            output covers the valid region (the image minus the network's borders).
        batch_size: patches per evaluation (default: as many as there are shifts, at most 16).
    """
    inputs = node.input_nodes
    if len(inputs) != 1:
        raise GraphError(f"predict_dense of {node.name!r} needs exactly one input node, "
                         f"it depends on {[n.name for n in inputs]}")
    inp = inputs[0]
    in_sh, out_sh = inp.shape, node.shape
    if out_sh.mfp_pools:
        raise ShapeError(f"{node.name!r} still has max-fragment-pooling fragments on its batch "
                         f"axis: predict densely from a FragmentsToDense node after it")
    if out_sh.tags[:2] != ('b', 'f') or out_sh.spatial_tags != in_sh.spatial_tags:
        raise ShapeError(f"predict_dense needs an output tagged 'b,f' + {in_sh.spatial_tags}, "
                         f"{node.name!r} has {out_sh.tags}")
    raw = as_float_image(raw_img)
    n_sp = len(in_sh.spatial_axes)
    if raw.ndim == n_sp + 2 and n_sp == 2:
        slices = [predict_dense(node, raw[:, z], as_uint8, pad_raw, batch_size, progress=False)
                  for z in tqdm(range(raw.shape[1]), desc='predict_dense (slices)',
                                disable=not progress)]
        return np.stack(slices, axis=1)
    if raw.ndim != n_sp + 1 or raw.shape[0] != in_sh['f']:
        raise ShapeError(f"raw_img has shape {raw.shape}; {node.name!r} needs "
                         f"({in_sh['f']}, {', '.join(in_sh.spatial_tags)}) with {in_sh['f']} channel(s)")
    patch = np.array(in_sh.spatial_shape)
    out = np.array(out_sh.spatial_shape)
    stride = np.array(out_sh.strides)
    offsets = np.array(out_sh.offsets)
    if not all(float(o).is_integer() for o in offsets):
        raise ShapeError(f"{node.name!r} has half-voxel offsets {out_sh.offsets} (even fields "
                         f"of view): outputs do not sit on input voxels")
    offsets = offsets.astype(int)
    border = patch - (out - 1) * stride - 1  # input voxels around the outputs of a patch
    if pad_raw:
        pads = [(0, 0)] + [(int(o), int(b - o)) for o, b in zip(offsets, border)]
        raw = np.pad(raw, pads, mode='symmetric')
    dense = np.array(raw.shape[1:]) - border
    if np.any(dense < out * stride):
        raise ShapeError(f"raw_img spatial shape {raw.shape[1:]} is too small for dense "
                         f"prediction with patch {tuple(patch.tolist())} and output stride "
                         f"{tuple(stride.tolist())}: it needs at least "
                         f"{tuple((border + out * stride).tolist())} "
                         f"(or pad_raw=True)")
    per_axis = [_placements(int(d), int(o), int(s), int(g))
                for d, o, s, g in zip(dense, out, stride, _pooling_grid(node))]
    reach = np.array([r for _, r in per_axis])
    if np.any(reach > dense):  # the last tiles reach past the image: extend it at the end
        raw = np.pad(raw, [(0, 0)] + [(0, int(e)) for e in reach - dense], mode='symmetric')
    starts = list(itertools.product(*(p for p, _ in per_axis)))
    if batch_size is None:
        batch_size = min(int(np.prod(stride)), 16)
    if in_sh.batch_size is not None and inp.hardcoded_shape:
        batch_size = in_sh.batch_size
    result = np.zeros((out_sh['f'],) + tuple(int(r) for r in reach), dtype=np.float32)
    fn = node.model.function([node], training=False)
    chunks = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
    with torch.no_grad():
        for chunk in tqdm(chunks, desc=f'predict_dense {node.name}', disable=not progress):
            batch = np.stack([raw[(slice(None),) + tuple(slice(q, q + p) for q, p in zip(start, patch))]
                              for start in chunk])
            if len(chunk) < batch_size and inp.hardcoded_shape:
                batch = np.concatenate([batch, np.zeros((batch_size - len(chunk),) + batch.shape[1:],
                                                        batch.dtype)])
            pred = fn.numpy(batch)[0]
            for k, start in enumerate(chunk):
                region = (slice(None),) + tuple(slice(q, q + o * s, s)
                                                for q, o, s in zip(start, out, stride))
                result[region] = pred[k]
    result = result[(slice(None),) + tuple(slice(0, int(d)) for d in dense)]
    logger.info("predict_dense %r: %s -> %s with %d evaluations", node.name, raw_img.shape,
                result.shape, len(starts))
    if as_uint8:
        return np.clip(np.round(result * 255), 0, 255).astype(np.uint8)
    return result

