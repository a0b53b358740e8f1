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
"""
from __future__ import annotations

import os
import re
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
