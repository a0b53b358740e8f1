# v1 method and argument names (addConvLayer, W, ...) are kept on purpose
# ruff: noqa: N802, N803
"""MixedConvNN: ELEKTRONN v1's layer-by-layer network builder, over neuromancer.

A v1 script stacked layers (``addConvLayer``, ``addPerceptronLayer``,
``addRecurrentLayer``, ``addTiedAutoencoderChain``), compiled the outputs
(``compileOutputFunctions``), set the optimiser (``setOptimizerParams``) and trained in
its own loop (``trainingStep``, ``get_error``). This class keeps those names and
arguments; each call adds neuromancer nodes to a model of its own (``cnn.model``), so
everything of elektronn2 (``cnn.model.summary()``, saving, dense prediction) works on
it too.

As in v1, the softmax of an 'nll' net acts on the last layer's values before its
activation function (a linear twin of that layer, sharing its parameters, feeds the
softmax), so a last layer with 'abs' or 'tanh' trains as a linear one would.

Differences to v1:

* 3-D images are (batch, channel, z, x, y); v1 had (batch, z, channel, x, y). 2-D
  images (batch, channel, x, y) and vectors (batch, features) are as in v1.
* Dropout and auto-encoder input noise act in training steps only; v1 kept them
  on until they were switched off by hand.
* ``saveParameters`` writes safetensors files, never pickles; ``loadParameters``
  loads the layers whose shapes match (all must match with ``strict=True``) and
  skips the others with a warning, where v1 padded or cut mismatching filters.
* Optimiser modes 'SGD', 'Adam', 'RPROP' (torch's Rprop) and 'LBFGS'; there is no CG.
* Label propagation (``use_label_prop``) is not available here (it is in
  ``nm.MultinoulliNLL(label_prop_thresh=...)`` and in v1 configs).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import numpy as np

from .. import neuromancer as nm
from ..errors import ConfigError, GraphError, ModelFileError
from ..neuromancer.optimiser import Optimisers

logger = logging.getLogger('elektronn2')

_MODES = {'SGD': 'SGD', 'Adam': 'Adam', 'RPROP': 'Rprop', 'LBFGS': 'LBFGS'}
_CHUNK = 1000  # examples per evaluation in get_error / class_probabilities
_LINEAR = ('lin', 'linear')


class MixedConvNN:
    """A network built layer by layer, as in ELEKTRONN v1.

    Args:
        input_size: spatial size of the images, (x, y) or (z, x, y), or the number of
            features of vector data.
        input_depth: image channels; None for vector data (then no conv layers). For a
            recurrent net the length of the input sequences (None: the same vector is
            fed at every step, see :meth:`addRecurrentLayer`).
        batch_size: fixed batch size, or None for any.
        enable_dropout: whether dropout rates can be set (:meth:`setDropoutRates`).
        recurrent: vector input of shape (batch, input_depth, input_size) for
            :meth:`addRecurrentLayer`.
        dimension_calc: accepted for v1 scripts; the model knows its own geometry.
        name: name of the underlying model.
    """

    def __init__(self, input_size: int | Sequence[int], input_depth: int | None = None,
                 batch_size: int | None = None, enable_dropout: bool = False,
                 recurrent: bool = False, dimension_calc=None, name: str = 'mixedconvnn'):
        sizes = tuple(int(s) for s in input_size) if np.iterable(input_size) else (int(input_size),)
        if len(sizes) not in (1, 2, 3):
            raise ConfigError(f"input_size {input_size!r}: give 1 (vectors), 2 or 3 sizes")
        if recurrent and len(sizes) != 1:
            raise ConfigError(f"recurrent=True needs vector input (one input_size), got {sizes}")
        self.n_dim = len(sizes)
        self.enable_dropout = enable_dropout
        self.model = nm.model_manager.newmodel(name)
        if recurrent:
            shape, tags = ((batch_size, sizes[0]), 'b,f') if input_depth is None else \
                ((batch_size, int(input_depth), sizes[0]), 'b,r,f')
            self.input = nm.Input(shape, tags, name='raw')
        elif self.n_dim == 1:
            if input_depth is not None:
                raise ConfigError("input_depth for 1-D input is the sequence length of a "
                                  "recurrent net: pass recurrent=True")
            self.input = nm.Input((batch_size, sizes[0]), 'b,f', name='raw')
        else:
            tags = 'b,f,x,y' if self.n_dim == 2 else 'b,f,z,x,y'
            self.input = nm.Input((batch_size, input_depth or 1) + sizes, tags, name='raw')
        self.layers: list = []              # layers first to last (decoders if added)
        self._autoencoder_chain: list = []  # decoder layers of addTiedAutoencoderChain
        self._dropout_layers: list = []
        self._parts: dict = {}              # recurrent layer -> nodes holding its parameters
        self._aux: list[tuple] = []         # (input node, kind) of compileOutputFunctions
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
        if len(self.input.shape.spatial_axes) == 0:
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
        layer = nm.Perceptron(self._top, n_outputs, activation_func=activation_func,
                              flatten=len(self._top.shape.tags) > 2, w=W, b=b)
        return self._added(layer, not force_no_dropout)

    def addRecurrentLayer(self, n_hid: int, activation_func: str = 'tanh',
                          iterations: int | None = None):
        """A recurrent layer h_t = f(x_t W_in + h_(t-1) W_hid + b) over the sequence axis of
        (batch, time, features) input, or over ``iterations`` steps of the same vector;
        its output is the last state (batch, n_hid). The initial state is learnt."""
        top = self._top
        if top.shape.tags == ('b', 'r', 'f'):
            x_t, _ = nm.split(top, 'r', index=1, strip_singleton_dims=True, name='step_input')
            sequence, n_steps = top, None
        elif top.shape.tags == ('b', 'f') and iterations:
            x_t, sequence, n_steps = top, None, int(iterations)
        else:
            raise ConfigError(f"addRecurrentLayer: needs (batch, time, features) input "
                              f"(MixedConvNN(..., recurrent=True)) or vectors and iterations; "
                              f"got {top.shape}")
        h_0 = nm.InitialState_like(x_t, n_hid, name='initial_state')
        step = nm.Perceptron(nm.Concat([x_t, h_0]), n_hid, activation_func=activation_func,
                             name='recurrence')
        layer = nm.Scan(step, in_memory=h_0, in_iterate=sequence,
                        in_iterate_0=x_t if sequence is not None else None, n_steps=n_steps,
                        last_only=True, name='recurrent')
        self._parts[layer] = [step, h_0]
        return self._added(layer, False)

    def addTiedAutoencoderChain(self, n_layers: int | None = None,
                                force_no_dropout: bool = False, activation_func: str = 'tanh',
                                input_noise: float = 0.3, tie_W: bool = True,
                                add_layers_to_network: bool = False) -> list:
        """Decoder layers that invert the first ``n_layers`` layers (all by default), from
        the deepest back to the input; with ``tie_W`` they use the transposed weights of
        their encoder layer. ``input_noise``: dropout on the code while training.
        ``add_layers_to_network``: append the decoders to :attr:`layers` too (v1 did
        so when compiling)."""
        n_layers = n_layers or len(self.layers)
        if not 0 < n_layers <= len(self.layers):
            raise ConfigError(f"addTiedAutoencoderChain: n_layers={n_layers}, but the network "
                              f"has {len(self.layers)} layers")
        encoders = self.layers[:n_layers]
        code = encoders[-1]
        code.dropout_rate = float(input_noise or 0)
        out = code
        chain = []
        for encoder in reversed(encoders):
            if tie_W:
                out = encoder.make_dual(out, activation_func=activation_func, name='decode')
            elif isinstance(encoder, nm.Perceptron):
                out = nm.Perceptron(out, encoder.params['w'].shape[0],
                                    activation_func=activation_func, name='decode')
            else:
                raise ConfigError("addTiedAutoencoderChain(tie_W=False) inverts Perceptron "
                                  "layers only")
            chain.append(out)
            if not force_no_dropout and self.enable_dropout:
                self._dropout_layers.append(out)
        self._autoencoder_chain += chain
        if add_layers_to_network:
            self.layers += chain
        return list(self._autoencoder_chain)

    def compileDebugFunctions(self, gradients: bool = True) -> None:
        """Nothing to compile: the v1 introspection functions compute what they show."""

    # --- outputs --------------------------------------------------------------------------
    def compileOutputFunctions(self, target: str = 'nll', use_class_weights: bool = False,
                               use_example_weights: bool = False, use_lazy_labels: bool = False,
                               use_label_prop: bool = False, only_forward: bool = False) -> None:
        """Add the output, target and loss to the last layer: 'nll' (softmax and
        cross-entropy with int16 labels) or 'regression' (squared error).

        For 'nll' the training and evaluation calls take extra arrays after the labels,
        in v1's order: with ``use_lazy_labels`` ``mask_class_labeled`` and
        ``mask_class_not_present`` (batch, n_lab), with ``use_class_weights`` the
        weights (n_lab,), with ``use_example_weights`` a weight per label (the labels'
        shape)."""
        if use_label_prop:
            raise ConfigError("compileOutputFunctions: use_label_prop is not supported; build "
                              "the loss with nm.MultinoulliNLL(label_prop_thresh=...)")
        if target not in ('nll', 'regression'):
            raise ConfigError(f"compileOutputFunctions: target={target!r}; use 'nll' or "
                              f"'regression'")
        if not self.layers:
            raise GraphError("compileOutputFunctions: add layers first")
        if self.target is not None:
            raise GraphError("compileOutputFunctions: the outputs are compiled already")
        last = (self._autoencoder_chain or self.layers)[-1]
        self.n_lab = last.shape['f']
        if target == 'nll':
            prediction = nm.Softmax(self._logits(last))
            self.target = nm.Input_like(prediction, override_f=1, name='target', dtype='int16')
            weights = self._aux_inputs(prediction, use_lazy_labels, use_class_weights,
                                       use_example_weights)
            per_instance = nm.MultinoulliNLL(prediction, self.target, target_is_sparse=True,
                                             **weights)
            self._error = nm.Errors(prediction, self.target, target_is_sparse=True)
        else:
            used = [k for k, on in (('use_class_weights', use_class_weights),
                                    ('use_example_weights', use_example_weights),
                                    ('use_lazy_labels', use_lazy_labels)) if on]
            if used:
                logger.warning("compileOutputFunctions: %s apply to 'nll' only; ignored for "
                               "'regression' (as in v1)", used)
            prediction = last
            self.target = nm.Input_like(last, name='target')
            per_instance = nm.SquaredLoss(last, self.target)
            self._error = None
        loss = nm.AggregateLoss(per_instance, name='loss')
        self._per_instance = per_instance
        self.model.designate_nodes(input_node=self.input, target_node=self.target,
                                   loss_node=loss, prediction_node=prediction,
                                   debug_outputs=[per_instance])

    def _logits(self, last):
        """The last layer's values before its activation: the layer itself if it is linear,
        else a linear twin sharing its parameters (v1's softmax input)."""
        if last.activation_func in _LINEAR:
            return last
        if not isinstance(last, (nm.Perceptron, nm.Conv)) or last.activation_func.startswith('maxout'):
            raise ConfigError(f"compileOutputFunctions: the softmax cannot act before the "
                              f"{last.activation_func!r} activation of {last.name!r}; add a "
                              f"linear Perceptron or Conv layer last")
        options = dict(activation_func='lin', dropout_rate=last.dropout_rate, b=last,
                       name=f"{last.name}_logits")
        if isinstance(last, nm.Conv):
            twin = nm.Conv(last.parent, last.n_f, last.filter_shape, last.pool_shape,
                           conv_mode=last.conv_mode, mfp=last.mfp, w=last, **options)
        elif last.dual_of is not None:
            twin = nm.Perceptron(last.parent, last.n_f, flatten=last.flatten,
                                 dual_of=last.dual_of, **options)
        else:
            twin = nm.Perceptron(last.parent, last.n_f, flatten=last.flatten, w=last, **options)
        self._dropout_layers = [twin if lay is last else lay for lay in self._dropout_layers]
        return twin

    def _aux_inputs(self, prediction, lazy_labels: bool, class_weights: bool,
                    example_weights: bool) -> dict:
        """Inputs for the NLL's masks and weights, created in v1's argument order."""
        kwargs = {}
        if lazy_labels:
            for key in ('mask_class_labeled', 'mask_class_not_present'):
                kwargs[key] = nm.Input((None, self.n_lab), 'b,f', dtype='int16', name=key)
                self._aux.append((kwargs[key], 'per_example'))
        if class_weights:
            kwargs['class_weights'] = nm.Input((self.n_lab,), 'f', name='class_weights')
            self._aux.append((kwargs['class_weights'], 'global'))
        if example_weights:
            kwargs['example_weights'] = nm.Input_like(prediction, override_f=1,
                                                      name='example_weights')
            self._aux.append((kwargs['example_weights'], 'like_labels'))
        return kwargs

    def _arrays(self, args: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
        """(data, labels, *aux) in v1's layout -> the arrays of the loss function's inputs."""
        if self.target is None:
            raise GraphError(f"{what}: call compileOutputFunctions first")
        names = ['data', 'labels'] + [node.name for node, _ in self._aux]
        if len(args) != len(names):
            raise ConfigError(f"{what} takes {names} ({len(names)} arrays, as compiled by "
                              f"compileOutputFunctions); got {len(args)}")
        arrays = [np.asarray(args[0]), self._as_target(args[1])]
        for (node, kind), value in zip(self._aux, args[2:]):
            arrays.append(self._as_target(value) if kind == 'like_labels' else np.asarray(value))
        return arrays

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
        """One update on ``(data, labels, *aux)``; returns (loss, loss per example/pixel,
        seconds)."""
        arrays = self._arrays(args, 'trainingStep')
        if mode not in _MODES:
            raise ConfigError(f"trainingStep: mode={mode!r}; available: {sorted(_MODES)}")
        if mode != self._mode and mode in self._optimiser_settings:
            self._use_settings(mode)
        loss, seconds, debug = self.model.trainingstep(*arrays, optimiser=_MODES[mode],
                                                       update_loss=update_loss)
        return np.float32(loss), debug[0], seconds

    # --- evaluation ----------------------------------------------------------------------
    def _as_target(self, labels: np.ndarray) -> np.ndarray:
        """v1 labels ((b,) or (b, *spatial)) -> the target node's (b, 1, ...) layout."""
        labels = np.asarray(labels)
        if labels.ndim == len(self.target.shape.tags) - 1:
            labels = labels[:, None]
        return labels

    def get_error(self, *args: np.ndarray) -> tuple:
        """Evaluate on ``(data, labels, *aux)`` in chunks: for 'nll' (loss, error rate,
        predicted classes), for 'regression' (loss, outputs)."""
        arrays = self._arrays(args, 'get_error')
        per_example = [True, True] + [kind != 'global' for _, kind in self._aux]
        nodes = [self._per_instance, self.model.prediction_node]
        fn = self.model.function(nodes + ([self._error] if self._error is not None else []))
        totals, outputs = np.zeros(2), []
        for start in range(0, len(arrays[0]), _CHUNK):
            chunk = [a[start:start + _CHUNK] if cut else a for a, cut in zip(arrays, per_example)]
            values = fn.numpy(*chunk)
            n = len(values[1])
            totals += [float(np.mean(values[0])) * n,
                       float(values[2]) * n if self._error is not None else 0.0]
            outputs.append(values[1].argmax(1) if self._error is not None else values[1])
        loss, error = totals / len(arrays[0])
        if self._error is None:
            return float(loss), np.concatenate(outputs)
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
    def _layer_values(self, layer) -> dict[str, np.ndarray]:
        """A layer's parameters: ``{'w': .., 'b': ..}``, for a recurrent layer per part."""
        if layer not in self._parts:
            return layer.get_param_values()
        return {f"{j}.{key}": value for j, part in enumerate(self._parts[layer])
                for key, value in part.get_param_values().items()}

    def _set_layer_values(self, layer, values: dict[str, np.ndarray]) -> None:
        if layer not in self._parts:
            layer.set_param_values(values)
            return
        for j, part in enumerate(self._parts[layer]):
            part.set_param_values({k.split('.', 1)[1]: v for k, v in values.items()
                                   if k.split('.', 1)[0] == str(j)})

    def saveParameters(self, path: str | os.PathLike = 'CNN.save',
                       layers: Sequence | None = None, show: bool = True) -> None:
        """Write the parameters of ``layers`` (default: :attr:`layers`) to a safetensors
        file, layer by layer, for :meth:`loadParameters` and
        :func:`~elektronn2.legacy.netutils.createNetfromParams` (which reads the
        layers' pooling and activation recorded with them)."""
        from safetensors.numpy import save_file
        layers = self.layers if layers is None else layers
        tensors = {f"{i}.{key}": np.ascontiguousarray(value)
                   for i, layer in enumerate(layers)
                   for key, value in self._layer_values(layer).items()}
        description = [{'pool': list(getattr(layer, 'pool_shape', ())),
                        'mfp': bool(getattr(layer, 'mfp', False)),
                        'activation_func': getattr(layer, 'activation_func', None)}
                       for layer in layers]
        save_file(tensors, str(path), metadata={'format': 'elektronn2.legacy.MixedConvNN',
                                                'n_layers': str(len(layers)),
                                                'layers': json.dumps(description)})
        if show:
            logger.info("Saved the parameters of %d layers to %s", len(layers), path)

    def loadParameters(self, myfile: str | os.PathLike = 'CNN.save', strict: bool = False,
                       n_layers_to_load: int = -1) -> None:
        """Load a file of :meth:`saveParameters` into the first layers (``n_layers_to_load``,
        -1: as many as the file has). Layers whose shapes differ are skipped with a
        warning, or are an error with ``strict``. The optimisers start afresh."""
        tensors = read_parameter_file(myfile)
        n_saved = len({key.split('.', 1)[0] for key in tensors})
        n = n_saved if n_layers_to_load < 0 else min(n_layers_to_load, n_saved)
        for i, layer in enumerate(self.layers[:n]):
            saved = {key.split('.', 1)[1]: value for key, value in tensors.items()
                     if key.split('.', 1)[0] == str(i)}
            current = self._layer_values(layer)
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
            self._set_layer_values(layer, saved)
        self.model.optimisers = Optimisers(self.model.optimisers.hyper_params)


def read_parameter_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a :meth:`MixedConvNN.saveParameters` file (``'layer.param'`` keys)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise ModelFileError(f"Cannot read parameter file {path}: {err}") from err


def read_layer_descriptions(path: str | os.PathLike) -> list[dict] | None:
    """Pooling, mfp and activation per layer recorded by saveParameters (None if absent)."""
    from safetensors import safe_open
    with safe_open(str(path), 'numpy') as f:
        text = (f.metadata() or {}).get('layers')
    return json.loads(text) if text else None
