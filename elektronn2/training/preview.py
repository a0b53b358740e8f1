"""Preview predictions during training: dense predictions of a fixed volume as PNG images.

``preview_data_path`` names an HDF5 file (every top-level dataset is a preview cube,
as in ELEKTRONN2) or ``(file, key)`` (one dataset); each cube is (z, y, x) or
(ch, z, y, x). ``preview_kwargs`` (:func:`preview_options`): ``export_class`` ('all',
a class index or a list of them) and ``max_z_pred`` (number of z slices predicted, the
central ones); ELEKTRONN2's ``number`` is accepted and left to the caller (the trainer
labels previews by step).

A preview is predicted with the block predictors of :mod:`elektronn2.inference`: a
strided net is rebuilt with max-fragment pooling and an input patch of one block
(:func:`~elektronn2.neuromancer.loading.rebuild_model`), so one evaluation gives a dense
block; a stride-1 net is tiled (blended if it pads inside). The region is predicted in
blocks of :data:`BLOCK_YX` pixels per slice; between blocks the preview stops (raising
:class:`PreviewStopped`) when asked to or when it runs over its time budget.

Each exported class gets one PNG at full resolution: per slice the raw image beside the
prediction, a colour bar, class and step in the title. Previews can be made with any
prediction node (a model stands for its ``prediction_node``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import h5py
import numpy as np

from .. import neuromancer as nm
from ..data.sources import first_nonfinite, hdf5_dataset_keys, open_source, require_real
from ..errors import ConfigError, DataError, ShapeError
from ..inference.blending import BlendingPredictor
from ..inference.blockwise import read_mirrored
from ..inference.geometry import BlockGrid, Box
from ..inference.predictors import TilingPredictor
from ..neuromancer.footprint import Footprint
from ..neuromancer.loading import quiet_snapping, rebuild_model
from ..neuromancer.node import Node

logger = logging.getLogger('elektronn2')

BLOCK_YX = 256          # output pixels per block along y and x
BLOCK_VOXELS = 2 ** 17  # output voxels per block (bounds the memory and the time between stops)
_MARGIN, _GAP, _TITLE, _BAR = 60, 8, 36, 70   # figure layout in pixels


class PreviewStopped(Exception):
    """A preview stopped before its end (Ctrl+C or over its time budget)."""


#: preview_kwargs keys: ours, and ELEKTRONN2's ``number`` (a file label, set by the caller)
PREVIEW_KWARGS = ('export_class', 'max_z_pred', 'number')


def preview_options(preview_kwargs: dict | None) -> dict:
    """``export_class`` and ``max_z_pred`` of ELEKTRONN2-style ``preview_kwargs``; a class
    index becomes a list of one; ``number`` is dropped; other keys are a ConfigError."""
    kwargs = dict(preview_kwargs or {})
    unknown = sorted(set(kwargs) - set(PREVIEW_KWARGS))
    if unknown:
        raise ConfigError(f"preview_kwargs has unknown keys {unknown}; valid: "
                          f"{', '.join(PREVIEW_KWARGS)}")
    export = kwargs.get('export_class', 'all')
    if isinstance(export, (int, np.integer)) and not isinstance(export, bool):
        export = [int(export)]
    if export != 'all' and not (isinstance(export, (list, tuple)) and all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0
            for c in export)):
        raise ConfigError(f"preview_kwargs['export_class']={export!r} must be 'all', a class "
                          f"index or a list of them, e.g. [1]")
    max_z = kwargs.get('max_z_pred', 5)
    if isinstance(max_z, bool) or not isinstance(max_z, (int, np.integer)) or max_z < 1:
        raise ConfigError(f"preview_kwargs['max_z_pred']={max_z!r} must be an int >= 1")
    return {'export_class': export if export == 'all' else [int(c) for c in export],
            'max_z_pred': int(max_z)}


def load_preview_volume(spec, model=None, preview_kwargs: dict | None = None
                        ) -> list[np.ndarray]:
    """The preview cubes (each ch, z, y, x) of ``spec``: every top-level dataset of an
    HDF5 file, or ``(file, key)`` (a key or a list of keys). Clear errors for missing
    files or keys and for volumes that are not real numbers or hold NaN/Inf. With
    ``model``, also :func:`check_preview` of each (a ConfigError for a cube the net
    cannot preview)."""
    path, key = (spec[0], spec[1]) if isinstance(spec, (tuple, list)) else (spec, None)
    if not os.path.isfile(path):
        raise DataError(f"Preview file {path!r} (preview_data_path) does not exist")
    try:
        file = h5py.File(path, 'r')
    except OSError as err:
        raise DataError(f"Preview file {path!r} (preview_data_path) cannot be read as HDF5: "
                        f"{err}") from None
    with file as f:
        if key is None:
            keys = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            if not keys:
                raise DataError(f"Preview file {path!r} has no top-level dataset; give "
                                f"preview_data_path = ({path!r}, 'key')")
        else:
            keys = [key] if isinstance(key, str) else list(key)
        volumes = [_read_preview_cube(f, path, k) for k in keys]
    if model is not None:
        for volume in volumes:
            check_preview(volume, model, **preview_options(preview_kwargs))
    return volumes


def _read_preview_cube(f: h5py.File, path: str, key: str) -> np.ndarray:
    """Dataset ``key`` of the open preview file as (ch, z, y, x), checked."""
    if not isinstance(f.get(key), h5py.Dataset):
        raise DataError(f"Preview file {path!r} has no dataset {key!r}; its datasets are: "
                        f"{', '.join(hdf5_dataset_keys(f)) or '(none)'}")
    require_real(f"{path}:{key}", f[key].dtype, 'Preview volume')
    volume = f[key][()]
    if volume.ndim == 3:
        volume = volume[None]
    if volume.ndim != 4:
        raise DataError(f"Preview volume {path!r}:{key} has shape {volume.shape}; expected "
                        f"(z, y, x) or (ch, z, y, x)")
    bad = first_nonfinite(volume)
    if bad is not None:
        raise DataError(f"Preview volume {path!r}:{key} holds {volume[bad]} at (ch,z,y,x) {bad}; "
                        f"NaN/Inf cannot be predicted on")
    return volume


def prediction_node(model_or_node) -> Node:
    """The node previews predict with: a node itself, or a model's ``prediction_node``."""
    return model_or_node if isinstance(model_or_node, Node) else model_or_node.prediction_node


