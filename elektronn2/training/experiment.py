"""ExperimentConfig: a training configuration in ELEKTRONN2's Python-file style.

A config is a Python file whose top-level names are the settings (see
:data:`DEFAULTS`); ``create_model()`` builds the model. Loading checks every
setting before any work starts: unknown names warn with the closest known one;
missing required settings, wrong types and unknown optimisers raise a
:class:`~elektronn2.errors.ConfigError` naming the setting.
"""
from __future__ import annotations

import difflib
import inspect
import logging
import os
import runpy
import types
from pathlib import Path
from typing import Any

from ..config import CHOICES
from ..config import config as global_config
from ..errors import ConfigError
from ..neuromancer.optimiser import OPTIMISERS

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
    # execution settings (None: keep elektronn2.config's, by default 'auto')
    'precision': None,            # 'auto', 'fp32', 'bf16' or 'fp16'
    'memory_format': None,        # 'auto', 'contiguous' or 'channels_last'
    'compile': None,              # 'auto', 'on' or 'off'
}
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
    'param_save_it': (int,), 'seed': (int,),
    'precision': (str,), 'memory_format': (str,), 'compile': (str,),
}
_POSITIVE = ('batch_size', 'n_steps', 'history_freq', 'monitor_batch_size', 'param_save_it')


