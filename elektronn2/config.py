"""Global defaults of elektronn2, overridable in code or by environment variables.

``from elektronn2.config import config``; then e.g. ``config.device = 'cpu'``.

Environment variables read at import: ``ELEKTRONN2_DEVICE``, ``ELEKTRONN2_COMPILE``,
``ELEKTRONN2_PRECISION``, ``ELEKTRONN2_MEMORY_FORMAT``, ``ELEKTRONN2_DATA`` (data
directory) and ``ELEKTRONN2_SAVE_PATH``. What the 'auto' values become on a device is
decided by :mod:`elektronn2.neuromancer.execution`.

The data directory, for every entry point (:func:`default_data_dir`): ``$ELEKTRONN2_DATA``
when set; else ``../shared/data`` next to the checkout (the directory holding
``pyproject.toml`` and this package) when it exists; else ``~/.cache/elektronn2/data``
(``$XDG_CACHE_HOME/elektronn2/data``).

Importing this module does not import torch (so that the commands' ``--help`` is fast).

The user's defaults: the Python file ``~/.elektronn2rc`` (or the file named by
``$ELEKTRONN2RC``), read by :func:`read_user_settings` when a training config is read
(its values lie between the built-in defaults and the config file) and by ELEKTRONN2's
:class:`DefaultConfig`; ELEKTRONN2's :func:`change_logging_file` is here too.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import runpy
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

#: the valid values of the settings that have a fixed set
CHOICES = {
    'compile': ('off', 'on', 'auto'),
    'precision': ('auto', 'fp32', 'bf16', 'fp16'),
    'memory_format': ('auto', 'contiguous', 'channels_last'),
    'cudnn_benchmark': (True, False),
    'tf32': (True, False),
    'float_dtype': ('float32', 'float64'),
}
_DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')
_PACKAGE_DIR = Path(__file__).resolve().parent

if TYPE_CHECKING:
    import torch


def default_data_dir(package_dir: Path = _PACKAGE_DIR) -> str:
    """The data directory by the rule of the module docstring (``package_dir``: the
    directory of the elektronn2 package, whose parent is the checkout)."""
    if os.environ.get('ELEKTRONN2_DATA'):
        return os.path.expanduser(os.environ['ELEKTRONN2_DATA'])
    checkout = package_dir.parent
    shared = checkout.parent / 'shared' / 'data'
    if (checkout / 'pyproject.toml').is_file() and shared.is_dir():
        return str(shared)
    cache = os.environ.get('XDG_CACHE_HOME', os.path.join('~', '.cache'))
    return os.path.expanduser(os.path.join(cache, 'elektronn2', 'data'))


@dataclass
class Config:
    """Process-wide settings.

    device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:i'.
    compile: pass compiled graphs through ``torch.compile`` ('on'), not ('off'),
        or let elektronn2 decide ('auto': on for CUDA, off for CPU).
    precision: 'fp32', 'bf16' (autocast), 'fp16' (autocast with gradient scaling) or
        'auto' (bf16 autocast for training steps where the device computes bf16
        natively, else fp32; every other evaluation fp32).
    memory_format: layout of 4-D/5-D activations and filters: 'contiguous' (NCHW/NCDHW),
        'channels_last' (NHWC/NDHWC) or 'auto' (channels-last on CPU, and on CUDA
        where training runs in bf16/fp16).
    cudnn_benchmark: let cuDNN pick the fastest convolution algorithms (CUDA).
    tf32: allow TF32 tensor cores for fp32 matrix products and convolutions (CUDA).
    float_dtype: dtype of parameters and float inputs.
    data_dir: where known datasets are looked up (:func:`default_data_dir`).
    save_path: default parent directory of training runs.
    """
    device: str = 'auto'
    compile: str = 'auto'
    precision: str = 'auto'
    memory_format: str = 'auto'
    cudnn_benchmark: bool = True
    tf32: bool = True
    float_dtype: str = 'float32'
    data_dir: str = field(default_factory=default_data_dir)
    save_path: str = os.path.expanduser(os.path.join('~', 'elektronn2_training'))

    def __setattr__(self, key: str, value) -> None:
        known = {f.name for f in fields(self)}
        if key not in known:
            raise ConfigError(f"elektronn2.config has no setting {key!r}; "
                              f"known settings: {', '.join(sorted(known))}")
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"config.{key}={value!r} is invalid; "
                              f"choose one of {CHOICES[key]}")
        if key == 'device' and not _DEVICE_PATTERN.match(str(value)):
            raise ConfigError(f"config.device={value!r} is invalid; use 'auto', "
                              f"'cpu', 'cuda' or 'cuda:<index>'")
        super().__setattr__(key, value)

    @property
    def torch_device(self) -> torch.device:
        """The resolved torch device ('auto' becomes cuda when available)."""
        import torch
        if self.device == 'auto':
            return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        if self.device.startswith('cuda') and not torch.cuda.is_available():
            raise ConfigError(f"config.device={self.device!r} but CUDA is not "
                              f"available here; use 'cpu' or 'auto'")
        return torch.device(self.device)

    @property
    def torch_float_dtype(self) -> torch.dtype:
        import torch
        return getattr(torch, self.float_dtype)


def _from_environment() -> Config:
    cfg = Config()
    for key, var in (('device', 'ELEKTRONN2_DEVICE'), ('compile', 'ELEKTRONN2_COMPILE'),
                     ('precision', 'ELEKTRONN2_PRECISION'),
                     ('memory_format', 'ELEKTRONN2_MEMORY_FORMAT'),
                     ('save_path', 'ELEKTRONN2_SAVE_PATH')):
        if os.environ.get(var):
            setattr(cfg, key, os.path.expanduser(os.environ[var]))
    return cfg


config = _from_environment()


# --- ELEKTRONN2's names ---------------------------------------------------------------------
def change_logging_file(logger_: logging.Logger, save_path: str | os.PathLike,
                        file_name: str = 'elektronn2.log') -> None:
    """Log ``logger_`` (everything from DEBUG on) to ``save_path/file_name`` instead of its
    current log file (its first FileHandler, which is removed and closed)."""
    for handler in logger_.handlers:
        if isinstance(handler, logging.FileHandler):
            logger_.removeHandler(handler)
            handler.close()
            break
    os.makedirs(save_path, exist_ok=True)
    handler = logging.FileHandler(os.path.join(save_path, file_name))
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter('[%(asctime)s] [%(levelname)s]\t%(message)s',
                                           datefmt='%Y-%m-%d %H:%M:%S'))
    logger_.addHandler(handler)


#: The settings of ``~/.elektronn2rc`` (ELEKTRONN2's :class:`DefaultConfig`) and their types.
#: ``save_path``, ``param_save_it``, ``initial_prev_h``, ``prev_save_h`` and
#: ``background_processes`` are defaults of the training settings of the same names;
#: ``device`` is elektronn2-train's default ``--gpu``; the others are kept for old rc files
#: and change nothing.
USER_SETTINGS: dict[str, tuple[type, ...]] = {
    'save_path': (str,), 'device': (int, str, type(None)), 'param_save_it': (int,),
    'initial_prev_h': (int, float), 'prev_save_h': (int, float),
    'background_processes': (bool, int), 'plot_on': (bool,), 'print_status': (bool,),
    'overwrite': (bool,), 'time_per_step_smoothing_length': (int,),
    'loss_smoothing_length': (int,), 'use_manual_cudnn_conv': (bool,),
    'use_manual_cudnn_conv_not_w1': (bool,), 'use_manual_cudnn_pool': (bool,),
    'allow_floatX_downcast': (bool,), 'show_axis_order_warning': (bool,),
    'use_ortho_init': (bool,), 'inspection': (bool,), 'backupsrc': (bool,),
}


def user_config_path() -> Path:
    """The user's rc file: ``$ELEKTRONN2RC`` when set, else ``~/.elektronn2rc``."""
    return Path(os.path.expanduser(os.environ.get('ELEKTRONN2RC') or '~/.elektronn2rc'))