def export_classes(export_class, n_outputs: int) -> list[int]:
    """The class indices of ``export_class`` ('all', an index or a list) for a net with
    ``n_outputs`` outputs."""
    if export_class == 'all':
        return list(range(n_outputs))
    return [int(export_class)] if isinstance(export_class, (int, np.integer)) else \
        [int(c) for c in export_class]


def check_preview(volume: np.ndarray, model, export_class='all', max_z_pred: int = 5) -> None:
    """A ConfigError when ``model`` (or a prediction node) cannot preview ``volume``
    (ch, z, y, x): channels that differ from the net's input, a volume smaller than its
    field of view, or export classes it does not have."""
    try:
        geometry = Footprint.of(prediction_node(model))
    except ShapeError as err:
        raise ConfigError(f"preview_data_path is set, but the net cannot predict volumes: "
                          f"{err}") from None
    if volume.shape[0] != geometry.n_channels:
        raise ConfigError(f"The preview volume has {volume.shape[0]} channel(s) (ch, z, y, x "
                          f"shape {volume.shape}); the net's input has {geometry.n_channels}")
    try:
        geometry.check_volume(volume.shape[1:], 'The preview volume (preview_data_path)')
    except ShapeError as err:
        raise ConfigError(f"{err}; give a larger preview volume") from None
    unknown = [c for c in export_classes(export_class, geometry.n_outputs)
               if c >= geometry.n_outputs]
    if unknown:
        raise ConfigError(f"preview_kwargs['export_class'] names classes {unknown}; the net "
                          f"predicts {geometry.n_outputs} (0..{geometry.n_outputs - 1})")


