"""ELEKTRONN v1 configs: a plain CNN or MLP described by v1's keys, for ``elektronn2-train``.

ELEKTRONN v1 built its networks from a few config keys (``n_dim``, ``desired_input``,
``filters``, ``pool``, ``nof_filters``, ``MLP_layers``, ``activation_func``,
``dropout_rates``, ``target``, ``n_lab``, ...) and named its training settings
differently (``SGD_params``, ``LR_decay``, ``data_class_name``, ``d_files``, ...).
:func:`from_v1_settings` translates such a config into elektronn2's settings,
including a ``create_model`` that builds the described network with neuromancer.

As in v1, the last layer is added automatically: a Perceptron with ``n_lab``
outputs after MLP layers, else a 1x1 convolution; it never has dropout. Sizes are
given in v1's axis order, (x, y) or (x, y, z), and become elektronn2's (x, y) /
(z, x, y) tags. Data volumes are read as v1's ``zchxy_order`` says: ``False`` (v1's
default, files (ch,) x, y, z) reads them through :class:`~elektronn2.data.derived.AxisOrder`
(the batch creator's ``zxy=False``); ``True`` (z-first files) and a config without the
key read them in elektronn2's (z, y, x) layout.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import neuromancer as nm
from ..data.sources import channel_volume_shape, open_source
from ..errors import ConfigError
from ..utils.cnncalculator import cnncalculator

logger = logging.getLogger('elektronn2')

NETWORK_KEYS = ('n_dim', 'desired_input', 'filters', 'pool', 'nof_filters', 'pooling_mode',
                'MFP', 'MLP_layers', 'activation_func', 'dropout_rates', 'target', 'n_lab',
                'mode', 'rnn_layer_kwargs', 'param_file')
DATA_KEYS = ('data_class_name', 'data_load_kwargs', 'data_batch_kwargs', 'data_path',
             'label_path', 'd_files', 'l_files', 'cube_prios', 'valid_cubes',
             'example_ignore_threshold', 'grey_augment_channels', 'flip_data',
             'anisotropic_data', 'warp_on', 'border_mode', 'upright_x', 'zchxy_order',
             'use_example_weights', 'lazy_labels', 'pre_process', 'downsample_xy')
OPTIMISATION_KEYS = ('optimizer', 'SGD_params', 'Adam_params', 'RPROP_params', 'CG_params',
                     'LBFGS_params', 'weight_decay', 'LR_decay', 'LR_schedule',
                     'label_prop_thresh')
#: v1 settings that elektronn2 accepts but does not need, with the reason.
WITHOUT_EFFECT = {
    'plot_on': 'plots are always drawn',
    'print_status': 'the status line is always shown',
    'device': 'choose it with elektronn2-train --gpu',
    'overwrite': 'elektronn2-train never overwrites a run directory',
    'param_save_h': 'checkpoints are written every param_save_it steps',
    'border_mode': "v1's border_mode concerned resizing img-scalar data",
    'RPROP_params': "elektronn2's Rprop uses torch's defaults",
    'CG_params': 'there is no CG optimiser',
    'LBFGS_params': "elektronn2's LBFGS uses torch's defaults",
}
#: Every v1 key that elektronn2-train understands (besides those both versions share).
V1_KEYS = frozenset(NETWORK_KEYS + DATA_KEYS + OPTIMISATION_KEYS + tuple(WITHOUT_EFFECT))

MODES = ('img-img', 'img-scalar', 'vect-scalar')
_OPTIMISERS = {'SGD': 'SGD', 'Adam': 'Adam', 'RPROP': 'Rprop', 'LBFGS': 'LBFGS'}
_UNSUPPORTED = {  # key -> (value allowed, what to do instead)
    'rnn_layer_kwargs': (None, 'build recurrent models with nm.GRU / nm.LSTM and nm.Scan in '
                               'create_model()'),
    'param_file': (None, 'v1 parameter files are pickles, which elektronn2 never loads; '
                         'continue from an elektronn2 model with model_load_path'),
    'use_example_weights': (False, 'pass example_weights to nm.MultinoulliNLL in create_model()'),
    'lazy_labels': (False, 'use ret_ll_mask and the lazy-label masks in create_model()'),
    'pre_process': (None, 'standardise the data files beforehand'),
    'downsample_xy': (False, 'downsample the data files beforehand'),
}


@dataclass(frozen=True)
class Layer:
    """One hidden layer of a v1 network (a convolution if ``filter_shape`` is set)."""
    n_f: int
    activation_func: str
    dropout_rate: float
    filter_shape: tuple[int, ...] | None = None
    pool_shape: tuple[int, ...] | None = None
    mfp: bool = False


@dataclass(frozen=True)
class V1Network:
    """A network as v1 described it: input, hidden layers, automatic last layer, target."""
    input_shape: tuple[int, ...]   # channels + spatial sizes, or (n_features,)
    tags: str
    layers: tuple[Layer, ...]
    n_lab: int
    target: str
    class_weights: tuple[float, ...] | None = None
    label_prop_thresh: float | None = None

    def create_model(self):
        """Build the network in the current model and designate its nodes."""
        out = inp = nm.Input((None,) + self.input_shape, self.tags, name='raw')
        for layer in self.layers:
            if layer.filter_shape is not None:
                out = nm.Conv(out, layer.n_f, layer.filter_shape, layer.pool_shape,
                              activation_func=layer.activation_func, mfp=layer.mfp,
                              dropout_rate=layer.dropout_rate)
            else:
                out = nm.Perceptron(out, layer.n_f, activation_func=layer.activation_func,
                                    flatten=len(out.shape.tags) > 2,
                                    dropout_rate=layer.dropout_rate)
        conv_out = len(out.shape.tags) > 2
        if conv_out:
            out = nm.Conv(out, self.n_lab, 1, activation_func='lin', name='last')
        else:
            out = nm.Perceptron(out, self.n_lab, activation_func='lin', name='last')
        if self.target == 'regression':
            target = nm.Input_like(out, name='target')
            loss = nm.AggregateLoss(nm.SquaredLoss(out, target), name='loss')
            prediction, extra = out, []
        else:
            prediction = nm.Softmax(out)
            target = nm.Input_like(prediction, override_f=1, name='target', dtype='int16')
            nll = nm.MultinoulliNLL(prediction, target, target_is_sparse=True,
                                    class_weights=self.class_weights,
                                    label_prop_thresh=self.label_prop_thresh)
            loss = nm.AggregateLoss(nll, name='loss')
            extra = [nm.Errors(prediction, target, target_is_sparse=True)]
        model = nm.model_manager.getmodel()
        model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                              prediction_node=prediction, prediction_ext=[loss, *extra, prediction])
        return model


def _per_layer(value, n: int, key: str, default) -> list:
    """A v1 setting given globally or per layer -> one value per layer."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return [default] * n
    if not isinstance(value, (list, tuple)):
        return [value] * n
    if len(value) > n:
        raise ConfigError(f"{key} has {len(value)} entries for {n} hidden layers (the last "
                          f"layer is added automatically and has none)")
    return list(value) + [default] * (n - len(value))


