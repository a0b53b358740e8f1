"""ExperimentConfig: a training configuration in ELEKTRONN2's Python-file style.

A config is a Python file whose top-level names are the settings (see
:data:`DEFAULTS`); ``create_model()`` builds the model. The user's rc file
(``~/.elektronn2rc``, :func:`elektronn2.config.read_user_settings`) supplies defaults
of the settings it shares with a config (:data:`USER_DEFAULTS`): a config's own
values override them, as the built-in defaults are overridden by both. Loading checks every
setting before any work starts: unknown names warn with the closest known one;
missing required settings, wrong types, values out of range, malformed schedules and
unknown optimisers raise a :class:`~elektronn2.errors.ConfigError` naming the setting.
:func:`build_model`, :func:`check_schedule_targets` and :func:`build_data` check what
needs the model or the data class: batch sizes, schedule variables, and the keys of
``data_init_kwargs``, ``data_batch_args`` and ``model_load_args`` against the
signatures they are passed to.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib.util
import inspect
import logging
import math
import numbers
import os
import runpy
import sys
import traceback
import types
from pathlib import Path
from typing import Any, Callable

from .. import data as data_package
from ..config import CHOICES, USER_SETTINGS, read_user_settings, user_config_path
from ..config import config as global_config
from ..data.rng import seed_global_generators
from ..errors import ConfigError, Error
from ..legacy.declarative import V1_KEYS, from_v1_settings
from ..neuromancer.basic import APPLY_FUNCTIONS
from ..neuromancer.loading import modelload
from ..neuromancer.optimiser import OPTIMISERS
from ..neuromancer.registry import model_manager
from .preview import preview_options
from .schedules import Schedule

logger = logging.getLogger('elektronn2')

#: Every setting with its default (None: no default / optional).
DEFAULTS: dict[str, Any] = {
    'save_path': None,            # parent directory of runs (default: elektronn2.config.save_path)
    'save_name': None,            # run directory name (default: the config file's name)
    'create_model': None,         # function () -> Model
    'model_load_path': None,      # or a saved model to continue from
    'model_load_args': {},        # modelload(...) keyword arguments
    'batch_size': 1,
    'data_class': None,           # 'BatchCreatorImage', 'MNISTData' or (file.py, 'ClassName')
    'data_init_kwargs': {},
    'data_batch_args': {},
    'preview_data_path': None,    # HDF5 file, or (file, key)
    'preview_kwargs': {'export_class': 'all', 'max_z_pred': 5},
    'initial_prev_h': 1.0,        # hours until the first preview
    'prev_save_h': 1.0,           # hours between previews
    'n_steps': 150000,
    'max_runtime': 24 * 3600,     # seconds
    'history_freq': 200,          # steps between monitoring points
    'monitor_batch_size': 10,
    'optimiser': 'Adam',
    'optimiser_params': {},       # {'lr', 'mom', 'beta2', 'wd'}
    'schedules': {},              # {'lr': {'dec': 0.995}, 'mom': {'updates': [(1000, 0.9)]}, ...}
    'class_weights': None,
    'background_processes': 2,    # batch worker processes (0: in the main process)
    'param_save_it': 1000,        # steps between checkpoints
    'seed': 0,
    'network_arch': {},           # ELEKTRONN2's; only {} (no adversarial training here)
    # execution settings (None: keep elektronn2.config's, by default 'auto')
    'precision': None,            # 'auto', 'fp32', 'bf16' or 'fp16'
    'memory_format': None,        # 'auto', 'contiguous' or 'channels_last'
    'compile': None,              # 'auto', 'on' or 'off'
}
#: settings whose defaults the user's rc file may set (ELEKTRONN2's names)
USER_DEFAULTS = tuple(key for key in DEFAULTS if key in USER_SETTINGS)
#: settings of elektronn2.config that a training config may override
EXECUTION_SETTINGS = ('precision', 'memory_format', 'compile')

_TYPES = {
    'save_path': (str,), 'save_name': (str,), 'model_load_path': (str,),
    'model_load_args': (dict,), 'batch_size': (int,), 'data_class': (str, tuple, list),
    'data_init_kwargs': (dict,), 'data_batch_args': (dict,),
    'preview_data_path': (str, tuple, list), 'preview_kwargs': (dict,),
    'initial_prev_h': (int, float), 'prev_save_h': (int, float), 'n_steps': (int,),
    'max_runtime': (int, float), 'history_freq': (int,), 'monitor_batch_size': (int,),
    'optimiser': (str,), 'optimiser_params': (dict,), 'schedules': (dict,),
    'class_weights': (list, tuple), 'background_processes': (int, bool),
    'param_save_it': (int,), 'seed': (int,), 'network_arch': (dict,),
    'precision': (str,), 'memory_format': (str,), 'compile': (str,),
}
#: numeric settings: (test of a valid value, its description)
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    **{key: (lambda v: v >= 1, '>= 1') for key in
       ('batch_size', 'n_steps', 'history_freq', 'monitor_batch_size', 'param_save_it')},
    'max_runtime': (lambda v: v > 0, '> 0 seconds (inf: no limit)'),
    'initial_prev_h': (lambda v: v >= 0, '>= 0 hours (inf: no previews)'),
    'prev_save_h': (lambda v: v > 0, '> 0 hours'),
    'background_processes': (lambda v: v >= 0, '>= 0 (0: batches in the main process)'),
    'seed': (lambda v: v >= 0, '>= 0'),
}
#: optimiser_params and the variables of the same name in schedules
OPTIMISER_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    'lr': (lambda v: 0 < v < math.inf, '> 0 and finite'),
    'mom': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'beta2': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'wd': (lambda v: 0 <= v < math.inf, '>= 0 and finite'),
}
#: what schedules may change besides data_batch_args entries and numeric model attributes
SCHEDULE_VARIABLES = (*OPTIMISER_RANGES, 'dropout')
#: ELEKTRONN2's per-variable schedule settings (``lr_schedule = {'dec': 0.995}``): a dict
#: becomes ``schedules[variable]`` unless ``schedules`` names that variable; None is nothing.
SCHEDULE_ALIASES = {f'{v}_schedule': v for v in ('lr', 'mom', 'wd', 'dropout', 'gradnet')}


def closest_hint(name: str, choices) -> str:
    """'; did you mean X?' naming the choice closest to ``name``, or '' if none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ''


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range_problem(key: str, value) -> str | None:
    """What is wrong with ``value`` for the numeric setting ``key`` (None: nothing)."""
    valid, description = _RANGES[key]
    if value is None or not valid(value):
        return f"{key}={value!r} must be {description}"
    return None


