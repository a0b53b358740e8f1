"""Block predictors: how a model turns the input of one block into its class probabilities.

A block predictor has a :class:`~elektronn2.neuromancer.footprint.Footprint`, says which
input box an output box needs (:meth:`input_box`) and predicts ``(f, *out_box.shape)`` float32 from that
input (:meth:`predict`). Three back ends:

* ``'tiling'``: the model as saved, its patches placed over the block at every output
  shift of a strided net, on the grid of its internal strides
  (:func:`elektronn2.neuromancer.dense.predict_tile`, the tiler of ``predict_dense``).
* ``'mfp'``: the model rebuilt with max-fragment pooling and an input patch of one
  block (``modelload(override_mfp_to_active=True, imposed_patch_size=...)``): one
  evaluation gives the dense block.
* ``'patch'``: an exact net of output stride 1 (a valid U-Net) rebuilt with an input
  patch of one block (``modelload(imposed_patch_size=...)``), its output at least the
  block: one evaluation per block (per slice for a 2-D net) instead of one per saved
  patch, each of which recomputes the net's context (unet3d_lite: 4.5 times the useful
  multiply-adds with its saved patch, 1.2-1.3 with blocks of 32 x 252 x 252).
* ``'blend'``: overlapping windows merged with importance weights, for nets that pad
  inside ('same' convolutions); see :mod:`.blending`.

Choosing (:func:`resolve_spec`, ``mfp='auto'``, ``blend='auto'``):

1. A net that pads inside (not :attr:`.Footprint.exact`) is blended (Gaussian weights).
2. An exact net is rebuilt with an input patch of one block -- with max-fragment
   pooling ('mfp') if it is strided, without ('patch') if its output stride is 1 --
   when that needs fewer multiply-adds per output voxel than tiling its saved patch:
   tiling costs ``evaluations(block) * MACs(patch) / voxels(block)``, the rebuilt net
   ``evaluations(block) * MACs(block patch) / voxels(block)`` (one evaluation, or one
   per slice for a 2-D net). Tiling recomputes the net's context around every saved
   patch (and a strided net's lower layers once per output shift), so the rebuilt net
   wins for all but tiny blocks (measured on FIB-25 blocks: see benchmarks/RESULTS.md).
   ``mfp='off'`` tiles the saved patch; ``mfp='on'`` insists on max-fragment pooling
   (strided nets only). The decision is deterministic, so a resumed run repeats it; it
   is recorded in the output's attributes.

A :class:`PredictorSpec` is the resolved, picklable recipe; workers rebuild the
predictor from it (:func:`cached_predictor`). It carries the precision of the network's
evaluation (:func:`resolve_precision`: fp32 unless asked for bf16 or fp16), which the
predictor applies through the execution settings of graph evaluation
(:mod:`elektronn2.neuromancer.execution`), whatever process or thread runs it, and the
test-time augmentation (``tta``: 'none', 'flips' or 'dihedral',
:func:`elektronn2.neuromancer.dense.tta_transforms`): every back end evaluates each
patch or window under every transform in turn and averages the outputs transformed back.
With 'dihedral' blocks are square in-plane (y and x the larger of the two), so that a
max-fragment-pooled block patch can be transposed.

Models are loaded without touching the caller's current model (:func:`load_model`);
each load builds its nodes in a scope of its own, so threads may load at once. The
predictor cache builds each predictor once, under a lock (:func:`cached_predictor`).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from ..config import config
from ..errors import ConfigError, ModelFileError, ShapeError
from ..neuromancer import execution
from ..neuromancer.dense import (
    PatchEvaluator,
    evaluation_bytes,
    predict_tile,
    tta_transforms,
)
from ..neuromancer.footprint import Footprint
from ..neuromancer.loading import modelload
from .blending import BlendingPredictor
from .geometry import Box
from .options import BLEND_CHOICES, MFP_CHOICES

if TYPE_CHECKING:
    from ..neuromancer.node import Node
    from .ensemble import EnsembleSpec

logger = logging.getLogger('elektronn2')


#: back ends that rebuild the model with an input patch of one block
REBUILT_BACKENDS = ('mfp', 'patch')

#: held while a predictor is built or looked up, so that threads asking at once share one
_CACHE_LOCK = threading.Lock()
#: held while a model is loaded or looked up (load_model)
_MODEL_LOCK = threading.Lock()


class BlockPredictor(Protocol):
    """Predicts one block with ``node`` (a prediction node); see the module docstring."""
    node: Node
    geometry: Footprint

    def input_box(self, out_box: Box) -> Box:
        """The input voxels (volume coordinates, may lie outside the volume) ``out_box`` needs."""

    def predict(self, raw: np.ndarray, out_box: Box) -> np.ndarray:
        """(c, *input_box(out_box).shape) raw -> (f, *out_box.shape) float32 probabilities."""

    def activation_bytes(self, out_box: Box) -> int:
        """Bytes of the network activations while predicting ``out_box``."""

    def executed_macs(self, out_box: Box) -> int:
        """Multiply-adds the network executes to predict ``out_box``."""


def load_model(path: str | os.PathLike, **modelload_args):
    """``nm.modelload`` that leaves the caller's current model current (thread-safe).

    The last few models loaded are kept (keyed by the file's content and the arguments):
    planning asks for the same rebuilt nets many times. The models are shared, for
    reading and evaluating only."""
    key = tuple(sorted((name, tuple(value) if isinstance(value, list) else value)
                       for name, value in modelload_args.items()))
    try:
        digest = model_digest(path)
    except OSError:     # missing or unreadable: modelload names the problem
        digest = ''
    with _MODEL_LOCK:
        return _loaded_model(str(path), digest, key)


@functools.lru_cache(maxsize=4)
def _loaded_model(path: str, digest: str, key: tuple):
    model = modelload(path, make_current=False, **dict(key))
    if model.prediction_node is None:
        raise ConfigError(f"Model file {path} designates no prediction_node; save a model "
                          f"after model.designate_nodes(prediction_node=...)")
    return model


def model_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a model file (zip) or of the files of a model directory."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob('*') if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else '').encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


class TilingPredictor(PatchEvaluator):
    """Exact tiling of a valid-convolution net over a block (strided or MFP model).

    Patch placements follow :meth:`.Footprint.patch_starts` (phase-aligned, every output
    shift); each output voxel is written by the patch that computes it
    (:func:`elektronn2.neuromancer.dense.predict_tile`). ``tta``: test-time augmentation
    of every patch (:func:`elektronn2.neuromancer.dense.tta_transforms`).
    """

    def __init__(self, node: Node, batch_size: int = 16, precision: str | None = None,
                 tta: str = 'none'):
        super().__init__(node, batch_size, precision, tta)
        if not self.geometry.exact:
            raise ShapeError(f"{node.name!r} pads inside the network ('same' convolutions): "
                             f"tiles would show seams; use blending (blend='gaussian')")

    def input_box(self, out_box: Box) -> Box:
        extent = self.geometry.tile_extent(out_box.shape)
        return Box.from_shape(extent, out_box.lo).grow(*self.geometry.context)

    def predict(self, raw: np.ndarray, out_box: Box) -> np.ndarray:
        return predict_tile(self.node, self.geometry, raw, out_box.shape, self.batch_size,
                            settings=self.settings, tta=self.tta)

    def activation_bytes(self, out_box: Box) -> int:
        evaluations = self.geometry.evaluations(out_box.shape)
        return evaluation_bytes(self.node, min(self.batch_size, evaluations), self.tta)

    def executed_macs(self, out_box: Box) -> int:
        return (self.n_transforms * self.geometry.evaluations(out_box.shape)
                * self.node.all_computational_cost)


@dataclass(frozen=True)
class PredictorSpec:
    """A resolved recipe for a block predictor (picklable, recorded in outputs).

    Args:
        model_path: the model file.
        backend: 'tiling', 'mfp', 'patch' or 'blend'.
        patch: for 'mfp' and 'patch', the imposed input patch in the network's axis order.
        blend_mode, overlap: for 'blend', importance weights and window overlap.
        region: for 'blend', the output region the window grid covers.
        precision: 'fp32', 'bf16' or 'fp16' (autocast): how the network is evaluated
            (:func:`resolve_precision`); outputs are float32 in every precision.
        tta: test-time augmentation, 'none', 'flips' or 'dihedral'
            (:func:`elektronn2.neuromancer.dense.tta_transforms`).
    """
    model_path: str
    backend: str
    patch: tuple[int, ...] | None = None
    blend_mode: str | None = None
    overlap: float | None = None
    region: Box | None = None
    precision: str = 'fp32'
    tta: str = 'none'

    @property
    def model_paths(self) -> tuple[str, ...]:
        return (self.model_path,)

    @property
    def grows_with_block(self) -> bool:
        """Whether the activations grow with the block (one patch covering it)."""
        return self.backend in REBUILT_BACKENDS

    def build(self) -> BlockPredictor:
        if self.backend in REBUILT_BACKENDS:
            model = load_model(self.model_path, override_mfp_to_active=self.backend == 'mfp',
                               imposed_patch_size=self.patch)
        else:
            model = load_model(self.model_path)
        if self.backend in ('tiling',) + REBUILT_BACKENDS:
            return TilingPredictor(model.prediction_node, precision=self.precision,
                                   tta=self.tta)
        if self.region is None or self.blend_mode is None or self.overlap is None:
            raise ConfigError(f"PredictorSpec backend {self.backend!r} needs region, blend_mode "
                              f"and overlap (resolve_spec sets them); got {self}")
        return BlendingPredictor(model.prediction_node, self.region, self.blend_mode, self.overlap,
                                 precision=self.precision, tta=self.tta)

    def describe(self) -> dict:
        """JSON-able description (without the path), for manifests and logs."""
        out = {k: v for k, v in asdict(self).items() if k != 'model_path' and v is not None}
        if self.region is not None:
            out['region'] = [list(self.region.lo), list(self.region.hi)]
        if self.patch is not None:
            out['patch'] = list(self.patch)
        return out


@functools.lru_cache(maxsize=2)
def _built_predictor(spec: PredictorSpec | EnsembleSpec) -> BlockPredictor:
    return spec.build()


def cached_predictor(spec: PredictorSpec | EnsembleSpec) -> BlockPredictor:
    """The predictor of ``spec``, built once per process, also when threads ask at once."""
    with _CACHE_LOCK:
        return _built_predictor(spec)


def _rebuilt_spec(model_path: str, geometry: Footprint, block_shape: Sequence[int],
                  mfp: bool) -> tuple[PredictorSpec, Footprint, int, tuple[int, ...]]:
    """The model rebuilt with an input patch that covers one block, with max-fragment
    pooling (``mfp``) or without: (spec, its geometry, MACs per evaluation, the block
    shape it predicts). MFP blocks are the rebuilt net's output (snapped to a size it
    accepts); 'patch' blocks are multiples of the net's internal stride (so that blocks
    keep its pooling phase), the patch grown until its output covers the block."""
    target = tuple(block_shape) if mfp else _aligned(block_shape, geometry.phase)
    wanted = [b + c for b, c in zip(target, geometry.border)]
    if not mfp:  # a stride-1 net's valid sizes repeat with its internal stride: ask for
        # the saved patch grown by whole strides, which spares the loader its search
        wanted = [p + -(-(w - p) // q) * q for w, p, q in zip(wanted, geometry.patch,
                                                               geometry.phase)]
    checked = range(1, 3) if geometry.planar else range(3)  # a 2-D net: any z
    for _ in range(4):
        patch = geometry.net_order(wanted)
        try:
            model = load_model(model_path, override_mfp_to_active=mfp, imposed_patch_size=patch)
        except ModelFileError as err:  # the file loaded as saved: its size limits refuse it
            raise ShapeError(f"block_shape={tuple(block_shape)} (--block-shape) needs an "
                             f"{'MFP ' if mfp else ''}input patch {patch}: {err}") from None
        rebuilt = Footprint.of(model.prediction_node)
        short = {axis: max(target[axis] - rebuilt.out[axis], 0) for axis in checked}
        if mfp or not any(short.values()):
            break
        for axis, missing in short.items():
            wanted[axis] += missing
    node = model.prediction_node
    snapped = tuple(node.input_nodes[0].shape.spatial_shape)
    block = ((block_shape[0],) + rebuilt.out[1:] if geometry.planar else rebuilt.out) \
        if mfp else target
    return (PredictorSpec(model_path, 'mfp' if mfp else 'patch', patch=snapped), rebuilt,
            node.all_computational_cost, block)


def resolve_precision(precision: str | None = None) -> str:
    """The precision ('fp32', 'bf16' or 'fp16') in which prediction evaluates the network.

    ``precision``: 'auto', 'fp32', 'bf16' or 'fp16', or None for ``config.precision``;
    resolved by the rules of graph evaluation (:func:`elektronn2.neuromancer.execution.resolve`,
    whose 'auto' means fp32 for prediction) on ``config``'s device. 'bf16' and 'fp16'
    run the network under autocast; probabilities come back as float32 and differ from
    fp32 ones by bf16 rounding (the trained FIB-25 boundary nets: 1.5e-3 on average, at
    most 0.07; ``benchmarks/RESULTS.md``). bf16 is fast only on hardware with bf16 matrix
    units, elsewhere it warns; fp16 is meant for GPUs; on a CPU it runs (as graph
    evaluation does) but only bf16 is fast there.
    """
    device = config.torch_device
    resolved = execution.resolve(device, precision=precision).precision
    if resolved == 'fp16' and device.type == 'cpu':
        logger.warning("Precision fp16 on the CPU: it runs, but CPUs compute fp16 slowly "
                       "(slower than fp32 here); bf16 is the fast reduced precision on CPUs")
    elif resolved == 'bf16' and not execution.has_native_bf16(device):
        logger.warning("Precision bf16 on %s, which has no bf16 matrix units (AMX or "
                       "AVX512-BF16 on CPUs, compute capability 8.0 on GPUs): it runs, but "
                       "emulated, slower than fp32 (about half its speed on a CPU, "
                       "benchmarks/RESULTS.md)", device)
    return resolved


def resolve_spec(model_path: str | os.PathLike, block_shape: Sequence[int], region: Box,
                 mfp: str = 'auto', blend: str = 'auto', overlap: float = 0.25,
                 precision: str | None = None,
                 tta: str = 'none') -> tuple[PredictorSpec, tuple[int, ...]]:
    """Choose the back end (module docstring) and the block shape it works with.

    Args:
        model_path: a model saved by ``Model.save``.
        block_shape: requested output block (z, y, x); MFP snaps it to a size the
            network accepts.
        region: output region (volume coordinates) of the whole prediction.
        mfp: 'auto', 'on' or 'off'. blend: 'auto', 'off', 'constant' or 'gaussian'.
        overlap: fraction of a window shared with its neighbour when blending.
        precision: see :func:`resolve_precision`.
        tta: test-time augmentation, 'none', 'flips' or 'dihedral'
            (:func:`elektronn2.neuromancer.dense.tta_transforms`; refused here when the
            net does not allow it); with 'dihedral' the block is made square in-plane.
    Returns:
        (spec, block shape (z, y, x)).
    """
    precision = resolve_precision(precision)
    spec, block = _choose_backend(model_path, block_shape, region, mfp, blend, overlap, tta)
    return replace(spec, precision=precision, tta=tta), block


def _choose_backend(model_path: str | os.PathLike, block_shape: Sequence[int], region: Box,
                    mfp: str, blend: str, overlap: float,
                    tta: str = 'none') -> tuple[PredictorSpec, tuple[int, ...]]:
    """:func:`resolve_spec` but for the precision and tta (defaults in the spec returned);
    ``tta`` is checked against the net (and its MFP version) and squares the block."""
    if mfp not in MFP_CHOICES:
        raise ConfigError(f"mfp={mfp!r}; valid: {MFP_CHOICES}")
    if blend not in BLEND_CHOICES:
        raise ConfigError(f"blend={blend!r}; valid: {BLEND_CHOICES}")
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap={overlap}; it must be in [0, 1)")
    model_path = str(Path(model_path).resolve())
    node = load_model(model_path).prediction_node
    geometry = Footprint.of(node)
    block_shape = tuple(int(b) for b in block_shape)
    if any(t.transpose for t in tta_transforms(geometry, tta, node.name)):
        block_shape = _square_in_plane(block_shape)
    if blend != 'off' and (blend != 'auto' or not geometry.exact):
        if any(s != 1 for s in geometry.strides):
            raise ShapeError(f"Blending needs an output stride of 1; the net has strides "
                             f"{geometry.strides} (z,y,x): use blend='off'")
        mode = 'gaussian' if blend == 'auto' else blend
        return PredictorSpec(model_path, 'blend', blend_mode=mode, overlap=float(overlap),
                             region=region), block_shape
    tiling = PredictorSpec(model_path, 'tiling')
    strided = any(s > 1 for s in geometry.strides)
    if mfp == 'on' and not strided:
        raise ConfigError(f"mfp='on' but the net in {model_path} has output stride 1: there "
                          f"is nothing to fragment; use mfp='auto' or 'off'")
    tiling_block = _aligned(block_shape, geometry.phase)
    if mfp == 'off':
        return tiling, tiling_block
    kind = 'max-fragment pooling' if strided else 'an input patch of one block'
    try:
        spec, rebuilt, rebuilt_macs, rebuilt_block = _rebuilt_spec(model_path, geometry,
                                                                   block_shape, strided)
        tta_transforms(rebuilt, tta, f"{node.name} ({spec.backend})")
    except ShapeError as err:
        if mfp == 'on':
            raise
        logger.warning("%s is not possible for %s (%s); tiling instead", kind.capitalize(),
                       model_path, err)
        return tiling, tiling_block
    if mfp == 'on':
        return spec, rebuilt_block
    tiling_cost = (geometry.evaluations(tiling_block) * node.all_computational_cost
                   / np.prod(tiling_block))
    rebuilt_cost = rebuilt.evaluations(rebuilt_block) * rebuilt_macs / np.prod(rebuilt_block)
    logger.info("MACs per output voxel: tiling %.4g (block %s), %s %.4g (block %s)",
                tiling_cost, tiling_block, kind, rebuilt_cost, rebuilt_block)
    return (spec, rebuilt_block) if rebuilt_cost < tiling_cost else (tiling, tiling_block)


def _square_in_plane(block_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(z, y, x) with y and x the larger of the two: a block that can be transposed."""
    z, y, x = block_shape
    if y != x:
        logger.info("Block shape %s made square in-plane for tta='dihedral' (y and x are "
                    "transposed)", block_shape)
    return z, max(y, x), max(y, x)


def _aligned(block_shape: Sequence[int], phase: Sequence[int]) -> tuple[int, ...]:
    """Block shape rounded up to multiples of the net's phase (blocks start on its grid)."""
    aligned = tuple(-(-b // q) * q for b, q in zip(block_shape, phase))
    if aligned != tuple(block_shape):
        logger.info("Block shape %s rounded up to %s, a multiple of the net's internal "
                       "stride %s", tuple(block_shape), aligned, tuple(phase))
    return aligned
