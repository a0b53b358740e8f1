"""Look inside a model: filter mosaics, activation maps and histograms, written as PNG files.

* :func:`plot_filters`: the filters of a Conv node as a mosaic (a block per filter, a tile
  per input channel and z slice of the kernel).
* :func:`plot_activations`: feature maps of chosen nodes for one input example.
* :func:`plot_param_histograms`, :func:`plot_activation_histograms`,
  :func:`plot_gradient_histograms`: value distributions per parameter / node.

Inputs of a model are given as a list in the order of the computed function's inputs, or
as a mapping ``{input node name: array}`` (e.g. ``{'raw': x, 'target': y}``).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import GraphError, ShapeError
from ..neuromancer.graph_compile import to_numpy
from ..neuromancer.node import Node
from ..neuromancer.shape import SPATIAL_TAGS

logger = logging.getLogger('elektronn2')

Inputs = Sequence[np.ndarray] | Mapping[str, np.ndarray]


def _figure(n_rows: int, n_cols: int, panel_size: tuple[float, float]):
    """A figure (no pyplot: no global state, no window) and its grid of axes."""
    from matplotlib.figure import Figure
    width, height = panel_size[0] * n_cols, panel_size[1] * n_rows + 0.6
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.07, right=0.95, bottom=0.3 / height, top=1 - 0.7 / height,
                        wspace=0.3, hspace=0.55)
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    logger.info("Wrote %s", path)
    return path


def _nodes(model, nodes: Sequence[Node | str] | None, default) -> list[Node]:
    if nodes is None:
        return [n for n in model.nodes.values() if default(n)]
    return [model[n] if isinstance(n, str) else n for n in nodes]


def _arrays_for(fn, inputs: Inputs) -> list[np.ndarray]:
    """The arrays a graph function takes, from a list or a name -> array mapping."""
    if not isinstance(inputs, Mapping):
        return list(inputs)
    missing = [n.name for n in fn.inputs if n.name not in inputs]
    if missing:
        raise GraphError(f"Computing {[o.name for o in fn.outputs]} needs inputs {missing}; "
                         f"the mapping has {sorted(inputs)}")
    return [inputs[n.name] for n in fn.inputs]


def activations(model, nodes: Sequence[Node | str], inputs: Inputs) -> dict[str, np.ndarray]:
    """Output of each node (inference mode) for the given inputs: name -> array."""
    nodes = _nodes(model, nodes, None)
    fn = model.function(nodes, training=False)
    return dict(zip((n.name for n in nodes), fn.numpy(*_arrays_for(fn, inputs))))


# --- filters -----------------------------------------------------------------------------
def filter_mosaic(weights: np.ndarray, max_filters: int = 64, max_tiles: int = 24,
                  per_tile: bool = True) -> np.ndarray:
    """Weights ``(n_f, n_in, *kernel)`` as one 2-D image in [-1, 1], NaN between tiles.

    Each filter is a block of tiles side by side, one per input channel and leading kernel
    slice (3-D kernels show every z slice); the blocks fill a roughly square grid. Each
    tile is scaled by its own (or the global) largest |w|.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim < 3:
        raise ShapeError(f"Filter weights of shape {w.shape} are not convolution filters "
                         f"(n_f, n_in, *kernel); use plot_param_histograms for them")
    kernel = w.shape[2:]
    if len(kernel) == 1:
        kernel = (1,) + kernel
    tiles = w[:max_filters].reshape(min(len(w), max_filters), -1, *kernel[-2:])[:, :max_tiles]
    scale = np.abs(tiles).max(axis=(2, 3), keepdims=True) if per_tile else np.abs(tiles).max()
    tiles = tiles / np.where(scale > 0, scale, 1)
    n_filters, n_tiles, ky, kx = tiles.shape
    per_row = max(1, min(n_filters, round(math.sqrt(n_filters * ky / (n_tiles * kx)))))
    block_width = n_tiles * (kx + 1) + 1
    mosaic = np.full((math.ceil(n_filters / per_row) * (ky + 1) - 1, per_row * block_width - 2),
                     np.nan)
    for f in range(n_filters):
        row, column = divmod(f, per_row)
        for t in range(n_tiles):
            x0 = column * block_width + t * (kx + 1)
            mosaic[row * (ky + 1):row * (ky + 1) + ky, x0:x0 + kx] = tiles[f, t]
    return mosaic