def read_user_settings() -> dict:
    """The settings of the user's rc file ({} when there is none), checked.

    The file is Python, run like a training config (its top-level names are the
    settings; names starting with '_', modules, functions and classes are ignored).
    A name that is not in :data:`USER_SETTINGS` or a value of the wrong type is a
    :class:`~elektronn2.errors.ConfigError` naming the file and the setting.
    """
    path = user_config_path()
    if not path.is_file():
        return {}
    try:
        namespace = runpy.run_path(str(path), run_name='__elektronn2rc__')
    except Exception as err:
        raise ConfigError(f"The user config file {path} could not be run: "
                          f"{type(err).__name__}: {err}") from err
    settings = {}
    for key, value in namespace.items():
        if key.startswith('_') or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        settings[key] = _checked_user_setting(path, key, value)
    return settings


def _checked_user_setting(path: Path, key: str, value):
    if key == 'param_save_h':
        raise ConfigError(f"{path}: param_save_h is no longer supported; set param_save_it "
                          f"(steps between parameter snapshots)")
    if key not in USER_SETTINGS:
        close = difflib.get_close_matches(key, USER_SETTINGS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ''
        raise ConfigError(f"{path}: unknown setting {key!r}; {hint}(known settings: "
                          f"{', '.join(sorted(USER_SETTINGS))})")
    allowed = USER_SETTINGS[key]
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = ' or '.join('None' if t is type(None) else t.__name__ for t in allowed)
        raise ConfigError(f"{path}: {key}={value!r} must be of type {names}, not "
                          f"{type(value).__name__}")
    if key == 'save_path':
        return os.path.abspath(os.path.expanduser(value))
    if key == 'device' and value is not None:
        return _user_device(path, value)
    return value


def _user_device(path: Path, value: int | str) -> str:
    """The rc's ``device`` (a GPU index, 'auto', 'cpu'/'none' or 'cuda:<index>') as a
    :attr:`Config.device` value."""
    text = str(value).strip().lower()
    device = ('cpu' if text in ('cpu', 'none', 'false') else
              f'cuda:{text}' if text.isdigit() else text)
    if not _DEVICE_PATTERN.match(device):
        raise ConfigError(f"{path}: device={value!r} is invalid; use a GPU index, 'auto', "
                          f"'cpu' or 'cuda:<index>'")
    return device


class DefaultConfig:
    """ELEKTRONN2's settings object: its defaults, overridden by the user's rc file
    (:func:`read_user_settings`; its names are those of :data:`USER_SETTINGS`).

    On creation it logs the 'elektronn2' logger to ``save_path/elektronn2.log`` and, when
    ``device`` is set, makes it :data:`config`'s device. ``save_path`` defaults to
    :data:`config`'s. Settings ELEKTRONN2 used for Theano (``use_manual_cudnn_*``,
    ``allow_floatX_downcast``, ...) are kept but do nothing.
    """

    def __init__(self):
        self.save_path = os.path.abspath(os.path.expanduser(config.save_path))
        self.plot_on = True
        self.print_status = True
        self.device = None
        self.param_save_h = 1.0
        self.param_save_it = 10000
        self.initial_prev_h = 1.0
        self.prev_save_h = 3.0
        self.overwrite = True
        self.background_processes = False
        self.time_per_step_smoothing_length = 50
        self.loss_smoothing_length = 200
        self.use_manual_cudnn_conv = True
        self.use_manual_cudnn_conv_not_w1 = True
        self.use_manual_cudnn_pool = True
        self.allow_floatX_downcast = True
        self.show_axis_order_warning = True
        self.use_ortho_init = False
        self.inspection = False
        self.backupsrc = True
        self.read_user_config()
        if self.device is not None:
            config.device = self.device
        change_logging_file(logging.getLogger('elektronn2'), self.save_path, 'elektronn2.log')

    def read_user_config(self) -> None:
        """Apply the settings of the user's rc file (when there is one)."""
        for key, value in read_user_settings().items():
            setattr(self, key, value)