def user_defaults() -> dict:
    """The settings of :data:`USER_DEFAULTS` that the user's rc file sets, checked (a
    ConfigError names the rc file)."""
    values = {k: v for k, v in read_user_settings().items() if k in USER_DEFAULTS}
    for key, value in values.items():
        problem = _range_problem(key, value) if key in _RANGES else None
        if problem:
            raise ConfigError(f"{user_config_path()}: {problem}")
    return values


class ExperimentConfig:
    """The validated settings of one training run (attributes named as in the file)."""

    def __init__(self, path: str | os.PathLike, overrides: dict | None = None):
        self.path = Path(path).expanduser().resolve()
        values = dict(DEFAULTS)
        values.update(user_defaults())
        values.update(self._read(self.path))
        values.update(overrides or {})
        self._check(values)
        for key, value in values.items():
            setattr(self, key, value)
        self.save_path = os.path.expanduser(self.save_path or global_config.save_path)
        self.save_name = self.save_name or self.path.stem
        if self.preview_data_path is not None:
            self.preview_data_path = _expand_file_spec(self.preview_data_path)

    @staticmethod
    def _read(path: Path) -> dict:
        if not path.is_file():
            raise ConfigError(f"Config file {str(path)!r} does not exist")
        try:
            with theano_stand_in():
                namespace = runpy.run_path(str(path), run_name='__elektronn2_config__')
        except SyntaxError as err:
            raise ConfigError(f"Syntax error in config {str(path)!r}, line {err.lineno}: "
                              f"{err.msg}: {(err.text or '').strip()!r}") from None
        except Exception as err:
            raise ConfigError(f"Config {str(path)!r} raised {type(err).__name__} while "
                              f"loading: {err}") from err
        values, v1_values, aliases = {}, {}, {}
        for key, value in namespace.items():
            if key.startswith('_') or isinstance(value, types.ModuleType):
                continue
            if key in DEFAULTS:
                values[key] = value
            elif key in SCHEDULE_ALIASES:
                aliases[key] = value
            elif key in V1_KEYS:  # ELEKTRONN v1's names, translated below
                v1_values[key] = value
            elif not (inspect.isfunction(value) or inspect.isclass(value)):
                logger.warning("Config %s: unknown setting %r is ignored%s", path.name, key,
                               closest_hint(key, DEFAULTS))
        values = _with_schedule_aliases(values, aliases, path.name)
        return from_v1_settings(values, v1_values, path.name) if v1_values else values

    def error(self, message: str) -> ConfigError:
        """A ConfigError whose message starts with this config's file name."""
        return ConfigError(f"Config {self.path.name}: {message}")

    def _check(self, values: dict) -> None:
        if values['create_model'] is None and values['model_load_path'] is None:
            raise self.error("define create_model() or set model_load_path")
        if values['create_model'] is not None and not callable(values['create_model']):
            raise self.error("create_model must be a function")
        self._check_types(values)
        self._check_ranges(values)
        self._check_optimiser(values)
        self._check_file_specs(values)
        self._check_preview_kwargs(values['preview_kwargs'])
        for key in EXECUTION_SETTINGS:
            if values[key] is not None and values[key] not in CHOICES[key]:
                raise self.error(f"{key}={values[key]!r} is invalid; choose one of "
                                 f"{CHOICES[key]}")
        self._check_schedules(values['schedules'])
        if values['network_arch']:
            raise self.error(
                f"network_arch={values['network_arch']!r:.80} is not supported: alternating "
                f"adversarial training belongs to unreleased ELEKTRONN2 code (its released trainer "
                f"needs nodes 'advtarget', 'flip' and 'loss_total' and nm.advmerge, which the "
                f"released neuromancer lacks). Train the networks without network_arch, or write "
                f"the alternation as your own loop over model.trainingstep")

    def _check_types(self, values: dict) -> None:
        for key, allowed in _TYPES.items():
            value = values[key]
            if value is None:
                continue
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise self.error(f"{key}={value!r} must be of type "
                                 f"{' or '.join(t.__name__ for t in allowed)}, not "
                                 f"{type(value).__name__}")

    def _check_ranges(self, values: dict) -> None:
        for key in _RANGES:
            problem = _range_problem(key, values[key])
            if problem:
                raise self.error(problem)
        weights = values['class_weights']
        if weights is not None and not (weights and all(_is_real(w) and 0 <= w < math.inf
                                                        for w in weights)):
            raise self.error(f"class_weights={weights!r} must be a non-empty list of finite "
                             f"numbers >= 0, one per class")
        name = values['save_name']
        if name is not None and (name in ('', '.', '..') or '/' in name or os.sep in name):
            raise self.error(f"save_name={name!r} must be a plain directory name (no path "
                             f"separators); the run directory is save_path/save_name")

    def _check_optimiser(self, values: dict) -> None:
        if values['optimiser'] not in OPTIMISERS:
            raise self.error(f"unknown optimiser {values['optimiser']!r}; choose one of "
                             f"{sorted(OPTIMISERS)}")
        unknown = set(values['optimiser_params']) - set(OPTIMISER_RANGES)
        if unknown:
            raise self.error(f"optimiser_params has unknown keys {sorted(unknown)}; valid: "
                             f"{', '.join(OPTIMISER_RANGES)}")
        for key, value in values['optimiser_params'].items():
            self._check_optimiser_value(f"optimiser_params[{key!r}]={value!r}", key, value)

    def _check_optimiser_value(self, what: str, key: str, value) -> None:
        valid, description = OPTIMISER_RANGES[key]
        if not (_is_real(value) and valid(value)):
            raise self.error(f"{what} is invalid; {key} must be a number {description}")

    def _check_file_specs(self, values: dict) -> None:
        if values['data_class'] is None:
            raise self.error("data_class is missing (e.g. 'BatchCreatorImage', 'MNISTData' or "
                             "('file.py', 'MyData'))")
        for key, form in (('data_class', "('file.py', 'ClassName')"),
                          ('preview_data_path', "('file.h5', 'key')")):
            spec = values[key]
            if isinstance(spec, (tuple, list)) and not (
                    len(spec) == 2 and all(isinstance(part, str) for part in spec)):
                raise self.error(f"{key}={spec!r} must be a string or a pair {form}")

    def _check_preview_kwargs(self, kwargs: dict) -> None:
        try:
            preview_options(kwargs)
        except ConfigError as err:
            raise self.error(str(err)) from None

    def _check_schedules(self, schedules: dict) -> None:
        for name, spec in schedules.items():
            if not isinstance(spec, dict):
                raise self.error(f"schedules[{name!r}] must be a dict like {{'dec': 0.995}}, "
                                 f"got {spec!r}")
            try:
                schedule = Schedule.from_spec(name, spec)
            except ConfigError as err:
                raise self.error(str(err)) from None
            if name in OPTIMISER_RANGES:
                for value in schedule.targets():
                    self._check_optimiser_value(f"schedules[{name!r}] value {value!r}", name,
                                                value)

    def existing_run_dir(self) -> Path | None:
        """The run directory this config made already (None: the trainer makes one)."""
        return None

    def check_save_path(self) -> None:
        """ConfigError unless a run directory can be made in ``save_path`` (which may not
        exist yet: its nearest existing ancestor must be a writable directory)."""
        existing = Path(self.save_path)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise self.error(f"save_path {self.save_path!r} cannot be created: "
                             f"{str(existing)!r} is a file, not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise self.error(f"save_path {self.save_path!r}: {str(existing)!r} is not "
                             f"writable; choose another save_path (or --save-path)")

    def as_dict(self) -> dict:
        """The settings (without create_model), e.g. for the shell's ``exp_config``."""
        return {k: getattr(self, k) for k in DEFAULTS if k != 'create_model'}

    def apply_execution_settings(self) -> None:
        """Set ``elektronn2.config``'s precision, memory_format and compile where given."""
        for key in EXECUTION_SETTINGS:
            if getattr(self, key) is not None:
                setattr(global_config, key, getattr(self, key))