def _to_net_order(value, n_dim: int, key: str) -> tuple[int, ...]:
    """A v1 size (int, or (x, y) / (x, y, z)) -> elektronn2's (x, y) / (z, x, y)."""
    if isinstance(value, (int, float)):
        sizes = (int(value),) * n_dim
    else:
        sizes = tuple(int(v) for v in value)
    if len(sizes) != n_dim:
        raise ConfigError(f"{key}={value!r} needs {n_dim} entries (v1 order x, y[, z]) for "
                          f"n_dim={n_dim}")
    return sizes if n_dim == 2 else (sizes[2],) + sizes[:2]


def _mnist_kwargs(v1: dict) -> dict | None:
    """data_load_kwargs if the data class is MNISTData, else None."""
    if v1.get('data_class_name') != 'MNISTData':
        return None
    return dict(v1.get('data_load_kwargs') or {})


def _n_lab(v1: dict) -> int:
    if v1.get('n_lab') is not None:
        return int(v1['n_lab'])
    if _mnist_kwargs(v1) is not None:
        return 10
    raise ConfigError("n_lab=None: give the number of classes (or outputs); elektronn2 does "
                      "not detect it from the data")


def _input_channels(v1: dict) -> int:
    """Channels of the first image file of an img-img config (1 if it cannot be read yet)."""
    files = v1.get('d_files') or []
    if not files:
        return 1
    file, key = files[0]
    path = Path(v1.get('data_path') or '.').expanduser() / file
    return channel_volume_shape(open_source(path, key))[0] if path.exists() else 1