def plot_filters(node_or_weights: Node | np.ndarray, path: str | os.PathLike,
                 max_filters: int = 64, max_tiles: int = 24, per_tile: bool = True) -> Path:
    """Write the filter mosaic of a Conv node (or of a weight array) to ``path``."""
    if isinstance(node_or_weights, Node):
        if 'w' not in node_or_weights.params:
            raise GraphError(f"Node {node_or_weights.name!r} has no filter weights 'w'; "
                             f"its parameters are {sorted(node_or_weights.params)}")
        weights, title = node_or_weights.params['w'].detach().cpu().numpy(), node_or_weights.name
    else:
        weights, title = np.asarray(node_or_weights), 'filters'
    mosaic = filter_mosaic(weights, max_filters, max_tiles, per_tile)
    aspect = mosaic.shape[1] / mosaic.shape[0]
    height = 6.0 if aspect < 2 else max(3.0, 12 / aspect)
    fig, axes = _figure(1, 1, (min(16.0, max(5.0, height * aspect + 1.5)), height))
    ax = axes[0, 0]
    image = ax.imshow(np.ma.masked_invalid(mosaic), cmap='RdBu_r', vmin=-1, vmax=1,
                      interpolation='nearest')
    ax.set_facecolor('#ffffff')
    ax.set_axis_off()
    ax.set_title(f"{title}: weights {tuple(weights.shape)}\n(a block per filter, a tile per "
                 f"input channel and z; red > 0 > blue)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.6)
    return _save(fig, path)


# --- activations ---------------------------------------------------------------------------
def feature_maps(array: np.ndarray, tags: Sequence[str], example: int = 0) -> np.ndarray:
    """One example's output as ``(channels, rows, cols)``: middle slice of leading spatial axes."""
    index, kept = [], []
    for tag in tags:
        if tag == 'b':
            index.append(example)
        elif tag == 'f' or tag in SPATIAL_TAGS:
            index.append(slice(None))
            kept.append(tag)
        else:
            index.append(0)
    maps = array[tuple(index)]
    if 'f' not in kept:
        maps, kept = maps[None], ['f'] + kept
    maps = np.moveaxis(maps, kept.index('f'), 0)
    while maps.ndim > 3:
        maps = maps[:, maps.shape[1] // 2]
    return maps.reshape(maps.shape[0], 1, -1) if maps.ndim < 3 else maps


def plot_activations(model, inputs: Inputs, out_dir: str | os.PathLike,
                     nodes: Sequence[Node | str] | None = None, example: int = 0,
                     max_channels: int = 16) -> list[Path]:
    """One PNG per node (``<out_dir>/activations_<node>.png``) of its feature maps.

    ``nodes`` defaults to every non-input node with spatial axes.
    """
    nodes = _nodes(model, nodes, lambda n: not n.is_input and n.shape.spatial_axes)
    values = activations(model, nodes, inputs)
    paths = []
    for node in nodes:
        maps = feature_maps(values[node.name], node.shape.tags, example)[:max_channels]
        n_cols = min(4, len(maps))
        fig, axes = _figure(math.ceil(len(maps) / n_cols), n_cols, (2.6, 2.6))
        for ax in axes.flat:
            ax.set_axis_off()
        for i, (ax, channel) in enumerate(zip(axes.flat, maps)):
            ax.imshow(channel, cmap='gray', interpolation='nearest', aspect='auto')
            ax.set_title(f"f {i}: {channel.min():.2g}..{channel.max():.2g}", fontsize=8)
        fig.suptitle(f"{node.name} ({type(node).__name__}) {node.shape}, example {example}",
                     fontsize=9)
        paths.append(_save(fig, Path(out_dir) / f"activations_{node.name}.png"))
    return paths


# --- histograms -------------------------------------------------------------------------------
def plot_histograms(values: Mapping[str, np.ndarray], path: str | os.PathLike, title: str,
                    bins: int = 50) -> Path:
    """A grid of histograms (log counts), one per named array, with mean and std."""
    if not values:
        raise GraphError(f"{title}: nothing to plot")
    n_cols = min(4, len(values))
    fig, axes = _figure(math.ceil(len(values) / n_cols), n_cols, (3.2, 2.4))
    for ax in axes.flat[len(values):]:
        ax.set_axis_off()
    for ax, (name, array) in zip(axes.flat, values.items()):
        flat = np.asarray(array, dtype=np.float64).ravel()
        flat = flat[np.isfinite(flat)]
        counts, edges = np.histogram(flat, bins=bins)
        ax.stairs(np.where(counts > 0, counts, np.nan), edges, fill=True, baseline=0.8,
                  color='#1f77b4')
        ax.set_yscale('log')
        ax.set_title(f"{name}\nmean {flat.mean():.3g}, std {flat.std():.3g}", fontsize=8)
        ax.tick_params(which='both', labelsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_param_histograms(model, path: str | os.PathLike, bins: int = 50) -> Path:
    """Histograms of every parameter of the model."""
    values = {k: to_numpy(p.detach()) for k, p in model.all_params().items()}
    return plot_histograms(values, path, f"parameters of model {model.name!r}", bins)


def plot_activation_histograms(model, inputs: Inputs, path: str | os.PathLike,
                               nodes: Sequence[Node | str] | None = None,
                               bins: int = 50) -> Path:
    """Histograms of node outputs (default: every non-input node) for the given inputs."""
    nodes = _nodes(model, nodes, lambda n: not n.is_input)
    return plot_histograms(activations(model, nodes, inputs), path,
                           f"activations of model {model.name!r}", bins)


def gradients(model, batch: Inputs) -> dict[str, np.ndarray]:
    """Gradients of the loss w.r.t. each trainable parameter, as in a training step.

    Runs in training mode (dropout, batch statistics); running batch-norm statistics
    changed by that run are restored, and no optimiser state or ``.grad`` is touched.
    """
    if model.loss_node is None:
        raise GraphError(f"Model {model.name!r} has no loss node: call "
                         f"model.designate_nodes(loss_node=...) first")
    fn = model.function([model.loss_node], training=True)
    tensors = fn.to_tensors(*_arrays_for(fn, batch))
    params = model.loss_node.all_trainable_params
    constants = {k: p.detach().clone() for k, p in model.all_params().items()
                 if not p.requires_grad}
    try:
        loss = fn(*tensors)[0].float().sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    finally:
        all_params = model.all_params()
        with torch.no_grad():
            for key, value in constants.items():
                all_params[key].copy_(value)
    return {k: to_numpy(torch.zeros_like(p) if g is None else g)
            for (k, p), g in zip(params.items(), grads)}


def plot_gradient_histograms(model, batch: Inputs, path: str | os.PathLike,
                             bins: int = 50) -> Path:
    """Histograms of the loss gradients of every trainable parameter for one batch."""
    return plot_histograms(gradients(model, batch), path,
                           f"gradients of the loss of model {model.name!r}", bins)