def _with_schedule_aliases(values: dict, aliases: dict, config_name: str) -> dict:
    """``values`` with the :data:`SCHEDULE_ALIASES` settings folded into ``schedules``."""
    if not isinstance(values.get('schedules', {}), dict):
        return values      # the type check reports it
    schedules = dict(values.get('schedules', {}))
    for key, spec in aliases.items():
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"Config {config_name}: {key}={spec!r} must be None or a dict "
                              f"like {{'dec': 0.995}}")
        variable = SCHEDULE_ALIASES[key]
        if variable in schedules:
            logger.warning("Config %s: %s is ignored; schedules[%r] is set", config_name, key,
                           variable)
        else:
            schedules[variable] = spec
    return {**values, 'schedules': schedules} if schedules else values


#: Theano functions that ELEKTRONN2 configs pass to ``nm.ApplyFunc``, with the function of
#: :data:`~elektronn2.neuromancer.basic.APPLY_FUNCTIONS` that computes the same (a reduction
#: without ``axis`` reduces every axis, as in Theano).
THEANO_EQUIVALENTS = {
    'theano.tensor.mean': 'torch.mean', 'theano.tensor.sum': 'torch.sum',
    'theano.tensor.max': 'torch.amax', 'theano.tensor.min': 'torch.amin',
    'theano.tensor.std': 'torch.std', 'theano.tensor.var': 'torch.var',
    'theano.tensor.abs_': 'torch.abs', 'theano.tensor.sqr': 'torch.square',
    'theano.tensor.sqrt': 'torch.sqrt', 'theano.tensor.exp': 'torch.exp',
    'theano.tensor.log': 'torch.log', 'theano.tensor.log1p': 'torch.log1p',
    'theano.tensor.tanh': 'torch.tanh', 'theano.tensor.sgn': 'torch.sign',
    'theano.tensor.nnet.sigmoid': 'torch.sigmoid', 'theano.tensor.nnet.relu': 'torch.relu',
    'theano.tensor.nnet.softplus': 'torch.nn.functional.softplus',
}