def network_from_v1(v1: dict) -> V1Network:
    """The network that v1's keys describe (see the module docstring)."""
    mode = v1.get('mode', 'img-img')
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}; v1 modes are {MODES}")
    target = v1.get('target', 'nll')
    if target not in ('nll', 'regression'):
        raise ConfigError(f"target={target!r}: only 'nll' and 'regression' nets can be built "
                          f"from v1 keys; write create_model() for others")
    filters, pools = list(v1.get('filters') or []), list(v1.get('pool') or [])
    nof_filters, mlp = list(v1.get('nof_filters') or []), list(v1.get('MLP_layers') or [])
    if not len(filters) == len(pools) == len(nof_filters):
        raise ConfigError(f"filters, pool and nof_filters need one entry per conv layer; got "
                          f"{len(filters)}, {len(pools)} and {len(nof_filters)}")
    if mode == 'vect-scalar' and filters:
        raise ConfigError("mode='vect-scalar' (vectors) cannot have conv layers (filters)")
    n_hidden = len(filters) + len(mlp)
    activations = _per_layer(v1.get('activation_func'), n_hidden, 'activation_func', 'relu')
    dropouts = _per_layer(v1.get('dropout_rates'), n_hidden, 'dropout_rates', 0.0)
    mfps = _per_layer(v1.get('MFP'), len(filters), 'MFP', False)
    for mode_name in _per_layer(v1.get('pooling_mode'), len(filters), 'pooling_mode', 'max'):
        if mode_name != 'max':
            raise ConfigError(f"pooling_mode={mode_name!r}: elektronn2 pools with 'max' only")
    if mode == 'vect-scalar':
        shape, tags, conv = (_vector_size(v1),), 'b,f', []
    else:
        n_dim = int(v1.get('n_dim', 2))
        if n_dim not in (2, 3):
            raise ConfigError(f"n_dim={n_dim}; image networks are 2- or 3-dimensional")
        conv = [(_to_net_order(f, n_dim, 'filters'), _to_net_order(p, n_dim, 'pool'))
                for f, p in zip(filters, pools)]
        shape = (_input_channels(v1),) + _patch_size(v1, conv, mfps, n_dim)
        tags = 'b,f,x,y' if n_dim == 2 else 'b,f,z,x,y'
    layers = [Layer(int(n), activations[i], float(dropouts[i] or 0.0), f, p, bool(mfps[i]))
              for i, (n, (f, p)) in enumerate(zip(nof_filters, conv))]
    layers += [Layer(int(n), activations[len(conv) + i], float(dropouts[len(conv) + i] or 0.0))
               for i, n in enumerate(mlp)]
    weights = v1.get('class_weights')
    return V1Network(shape, tags, tuple(layers), _n_lab(v1), target,
                     tuple(float(w) for w in weights) if weights is not None else None,
                     v1.get('label_prop_thresh'))


def _vector_size(v1: dict) -> int:
    if v1.get('desired_input') is not None:
        return int(v1['desired_input'])
    mnist = _mnist_kwargs(v1)
    if mnist is not None:  # v1 cut 26 x 26 crops for shift augmentation
        return 26 * 26 if mnist.get('shift_augment', True) else 28 * 28
    raise ConfigError("mode='vect-scalar' needs desired_input = the number of input features")


def _patch_size(v1: dict, conv: list, mfps: list, n_dim: int) -> tuple[int, ...]:
    """desired_input (v1 order) snapped to the nearest size the conv layers accept."""
    if v1.get('desired_input') is None:
        raise ConfigError("desired_input (the input patch size, v1 order x, y[, z]) is missing")
    desired = _to_net_order(v1['desired_input'], n_dim, 'desired_input')
    if not conv:
        return desired
    calc = cnncalculator([f for f, _ in conv], [p for _, p in conv], desired_patch_size=desired,
                         mfp=[bool(m) for m in mfps], ndim=n_dim)
    return tuple(calc.patch_size)


def _optimiser_settings(v1: dict) -> dict:
    name = v1.get('optimizer', 'SGD')
    if name not in _OPTIMISERS:
        raise ConfigError(f"optimizer={name!r} is not available; choose one of "
                          f"{sorted(_OPTIMISERS)}")
    settings: dict[str, Any] = {'optimiser': _OPTIMISERS[name]}
    params = {}
    sgd, adam = dict(v1.get('SGD_params') or {}), dict(v1.get('Adam_params') or {})
    source = adam if name == 'Adam' else sgd
    for v1_name, v2_name in (('LR', 'lr'), ('lr', 'lr'), ('momentum', 'mom'), ('beta1', 'mom'),
                             ('beta2', 'beta2')):
        if v1_name in source:
            params[v2_name] = float(source[v1_name])
    if 'weight_decay' in v1:
        params['wd'] = float(v1['weight_decay'] or 0.0)
    settings['optimiser_params'] = params
    if v1.get('LR_schedule'):
        settings['schedules'] = {'lr': {'updates': [tuple(u) for u in v1['LR_schedule']]}}
        if v1.get('LR_decay') not in (None, 1, 1.0):
            logger.warning("v1 config: LR_schedule is used, LR_decay=%s is dropped (elektronn2 "
                           "applies one schedule per variable)", v1['LR_decay'])
    elif v1.get('LR_decay') is not None:
        settings['schedules'] = {'lr': {'dec': float(v1['LR_decay'])}}
    return settings


