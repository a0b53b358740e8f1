"""ELEKTRONN v1 parameter files (``MixedConvNN.saveParameters``) into today's models.

v1 wrote one pickle after another (protocol 2, read safely by
:mod:`elektronn2.neuromancer.oldpickle`): the list of the first parameter's shape of
each layer, then per layer its ``params`` (conv layers ``[W, b]``, perceptron layers
``[b, W]``), then the pooling factors. The layouts (v1's source): ``ConvLayer2d.W``
(n_f, n_in, x, y) and ``ConvLayer3d.W`` (n_f, z, n_in, x, y) for Theano's true
convolutions (flipped here, 3-D transposed to (n_f, n_in, z, x, y)); ``PerceptronLayer.W``
(n_in, n_out), its rows after a 3-D conv layer in v1's flattening order (z, ch, x, y),
here (ch, z, x, y).

The file holds no activations or network description: :func:`load_v1_parameters` puts
the parameters into a model built from the v1 config (or by hand) whose Conv and
Perceptron layers, in construction order, are v1's layers.
"""
from __future__ import annotations

import os

import numpy as np

from .. import neuromancer as nm
from ..errors import ModelFileError
from ..neuromancer.oldpickle import read_pickles


def read_v1_parameters(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) per layer of a v1 parameter file, as v1 stored them."""
    objects = read_pickles(path)
    if len(objects) < 2 or not isinstance(objects[0], list):
        raise ModelFileError(f"{str(path)!r} is not an ELEKTRONN v1 parameter file (a list of "
                             f"shapes, then the parameters of each layer)")
    n_layers = len(objects[0])
    arrays = objects[1:-1] if len(objects) == 2 * n_layers + 2 else objects[1:]
    if len(arrays) != 2 * n_layers or not all(isinstance(a, np.ndarray) for a in arrays):
        raise ModelFileError(f"{str(path)!r}: {n_layers} layers but {len(arrays)} parameter "
                             f"arrays; only conv and perceptron layers (two arrays each) are "
                             f"read, not recurrent ones")
    layers = []
    for i in range(n_layers):
        pair = sorted(arrays[2 * i:2 * i + 2], key=lambda a: -a.ndim)  # W first, then b
        if pair[0].ndim < 2 or pair[1].ndim != 1:
            raise ModelFileError(f"{str(path)!r}: layer {i} has arrays of shapes "
                                 f"{[a.shape for a in pair]}, not a weight and a bias")
        layers.append((pair[0], pair[1]))
    return layers


def load_v1_parameters(model, path: str | os.PathLike) -> None:
    """Set the Conv and Perceptron layers of ``model`` (in construction order) to the
    parameters of a v1 file, converted to this project's layouts."""
    layers, seen = [], set()
    for n in model.nodes.values():  # layers with weights of their own, in order
        if isinstance(n, (nm.Conv, nm.Perceptron)) and id(n.params['w']) not in seen:
            seen.add(id(n.params['w']))
            layers.append(n)
    saved = read_v1_parameters(path)
    if len(layers) != len(saved):
        raise ModelFileError(f"{str(path)!r} holds {len(saved)} layers, the model has "
                             f"{len(layers)} ({[n.name for n in layers]})")
    for i, (layer, (w, b)) in enumerate(zip(layers, saved)):
        w = _conv_weight(w) if isinstance(layer, nm.Conv) else _perceptron_weight(layer, w)
        want = tuple(layer.params['w'].shape)
        if w.shape != want or b.shape != (want[0] if isinstance(layer, nm.Conv) else want[1],):
            raise ModelFileError(f"{str(path)!r}: layer {i} has W {w.shape}, b {b.shape}; the "
                                 f"model's {layer.name!r} needs W {want}")
        layer.set_param_values({'w': w.astype(np.float32), 'b': b.astype(np.float32)})


def _conv_weight(w: np.ndarray) -> np.ndarray:
    if w.ndim == 5:  # (n_f, z, n_in, x, y) -> (n_f, n_in, z, x, y)
        w = w.transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(np.flip(w, axis=tuple(range(2, w.ndim))))


def _perceptron_weight(layer, w: np.ndarray) -> np.ndarray:
    """Rows after a 3-D conv layer: v1's (z, ch, x, y) flattening order -> (ch, z, x, y)."""
    sh = layer.parent.shape
    if layer.flatten and sh.tags == ('b', 'f', 'z', 'x', 'y') and w.ndim == 2:
        f, z, x, y = sh.shape[1:]
        return w.reshape(z, f, x, y, -1).transpose(1, 0, 2, 3, 4).reshape(f * z * x * y, -1)
    return w