class _AbsentModule(types.ModuleType):
    """A module that can be imported but not used: the functions of
    :data:`THEANO_EQUIVALENTS` are their torch equivalents, any other attribute is a
    ConfigError."""

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)
        qualified = f"{self.__name__}.{name}"
        if qualified in THEANO_EQUIVALENTS:
            return APPLY_FUNCTIONS[THEANO_EQUIVALENTS[qualified]]
        raise ConfigError(f"The config uses {qualified}, but Theano is not installed: "
                          f"elektronn2 runs on PyTorch; use torch (e.g. in nm.ApplyFunc) instead "
                          f"(Theano functions that map to torch here: "
                          f"{', '.join(sorted(THEANO_EQUIVALENTS))})")


#: what ELEKTRONN2 configs import of Theano (``import theano.tensor as T``)
THEANO_MODULES = ('theano', 'theano.tensor', 'theano.tensor.nnet')


@contextlib.contextmanager
def theano_stand_in():
    """While config code runs, ``import theano`` and ``import theano.tensor as T`` succeed if
    Theano is not installed (ELEKTRONN2's configs import it, often without using it); using
    the modules raises a ConfigError. They leave ``sys.modules`` afterwards."""
    if 'theano' in sys.modules or importlib.util.find_spec('theano') is not None:
        yield
        return
    modules = {name: _AbsentModule(name) for name in THEANO_MODULES}
    for name, module in modules.items():
        parent, _, child = name.rpartition('.')
        if parent:
            object.__setattr__(modules[parent], child, module)
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in modules.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _expand_file_spec(spec):
    """'file.h5' or (file, key) with ~ expanded."""
    if isinstance(spec, (tuple, list)):
        return (os.path.expanduser(spec[0]),) + tuple(spec[1:])
    return os.path.expanduser(spec)