def _data_settings(v1: dict) -> dict:
    if v1.get('data_class_name'):
        kwargs = dict(v1.get('data_load_kwargs') or {})
        if v1['data_class_name'] == 'MNISTData' and 'center' in kwargs:
            kwargs.pop('center')
            logger.info("v1 config: MNISTData's 'center' is dropped; elektronn2 scales MNIST "
                        "to [0, 1]")
        spec = v1['data_class_name']
        return {'data_class': tuple(spec) if isinstance(spec, (list, tuple)) else spec,
                'data_init_kwargs': kwargs,
                'data_batch_args': dict(v1.get('data_batch_kwargs') or {})}
    if not v1.get('d_files'):
        return {}
    init = {'d_path': v1.get('data_path'), 'l_path': v1.get('label_path'),
            'd_files': [tuple(f) for f in v1['d_files']],
            'l_files': [tuple(f) for f in v1.get('l_files') or []],
            'valid_cubes': list(v1.get('valid_cubes') or []),
            'aniso_factor': 2 if v1.get('anisotropic_data', True) else 1}
    if v1.get('cube_prios') is not None:
        init['cube_prios'] = list(v1['cube_prios'])
    init.update(_axis_order(v1))
    batch: dict[str, Any] = {'grey_augment_channels': list(v1.get('grey_augment_channels', [0])),
                             'warp': float(v1.get('warp_on') or 0)}
    warp_args = {}
    if v1.get('flip_data') is False:
        warp_args.update(flips=False, swaps=False)
    if v1.get('upright_x'):
        warp_args['no_x_flip'] = True
    if warp_args:
        batch['warp_args'] = warp_args
    if v1.get('example_ignore_threshold') is not None:
        batch['ignore_thresh'] = float(v1['example_ignore_threshold'])
    return {'data_class': 'BatchCreatorImage', 'data_init_kwargs': init, 'data_batch_args': batch}


def _axis_order(v1: dict) -> dict:
    """Batch creator arguments for v1's ``zchxy_order``: False means files (ch,) x, y, z."""
    order = v1.get('zchxy_order')
    if order is None:
        logger.info("v1 config: no zchxy_order, the volumes are read as (z, y, x); set "
                    "zchxy_order = False for v1's (x, y, z) files")
        return {}
    if not order:
        return {'zxy': False}
    files = v1.get('d_files') or []
    if files:
        path = Path(v1.get('data_path') or '.').expanduser() / files[0][0]
        if path.exists() and open_source(path, files[0][1]).ndim == 4:
            raise ConfigError(f"zchxy_order=True with 4-D volumes ({path}): v1's (z, ch, x, y) "
                              f"layout is not read; store the channels first, (ch, z, y, x)")
    return {}


def _check_supported(v1: dict) -> None:
    for key, (allowed, instead) in _UNSUPPORTED.items():
        if v1.get(key) not in (None, allowed):
            raise ConfigError(f"v1 setting {key}={v1[key]!r} is not supported: {instead}")
    for key in sorted(set(v1) & set(WITHOUT_EFFECT)):
        logger.info("v1 setting %s has no effect: %s", key, WITHOUT_EFFECT[key])


def from_v1_settings(values: dict, v1: dict, config_name: str = 'config') -> dict:
    """elektronn2 settings for a config that uses ELEKTRONN v1 keys.

    Args:
        values: the config's settings with elektronn2 names (they take precedence).
        v1: its settings with v1 names (keys of :data:`V1_KEYS`).
        config_name: for messages.
    Returns:
        ``values`` completed by the translated v1 settings, with ``create_model`` built
        from the network keys unless the config defines one or sets ``model_load_path``.
    """
    try:
        _check_supported(v1)
        translated = {**_optimiser_settings(v1), **_data_settings(v1)}
        if (values.get('create_model') is None and values.get('model_load_path') is None
                and (v1.get('nof_filters') or v1.get('MLP_layers'))):
            translated['create_model'] = network_from_v1(v1).create_model
    except ConfigError as err:
        raise ConfigError(f"Config {config_name}: {err}") from None
    settings = {**translated, **values}
    if isinstance(settings.get('history_freq'), (list, tuple)):  # v1: [500]
        settings['history_freq'] = int(settings['history_freq'][0])
    if settings.get('background_processes') is True:
        settings['background_processes'] = 2
    save_path, save_name = settings.get('save_path'), settings.get('save_name')
    if save_path and save_name and Path(save_path).expanduser().name == save_name:
        settings['save_path'] = str(Path(save_path).expanduser().parent)  # v1 appended it
    return settings