def preview_region(zyx: Sequence[int], max_z_pred: int) -> Box:
    """The output box of a preview: the central ``max_z_pred`` slices (z, y, x) of a
    volume of spatial shape ``zyx``."""
    n_z = min(max_z_pred, zyx[0])
    return Box.from_shape((n_z,) + tuple(zyx[1:]), ((zyx[0] - n_z) // 2, 0, 0))


@contextlib.contextmanager
def _side_model(build: Callable[[], object]) -> Iterator[object]:
    """A model built by ``build`` (which leaves the current model alone) for the ``with``
    block; it is forgotten after."""
    model = build()
    try:
        yield model
    finally:
        nm.model_manager.discard(model)


def _rebuild_mfp(model, block_shape: Sequence[int]):
    """``model`` rebuilt with max-fragment pooling and an input patch whose output covers
    ``block_shape`` (z, y, x; a 2-D net: y, x): the patch is raised until the size the
    net snaps it to is large enough (quietly: no model summaries, no snapping notes)."""
    geometry = Footprint.of(model.prediction_node)
    request = [b + c for b, c in zip(block_shape, geometry.border)]
    with quiet_snapping():
        for _ in range(8):
            mfp = rebuild_model(model, override_mfp_to_active=True, make_current=False,
                                imposed_patch_size=geometry.net_order(request))
            out = Footprint.of(mfp.prediction_node).out
            if all(o >= b for o, b in zip(geometry.net_order(out),
                                          geometry.net_order(block_shape))):
                return mfp
            nm.model_manager.discard(mfp)
            request = [r + max(b - o, 0) for r, b, o in zip(request, block_shape, out)]
    raise ShapeError(f"no max-fragment-pooling input patch found whose output covers a "
                     f"preview block of {tuple(block_shape)} (z, y, x)")


def preview_block_shape(region: Box) -> tuple[int, int, int]:
    """Blocks of at most :data:`BLOCK_YX` pixels along y and x and about
    :data:`BLOCK_VOXELS` output voxels: the units a preview stops between."""
    y, x = (min(n, BLOCK_YX) for n in region.shape[1:])
    return max(1, min(region.shape[0], BLOCK_VOXELS // (y * x))), y, x


@contextlib.contextmanager
def preview_predictor(model, region: Box, block_shape: Sequence[int]) -> Iterator[object]:
    """The block predictor (:mod:`elektronn2.inference.predictors`) of a preview with
    ``model`` (or a prediction node) of ``region`` in blocks of ``block_shape`` (z, y, x);
    see the module docstring."""
    node = prediction_node(model)
    geometry = Footprint.of(node)
    if not geometry.exact:
        yield BlendingPredictor(node, region)
    elif all(s == 1 for s in geometry.strides) or node is not node.model.prediction_node:
        yield TilingPredictor(node)   # (max-fragment pooling applies to the designated node)
    else:
        with _side_model(lambda: _rebuild_mfp(node.model, block_shape)) as mfp:
            yield TilingPredictor(mfp.prediction_node)


def predict_preview(model, volume: np.ndarray, region: Box,
                    should_stop: Callable[[], bool] = lambda: False,
                    max_seconds: float = math.inf) -> np.ndarray:
    """(f, *region.shape) probabilities of ``region`` (z, y, x) of ``volume`` (ch, z, y, x),
    voxels outside the volume mirrored. Raises PreviewStopped between blocks when
    ``should_stop()`` or after ``max_seconds``."""
    deadline = time.monotonic() + max_seconds
    block_shape = preview_block_shape(region)
    grid = BlockGrid(region, block_shape)
    source = open_source(volume)
    with preview_predictor(model, region, block_shape) as predictor:
        result = np.zeros((predictor.geometry.n_outputs,) + region.shape, np.float32)
        for i, block in enumerate(grid):
            if should_stop():
                raise PreviewStopped(f"interrupted after {i} of {len(grid)} blocks")
            if time.monotonic() > deadline:
                raise PreviewStopped(
                    f"over its time budget of {max_seconds:.3g} s after {i} of {len(grid)} "
                    f"blocks; a longer prev_save_h or a smaller preview volume allows it")
            pred = predictor.predict(read_mirrored(source, predictor.input_box(block.compute)),
                                     block.compute)
            result[(slice(None),) + block.write.slices_in(region)] = \
                pred[(slice(None),) + block.write.slices_in(block.compute)]
    return result


def _figure_layout(n_z: int, height: int, width: int) -> tuple[tuple[int, int], list]:
    """Figure size (w, h) in pixels and, per slice, the (raw, prediction) axes boxes
    (left, bottom, width, height) in pixels, so that every image pixel is one figure
    pixel; the colour bar goes right of the last column."""
    fig_w = _MARGIN + 2 * width + _GAP + _BAR
    fig_h = _TITLE + n_z * height + (n_z - 1) * _GAP + _GAP
    boxes = []
    for z in range(n_z):
        bottom = fig_h - _TITLE - (z + 1) * height - z * _GAP
        boxes.append(((_MARGIN, bottom, width, height),
                      (_MARGIN + width + _GAP, bottom, width, height)))
    return (fig_w, fig_h), boxes


def write_preview_png(raw: np.ndarray, pred: np.ndarray, path: Path, title: str,
                      z_indices: Sequence[int]) -> None:
    """PNG of raw (z, y, x) beside pred (z, y, x) in [0, 1], one row per slice, at full
    resolution with a colour bar for pred; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    dpi = 100
    (fig_w, fig_h), boxes = _figure_layout(*pred.shape)
    figure = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    figure.suptitle(title, y=1 - 8 / fig_h, va='top', fontsize=11)

    def axes_at(box):
        left, bottom, w, h = box
        axes = figure.add_axes((left / fig_w, bottom / fig_h, w / fig_w, h / fig_h))
        axes.set_axis_off()
        return axes
    low, high = np.percentile(raw, (0.5, 99.5)) if raw.size else (0, 1)
    for z, (raw_box, pred_box) in enumerate(boxes):
        axes_at(raw_box).imshow(raw[z], cmap='gray', vmin=low, vmax=high,
                                interpolation='nearest', aspect='auto')
        image = axes_at(pred_box).imshow(pred[z], cmap='viridis', vmin=0, vmax=1,
                                         interpolation='nearest', aspect='auto')
        figure.text((_MARGIN - 6) / fig_w, (raw_box[1] + raw_box[3] / 2) / fig_h,
                    f"z {z_indices[z]}", ha='right', va='center', fontsize=8)
    top_right = boxes[0][1]
    bar_box = (top_right[0] + top_right[2] + _GAP, boxes[-1][1][1], 14,
               top_right[1] + top_right[3] - boxes[-1][1][1])
    figure.colorbar(image, cax=figure.add_axes(
        tuple(v / s for v, s in zip(bar_box, (fig_w, fig_h, fig_w, fig_h)))))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)


def save_preview(model, volume: np.ndarray, out_dir: Path, step: int, export_class='all',
                 max_z_pred: int = 5, should_stop: Callable[[], bool] = lambda: False,
                 max_seconds: float = math.inf, name: str | None = None) -> list[Path]:
    """Predict the central ``max_z_pred`` slices of ``volume`` (ch, z, y, x) with ``model``
    (or a prediction node) and write one PNG per exported class,
    ``<name>_class<c>.png`` (``name`` by default ``preview_step<step>``); PreviewStopped
    when ``should_stop()`` or after ``max_seconds`` (checked between blocks)."""
    start = time.monotonic()
    region = preview_region(volume.shape[1:], max_z_pred)
    pred = predict_preview(model, volume, region, should_stop, max_seconds)
    raw = volume[0][region.slices_in(Box.from_shape(volume.shape[1:]))]
    z_indices = range(region.lo[0], region.hi[0])
    label = '' if name is None else f"{name}: "
    name = name or f"preview_step{step:09d}"
    written = []
    for c in export_classes(export_class, pred.shape[0]):
        path = Path(out_dir) / f"{name}_class{c}.png"
        write_preview_png(raw, pred[c], path, f"{label}class {c}, step {step}", z_indices)
        written.append(path)
    logger.info("Preview %s written to %s (%.1f s)", name, out_dir, time.monotonic() - start)
    return written