class ExperimentConfig:
    """The validated settings of one training run (attributes named as in the file)."""

    def __init__(self, path: str | os.PathLike, overrides: dict | None = None):
        self.path = Path(path).expanduser().resolve()
        values = dict(DEFAULTS)
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
            namespace = runpy.run_path(str(path), run_name='__elektronn2_config__')
        except SyntaxError as err:
            raise ConfigError(f"Syntax error in config {str(path)!r}, line {err.lineno}: "
                              f"{err.msg}: {(err.text or '').strip()!r}") from None
        except Exception as err:
            raise ConfigError(f"Config {str(path)!r} raised {type(err).__name__} while "
                              f"loading: {err}") from err
        from ..legacy.declarative import V1_KEYS, from_v1_settings
        values, v1_values = {}, {}
        for key, value in namespace.items():
            if key.startswith('_') or isinstance(value, types.ModuleType):
                continue
            if key in DEFAULTS:
                values[key] = value
            elif key in V1_KEYS:  # ELEKTRONN v1's names, translated below
                v1_values[key] = value
            elif not (inspect.isfunction(value) or inspect.isclass(value)):
                close = difflib.get_close_matches(key, DEFAULTS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ''
                logger.warning("Config %s: unknown setting %r is ignored%s", path.name, key, hint)
        return from_v1_settings(values, v1_values, path.name) if v1_values else values

    def _check(self, values: dict) -> None:
        if values['create_model'] is None and values['model_load_path'] is None:
            raise ConfigError(f"Config {self.path.name}: define create_model() or set "
                              f"model_load_path")
        if values['create_model'] is not None and not callable(values['create_model']):
            raise ConfigError(f"Config {self.path.name}: create_model must be a function")
        for key, allowed in _TYPES.items():
            value = values[key]
            if value is None or (isinstance(value, bool) and bool not in allowed):
                if value is not None:
                    raise ConfigError(f"Config {self.path.name}: {key}={value!r} must be of type "
                                      f"{' or '.join(t.__name__ for t in allowed)}")
                continue
            if not isinstance(value, allowed):
                raise ConfigError(f"Config {self.path.name}: {key}={value!r} must be of type "
                                  f"{' or '.join(t.__name__ for t in allowed)}, not "
                                  f"{type(value).__name__}")
        for key in _POSITIVE:
            if values[key] < 1:
                raise ConfigError(f"Config {self.path.name}: {key}={values[key]} must be >= 1")
        if values['optimiser'] not in OPTIMISERS:
            raise ConfigError(f"Config {self.path.name}: unknown optimiser "
                              f"{values['optimiser']!r}; choose one of {sorted(OPTIMISERS)}")
        unknown = set(values['optimiser_params']) - {'lr', 'mom', 'beta2', 'wd'}
        if unknown:
            raise ConfigError(f"Config {self.path.name}: optimiser_params has unknown keys "
                              f"{sorted(unknown)}; valid: lr, mom, beta2, wd")
        if values['data_class'] is None:
            raise ConfigError(f"Config {self.path.name}: data_class is missing (e.g. "
                              f"'BatchCreatorImage', 'MNISTData' or ('file.py', 'MyData'))")
        for key in EXECUTION_SETTINGS:
            if values[key] is not None and values[key] not in CHOICES[key]:
                raise ConfigError(f"Config {self.path.name}: {key}={values[key]!r} is invalid; "
                                  f"choose one of {CHOICES[key]}")
        for name, spec in values['schedules'].items():
            if not isinstance(spec, dict):
                raise ConfigError(f"Config {self.path.name}: schedules[{name!r}] must be a dict "
                                  f"like {{'dec': 0.995}}, got {spec!r}")

    def as_dict(self) -> dict:
        """The settings (without create_model), e.g. for the shell's ``exp_config``."""
        return {k: getattr(self, k) for k in DEFAULTS if k != 'create_model'}

    def apply_execution_settings(self) -> None:
        """Set ``elektronn2.config``'s precision, memory_format and compile where given."""
        for key in EXECUTION_SETTINGS:
            if getattr(self, key) is not None:
                setattr(global_config, key, getattr(self, key))


def _expand_file_spec(spec):
    """'file.h5' or (file, key) with ~ expanded."""
    if isinstance(spec, (tuple, list)):
        return (os.path.expanduser(spec[0]),) + tuple(spec[1:])
    return os.path.expanduser(spec)


def build_model(exp: ExperimentConfig):
    """The model: ``create_model()`` or ``modelload(model_load_path, **model_load_args)``."""
    from ..neuromancer import model_manager, modelload
    if exp.model_load_path is not None:
        model = modelload(os.path.expanduser(exp.model_load_path), **exp.model_load_args)
    else:
        model_manager.newmodel(exp.save_name)
        model = exp.create_model()
    if model is None or not hasattr(model, 'trainingstep'):
        raise ConfigError(f"Config {exp.path.name}: create_model() must return the Model "
                          f"(nm.model_manager.getmodel() after designate_nodes)")
    for purpose in ('input_node', 'loss_node'):
        if getattr(model, purpose) is None:
            raise ConfigError(f"Config {exp.path.name}: the model has no {purpose}; call "
                              f"model.designate_nodes({purpose}=...) in create_model()")
    fixed = model.input_node.shape.batch_size
    if fixed is not None and model.input_node.hardcoded_shape and fixed != exp.batch_size:
        raise ConfigError(f"Config {exp.path.name}: batch_size={exp.batch_size}, but the model's "
                          f"input {model.input_node.name!r} has the fixed batch size {fixed}")
    for key, value in exp.optimiser_params.items():
        setattr(model, key, value)
    if exp.class_weights is not None:
        _set_class_weights(model, exp)
    return model


def _set_class_weights(model, exp: ExperimentConfig) -> None:
    import numpy as np
    nodes = [n for n in model.nodes.values() if 'class_weights' in n.params]
    if not nodes:
        raise ConfigError(f"Config {exp.path.name}: class_weights is set, but the model has no "
                          f"MultinoulliNLL with class weights")
    for node in nodes:
        if node.params['class_weights'].numel() != len(exp.class_weights):
            raise ConfigError(f"Config {exp.path.name}: {len(exp.class_weights)} class_weights "
                              f"for {node.params['class_weights'].numel()} classes of {node.name!r}")
        node.set_param_values({'class_weights': np.asarray(exp.class_weights, np.float32)})


def build_data(exp: ExperimentConfig, model):
    """The data object: ``data_class(input_node, target_node, **data_init_kwargs)``."""
    from .. import data as data_package
    spec = exp.data_class
    if isinstance(spec, str):
        cls = getattr(data_package, spec, None)
        if cls is None:
            raise ConfigError(f"Config {exp.path.name}: data_class {spec!r} is not in "
                              f"elektronn2.data; known: BatchCreatorImage, MNISTData, or give "
                              f"('file.py', 'ClassName')")
    else:
        cls = _class_from_file(exp, *spec)
    return cls(model.input_node, model.target_node, **exp.data_init_kwargs)


def _class_from_file(exp: ExperimentConfig, file: str, name: str):
    """Import ``file`` as a module (its directory goes on sys.path, so that batch worker
    processes can unpickle instances) and return its class ``name``."""
    import importlib
    import sys
    path = Path(os.path.expanduser(file))
    if not path.is_absolute():
        path = exp.path.parent / path
    if not path.is_file():
        raise ConfigError(f"Config {exp.path.name}: data_class file {str(path)!r} does not exist")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    module = importlib.import_module(path.stem)
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError(f"Config {exp.path.name}: {str(path)!r} defines no {name!r}")
    return cls
