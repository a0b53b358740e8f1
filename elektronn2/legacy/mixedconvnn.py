# v1 method and argument names (addConvLayer, W, ...) are kept on purpose
# ruff: noqa: N802, N803
"""MixedConvNN: ELEKTRONN v1's layer-by-layer network builder, over neuromancer.

A v1 script stacked layers (``addConvLayer``, ``addPerceptronLayer``,
``addTiedAutoencoderChain``), compiled the outputs (``compileOutputFunctions``),
set the optimiser (``setOptimizerParams``) and trained in its own loop
(``trainingStep``, ``get_error``). This class keeps those names and arguments; each
call adds neuromancer nodes to a model of its own (``cnn.model``), so everything of
elektronn2 (``cnn.model.summary()``, saving, dense prediction) works on it too.

Differences to v1:

* 3-D images are (batch, channel, z, x, y); v1 had (batch, z, channel, x, y). 2-D
  images (batch, channel, x, y) and vectors (batch, features) are as in v1.
* Dropout and auto-encoder input noise act in training steps only; v1 kept them
  on until they were switched off by hand.
* The last layer of an 'nll' net must be linear; v1 applied the softmax after any
  activation.
* ``saveParameters`` writes safetensors files, never pickles; ``loadParameters``
  loads the layers whose shapes match (all must match with ``strict=True``) and
  skips the others with a warning, where v1 padded or cut mismatching filters.
* Optimiser modes 'SGD', 'Adam', 'RPROP' (torch's Rprop) and 'LBFGS'; there is no CG.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from ..errors import ConfigError, GraphError, ModelFileError

logger = logging.getLogger('elektronn2')

_MODES = {'SGD': 'SGD', 'Adam': 'Adam', 'RPROP': 'Rprop', 'LBFGS': 'LBFGS'}
_CHUNK = 1000  # examples per evaluation in get_error / class_probabilities


class MixedConvNN:
    """A network built layer by layer, as in ELEKTRONN v1.

    Args:
        input_size: spatial size of the images, (x, y) or (z, x, y), or the number of
            features of vector data.
        input_depth: image channels; None for vector data (then no conv layers).
        batch_size: fixed batch size, or None for any.
        enable_dropout: whether dropout rates can be set (:meth:`setDropoutRates`).
        name: name of the underlying model.
    """

    def __init__(self, input_size: int | Sequence[int], input_depth: int | None = None,
                 batch_size: int | None = None, enable_dropout: bool = False,
                 name: str = 'mixedconvnn'):
        import elektronn2.neuromancer as nm
        sizes = tuple(int(s) for s in input_size) if np.iterable(input_size) else (int(input_size),)
        if len(sizes) not in (1, 2, 3):
            raise ConfigError(f"input_size {input_size!r}: give 1 (vectors), 2 or 3 sizes")
        self.n_dim = len(sizes)
        self.enable_dropout = enable_dropout
        self.model = nm.model_manager.newmodel(name)
        if self.n_dim == 1:
            if input_depth is not None:
                raise ConfigError("input_depth for 1-D input means a recurrent net in v1; build "
                                  "those with nm.GRU / nm.LSTM and nm.Scan")
            self.input = nm.Input((batch_size, sizes[0]), 'b,f', name='raw')
        else:
            tags = 'b,f,x,y' if self.n_dim == 2 else 'b,f,z,x,y'
            self.input = nm.Input((batch_size, input_depth or 1) + sizes, tags, name='raw')
        self.layers: list = []              # encoder / classifier layers, first to last
        self._autoencoder_chain: list = []  # decoder layers of addTiedAutoencoderChain
        self._dropout_layers: list = []
        self._optimiser_settings: dict[str, dict] = {'SGD': {}, 'Adam': {}}
        self._mode: str | None = None
        self.target = None
        self.n_lab: int | None = None

    # --- building -----------------------------------------------------------------------
    @property
    def _top(self):
        return self.layers[-1] if self.layers else self.input

    def _added(self, layer, dropout: bool):
        self.layers.append(layer)
        if dropout and self.enable_dropout:
            self._dropout_layers.append(layer)
        return layer

    def addConvLayer(self, nof_filters: int, filter_size: int | Sequence[int],
                     pool_shape: int | Sequence[int] = 2, activation_func: str = 'tanh',
                     force_no_dropout: bool = False, use_fragment_pooling: bool = False,
                     is_last_layer: bool = False, pooling_mode: str = 'max',
                     W: np.ndarray | None = None, b: np.ndarray | None = None):
        """A convolution with ``nof_filters`` filters of ``filter_size`` ((x, y) or
        (z, x, y); an int for all axes), followed by max pooling of ``pool_shape``."""
        import elektronn2.neuromancer as nm
        if self.n_dim == 1:
            raise ConfigError("addConvLayer: the input is vector data (input_depth=None)")
        if pooling_mode != 'max':
            raise ConfigError(f"addConvLayer: pooling_mode={pooling_mode!r}; elektronn2 pools "
                              f"with 'max' only")
        layer = nm.Conv(self._top, nof_filters, filter_size, pool_shape,
                        activation_func=activation_func, mfp=use_fragment_pooling, w=W, b=b)
        return self._added(layer, not (force_no_dropout or is_last_layer))

    def addPerceptronLayer(self, n_outputs: int = 10, activation_func: str = 'tanh',
                           force_no_dropout: bool = False, W: np.ndarray | None = None,
                           b: np.ndarray | None = None):
        """A fully connected layer of ``n_outputs`` units (flattening image input)."""
        import elektronn2.neuromancer as nm
        layer = nm.Perceptron(self._top, n_outputs, activation_func=activation_func,
                              flatten=len(self._top.shape.tags) > 2, w=W, b=b)
        return self._added(layer, not force_no_dropout)

    def addTiedAutoencoderChain(self, n_layers: int | None = None,
                                force_no_dropout: bool = False, activation_func: str = 'tanh',
                                input_noise: float = 0.3, tie_W: bool = True) -> list:
        """Decoder layers that invert the first ``n_layers`` layers (all by default), from
        the deepest back to the input; with ``tie_W`` they use the transposed weights of
        their encoder layer. ``input_noise``: dropout on the code while training."""
        import elektronn2.neuromancer as nm
        n_layers = n_layers or len(self.layers)
        if not 0 < n_layers <= len(self.layers):
            raise ConfigError(f"addTiedAutoencoderChain: n_layers={n_layers}, but the network "
                              f"has {len(self.layers)} layers")
        code = self.layers[n_layers - 1]
        code.dropout_rate = float(input_noise or 0)
        out = code
        for encoder in reversed(self.layers[:n_layers]):
            if tie_W:
                out = encoder.make_dual(out, activation_func=activation_func, name='decode')
            elif isinstance(encoder, nm.Perceptron):
                out = nm.Perceptron(out, encoder.params['w'].shape[0],
                                    activation_func=activation_func, name='decode')
            else:
                raise ConfigError("addTiedAutoencoderChain(tie_W=False) inverts Perceptron "
                                  "layers only")
            self._autoencoder_chain.append(out)
            if not force_no_dropout and self.enable_dropout:
                self._dropout_layers.append(out)
        return list(self._autoencoder_chain)

    def compileOutputFunctions(self, target: str = 'nll', use_class_weights: bool = False,
                               use_example_weights: bool = False, use_lazy_labels: bool = False,
                               use_label_prop: bool = False, only_forward: bool = False) -> None:
        """Add the output, target and loss to the last layer: 'nll' (softmax and
        cross-entropy with int16 labels) or 'regression' (squared error)."""
        import elektronn2.neuromancer as nm
        unsupported = [name for name, on in (('use_class_weights', use_class_weights),
                                             ('use_example_weights', use_example_weights),
                                             ('use_lazy_labels', use_lazy_labels),
                                             ('use_label_prop', use_label_prop)) if on]
        if unsupported:
            raise ConfigError(f"compileOutputFunctions: {unsupported} are not supported; build "
                              f"such losses with nm.MultinoulliNLL directly")
        if target not in ('nll', 'regression'):
            raise ConfigError(f"compileOutputFunctions: target={target!r}; use 'nll' or "
                              f"'regression'")
        if not self.layers:
            raise GraphError("compileOutputFunctions: add layers first")
        last = (self._autoencoder_chain or self.layers)[-1]
        self.n_lab = last.shape['f']
        if target == 'nll' and last.activation_func not in ('lin', 'linear'):
            raise ConfigError(f"compileOutputFunctions: the last layer {last.name!r} of an 'nll' "
                              f"net needs activation_func='linear' (the softmax acts on its "
                              f"outputs), not {last.activation_func!r}")
        if target == 'nll':
            prediction = nm.Softmax(last)
            self.target = nm.Input_like(prediction, override_f=1, name='target', dtype='int16')
            per_instance = nm.MultinoulliNLL(prediction, self.target, target_is_sparse=True)
            self._error = nm.Errors(prediction, self.target, target_is_sparse=True)
        else:
            prediction = last
            self.target = nm.Input_like(last, name='target')
            per_instance = nm.SquaredLoss(last, self.target)
            self._error = None
        loss = nm.AggregateLoss(per_instance, name='loss')
        self._per_instance = per_instance
        self.model.designate_nodes(input_node=self.input, target_node=self.target,
                                   loss_node=loss, prediction_node=prediction,
                                   debug_outputs=[per_instance])

    # --- optimisation --------------------------------------------------------------------
    def setOptimizerParams(self, SGD: dict | None = None, CG: dict | None = None,
                           RPROP: dict | None = None, LBFGS: dict | None = None,
                           Adam: dict | None = None, weight_decay: float = 0.0) -> None:
        """Hyper-parameters: ``SGD={'LR', 'momentum'}``, ``Adam={'LR', 'beta1', 'beta2'}``,
        and the L2 ``weight_decay`` of all optimisers (RPROP, LBFGS: torch's defaults)."""
        if CG:
            logger.warning("setOptimizerParams: there is no CG optimiser; CG=%s is ignored", CG)
        self._optimiser_settings = {'SGD': dict(SGD or {}), 'Adam': dict(Adam or {})}
        self.model.wd = float(weight_decay or 0.0)
        self._use_settings('SGD')

    def _use_settings(self, mode: str) -> None:
        values = self._optimiser_settings.get(mode, {})
        names = {'LR': 'lr', 'lr': 'lr', 'momentum': 'mom', 'beta1': 'mom', 'beta2': 'beta2'}
        for v1_name, value in values.items():
            if v1_name not in names:
                raise ConfigError(f"{mode} parameter {v1_name!r} is unknown; use "
                                  f"{sorted(set(names) - {'lr'})}")
            setattr(self.model, names[v1_name], value)
        self._mode = mode

    def setSGDLR(self, value: float = 0.09) -> None:
        self._optimiser_settings['SGD']['LR'] = value
        self.model.lr = value

    def setSGDMomentum(self, value: float = 0.9) -> None:
        self._optimiser_settings['SGD']['momentum'] = value
        self.model.mom = value

    def setWeightDecay(self, value: float = 0.0005) -> None:
        self.model.wd = value

    def setDropoutRates(self, rates: Sequence[float]) -> None:
        """Dropout rates of the layers that allow dropout, first layer first."""
        if not self._dropout_layers:
            raise ConfigError("setDropoutRates: no layer has dropout; create the network with "
                              "enable_dropout=True")
        for layer, rate in zip(self._dropout_layers, rates):
            if not 0 <= rate < 1:
                raise ConfigError(f"setDropoutRates: rate {rate} of {layer.name!r} must be in "
                                  f"[0, 1)")
            layer.dropout_rate = float(rate)

    def getDropoutRates(self) -> list[float]:
        return [layer.dropout_rate for layer in self._dropout_layers]

    def trainingStep(self, *args: np.ndarray, mode: str = 'SGD',
                     update_loss: bool = False) -> tuple[np.float32, np.ndarray, float]:
        """One update on ``(data, labels)``; returns (loss, loss per example/pixel, seconds)."""
        if self.target is None:
            raise GraphError("trainingStep: call compileOutputFunctions first")
        if mode not in _MODES:
            raise ConfigError(f"trainingStep: mode={mode!r}; available: {sorted(_MODES)}")
        if len(args) != 2:
            raise ConfigError(f"trainingStep takes (data, labels); got {len(args)} arrays")
        if mode != self._mode and mode in self._optimiser_settings:
            self._use_settings(mode)
        loss, seconds, debug = self.model.trainingstep(args[0], self._as_target(args[1]),
                                                       optimiser=_MODES[mode],
                                                       update_loss=update_loss)
        return np.float32(loss), debug[0], seconds

    # --- evaluation ----------------------------------------------------------------------
    def _as_target(self, labels: np.ndarray) -> np.ndarray:
        """v1 labels ((b,) or (b, *spatial)) -> the target node's (b, 1, ...) layout."""
        labels = np.asarray(labels)
        if labels.ndim == len(self.target.shape.tags) - 1:
            labels = labels[:, None]
        return labels

    def get_error(self, data: np.ndarray, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(loss, error, prediction) on a data set, evaluated in chunks: for 'nll' the error
        rate and the predicted classes, for 'regression' the RMS error and the outputs."""
        if self.target is None:
            raise GraphError("get_error: call compileOutputFunctions first")
        nodes = [self._per_instance, self.model.prediction_node]
        fn = self.model.function(nodes + ([self._error] if self._error is not None else []))
        labels = self._as_target(labels)
        totals, outputs = np.zeros(2), []
        for start in range(0, len(data), _CHUNK):
            values = fn.numpy(data[start:start + _CHUNK], labels[start:start + _CHUNK])
            n = len(values[1])
            totals += [float(np.mean(values[0])) * n,
                       float(values[2]) * n if self._error is not None else 0.0]
            outputs.append(values[1].argmax(1) if self._error is not None else values[1])
        loss, error = totals / len(data)
        if self._error is None:
            error = float(np.sqrt(loss))
        return float(loss), float(error), np.concatenate(outputs)

    def class_probabilities(self, data: np.ndarray) -> np.ndarray:
        """The network's output (class probabilities for 'nll') for ``data``, in chunks."""
        return np.concatenate([self.model.predict(data[s:s + _CHUNK])
                               for s in range(0, len(data), _CHUNK)])

    def predictDense(self, raw_img: np.ndarray, show_progress: bool = True,
                     offset=None, as_uint8: bool = False, pad_raw: bool = False) -> np.ndarray:
        """Dense prediction (classes, *spatial) of a whole image (channels, *spatial), see
        :meth:`elektronn2.neuromancer.Model.predict_dense` (``show_progress`` and ``offset``
        are not needed)."""
        return self.model.predict_dense(raw_img, as_uint8=as_uint8, pad_raw=pad_raw)

    # --- parameter files ------------------------------------------------------------------
    def saveParameters(self, path: str | os.PathLike = 'CNN.save',
                       layers: Sequence | None = None, show: bool = True) -> None:
        """Write the parameters of ``layers`` (default: all but the auto-encoder chain) to a
        safetensors file, layer by layer, for :meth:`loadParameters`."""
        from safetensors.numpy import save_file
        layers = self.layers if layers is None else layers
        tensors = {f"{i}.{key}": np.ascontiguousarray(value)
                   for i, layer in enumerate(layers)
                   for key, value in layer.get_param_values().items()}
        save_file(tensors, str(path), metadata={'format': 'elektronn2.legacy.MixedConvNN',
                                                'n_layers': str(len(layers))})
        if show:
            logger.info("Saved the parameters of %d layers to %s", len(layers), path)

    def loadParameters(self, myfile: str | os.PathLike = 'CNN.save', strict: bool = False,
                       n_layers_to_load: int = -1) -> None:
        """Load a file of :meth:`saveParameters` into the first layers (``n_layers_to_load``,
        -1: as many as the file has). Layers whose shapes differ are skipped with a
        warning, or are an error with ``strict``. The optimisers start afresh."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from ..neuromancer.optimiser import Optimisers
        try:
            tensors = load_file(str(myfile))
        except (OSError, SafetensorError) as err:
            raise ModelFileError(f"Cannot read parameter file {myfile}: {err}") from err
        n_saved = len({key.split('.', 1)[0] for key in tensors})
        n = n_saved if n_layers_to_load < 0 else min(n_layers_to_load, n_saved)
        for i, layer in enumerate(self.layers[:n]):
            saved = {key.split('.', 1)[1]: value for key, value in tensors.items()
                     if key.split('.', 1)[0] == str(i)}
            current = layer.get_param_values()
            mismatch = {k: (v.shape, current[k].shape if k in current else None)
                        for k, v in saved.items()
                        if k not in current or v.shape != current[k].shape}
            if mismatch:
                text = (f"layer {i} ({layer.name!r}) of {myfile}: saved and current shapes differ "
                        f"{mismatch}")
                if strict:
                    raise ModelFileError(text)
                logger.warning("%s; layer not loaded", text)
                continue
            layer.set_param_values(saved)
        self.model.optimisers = Optimisers(self.model.optimisers.hyper_params)