def _run_user_code(exp: ExperimentConfig, what: str, function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)``; an exception that is not an elektronn2 error becomes a
    ConfigError naming the config, ``what`` and the config line (traceback: debug log)."""
    try:
        return function(*args, **kwargs)
    except Error:
        raise
    except Exception as err:
        logger.debug("%s (config %s) raised:", what, exp.path, exc_info=True)
        lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
                 if frame.filename == str(exp.path)]
        where = f" at line {lines[-1]}" if lines else ''
        raise exp.error(f"{what} raised {type(err).__name__}{where}: {err}") from err


def _check_kwargs(exp: ExperimentConfig, setting: str, kwargs: dict, function: Callable,
                  n_positional: int, reserved: tuple[str, ...] = ()) -> None:
    """ConfigError for a key of ``kwargs`` that ``function`` does not take; its first
    ``n_positional`` parameters and ``reserved`` ones are passed by the caller. A function
    taking ``**kwargs`` accepts every key."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):     # no signature to check against
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    valid = [p.name for p in params[n_positional:] if p.name not in reserved
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in valid:
            raise exp.error(f"{setting} has the unknown key {key!r}{closest_hint(key, valid)} "
                            f"(valid keys of {getattr(function, '__qualname__', function)}: "
                            f"{', '.join(valid) or 'none'})")


def build_model(exp: ExperimentConfig):
    """The model: ``create_model()`` (run with torch, numpy and random seeded from the
    config's ``seed``, so that its initial parameters are reproducible) or
    ``modelload(model_load_path, **model_load_args)``."""
    if exp.model_load_path is not None:
        model = _load_model(exp)
    else:
        model_manager.newmodel(exp.save_name)
        seed_global_generators(exp.seed)
        with theano_stand_in():
            model = _run_user_code(exp, 'create_model()', exp.create_model)
    if model is None or not hasattr(model, 'trainingstep'):
        raise exp.error("create_model() must return the Model (nm.model_manager.getmodel() "
                        "after designate_nodes)")
    for purpose in ('input_node', 'loss_node'):
        if getattr(model, purpose) is None:
            raise exp.error(f"the model has no {purpose}; call "
                            f"model.designate_nodes({purpose}=...) in create_model()")
    _check_batch_size(exp, model.input_node)
    for key, value in exp.optimiser_params.items():
        setattr(model, key, value)
    if exp.class_weights is not None:
        _set_class_weights(model, exp)
    return model


def _load_model(exp: ExperimentConfig):
    path = os.path.expanduser(exp.model_load_path)
    _check_kwargs(exp, 'model_load_args', exp.model_load_args, modelload, n_positional=1)
    try:
        return modelload(path, **exp.model_load_args)
    except Error as err:
        raise exp.error(f"model_load_path {path!r} cannot be loaded: {err}") from err


def _check_batch_size(exp: ExperimentConfig, node) -> None:
    """A fixed (hardcoded) input batch size must be batch_size and divide
    monitor_batch_size; a declared one that differs only warns."""
    declared = node.shape.batch_size
    if node.hardcoded_shape and declared is not None:
        if declared != exp.batch_size:
            raise exp.error(f"batch_size={exp.batch_size}, but the model's input {node.name!r} "
                            f"has the fixed batch size {declared}")
        if exp.monitor_batch_size % declared:
            raise exp.error(f"monitor_batch_size={exp.monitor_batch_size} must be a multiple of "
                            f"the fixed batch size {declared} of the model's input {node.name!r}")
    elif declared not in (None, exp.batch_size):
        logger.warning("Config %s: the model's input %r declares batch size %d; training uses "
                       "batch_size=%d", exp.path.name, node.name, declared, exp.batch_size)


def check_schedule_targets(exp: ExperimentConfig, model) -> None:
    """ConfigError for a schedule of something other than lr, mom, beta2, wd, dropout, a
    data_batch_args entry or a numeric attribute of ``model``."""
    for name in exp.schedules:
        if name in SCHEDULE_VARIABLES or name in exp.data_batch_args or \
                _is_real(getattr(model, name, None)):
            continue
        valid = [*SCHEDULE_VARIABLES, *exp.data_batch_args]
        raise exp.error(f"schedules[{name!r}]: no such variable (schedules change "
                        f"{', '.join(SCHEDULE_VARIABLES)}, a data_batch_args entry "
                        f"({', '.join(exp.data_batch_args) or 'none set'}) or a numeric model "
                        f"attribute){closest_hint(name, valid)}")


def _set_class_weights(model, exp: ExperimentConfig) -> None:
    import numpy as np
    nodes = [n for n in model.nodes.values() if 'class_weights' in n.params]
    if not nodes:
        raise exp.error("class_weights is set, but the model has no MultinoulliNLL with class "
                        "weights")
    for node in nodes:
        if node.params['class_weights'].numel() != len(exp.class_weights):
            raise exp.error(f"{len(exp.class_weights)} class_weights for "
                            f"{node.params['class_weights'].numel()} classes of {node.name!r}")
        node.set_param_values({'class_weights': np.asarray(exp.class_weights, np.float32)})


def build_data(exp: ExperimentConfig, model):
    """The data object: ``data_class(input_node, target_node, **data_init_kwargs)``; the
    keys of data_init_kwargs and data_batch_args are checked against its signatures."""
    spec = exp.data_class
    if isinstance(spec, str):
        cls = getattr(data_package, spec, None)
        if cls is None:
            raise exp.error(f"data_class {spec!r} is not in elektronn2.data (known: "
                            f"BatchCreatorImage, MNISTData; or give ('file.py', 'ClassName'))"
                            f"{closest_hint(spec, data_package.__all__)}")
    else:
        cls = _class_from_file(exp, *spec)
    if not (inspect.isclass(cls) and hasattr(cls, 'getbatch')):
        raise exp.error(f"data_class {spec!r} is not a data class (a class with getbatch())")
    _check_kwargs(exp, 'data_init_kwargs', exp.data_init_kwargs, cls, n_positional=2)
    _check_kwargs(exp, 'data_batch_args', exp.data_batch_args, cls.getbatch, n_positional=2,
                  reserved=('source',))
    return _run_user_code(exp, f"data_class {cls.__name__}(...)", cls, model.input_node,
                          model.target_node, **exp.data_init_kwargs)


def _class_from_file(exp: ExperimentConfig, file: str, name: str):
    """Import ``file`` as a module (its directory goes on sys.path, so that batch worker
    processes can unpickle instances) and return its class ``name``."""
    import importlib
    import sys
    path = Path(os.path.expanduser(file))
    if not path.is_absolute():
        path = exp.path.parent / path
    if not path.is_file():
        raise exp.error(f"data_class file {str(path)!r} does not exist")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    module = _run_user_code(exp, f"importing data_class file {str(path)!r}",
                            importlib.import_module, path.stem)
    if Path(getattr(module, '__file__', None) or '').resolve() != path.resolve():
        raise exp.error(f"data_class file {str(path)!r} cannot be imported as {path.stem!r}: "
                        f"that module name is taken by {module}; rename the file")
    cls = getattr(module, name, None)
    if cls is None:
        raise exp.error(f"{str(path)!r} defines no {name!r}"
                        f"{closest_hint(name, [k for k in vars(module) if not k.startswith('_')])}")
    return cls
