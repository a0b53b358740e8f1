"""Global defaults of elektronn2, overridable in code or by environment variables.

``from elektronn2.config import config``; then e.g. ``config.device = 'cpu'``.

Environment variables read at import: ``ELEKTRONN2_DEVICE``, ``ELEKTRONN2_COMPILE``,
``ELEKTRONN2_PRECISION``, ``ELEKTRONN2_DATA`` (data directory) and
``ELEKTRONN2_SAVE_PATH``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields

import torch

from .errors import ConfigError

_CHOICES = {
    'compile': ('off', 'on', 'auto'),
    'precision': ('fp32', 'bf16', 'fp16'),
    'float_dtype': ('float32', 'float64'),
}
_DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')


def _default_data_dir() -> str:
    cache = os.environ.get('XDG_CACHE_HOME', os.path.join('~', '.cache'))
    return os.path.expanduser(os.path.join(cache, 'elektronn2', 'data'))


@dataclass
class Config:
    """Process-wide settings.

    device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:i'.
    compile: pass compiled graphs through ``torch.compile`` ('on'), not ('off'),
        or let elektronn2 decide ('auto': on for CUDA, off for CPU).
    precision: 'fp32', 'bf16' (autocast) or 'fp16' (autocast with grad scaling, GPU).
    float_dtype: dtype of parameters and float inputs.
    data_dir: where known datasets are looked up ($ELEKTRONN2_DATA).
    save_path: default parent directory of training runs.
    """
    device: str = 'auto'
    compile: str = 'off'
    precision: str = 'fp32'
    float_dtype: str = 'float32'
    data_dir: str = field(default_factory=_default_data_dir)
    save_path: str = os.path.expanduser(os.path.join('~', 'elektronn2_training'))

    def __setattr__(self, key: str, value) -> None:
        known = {f.name for f in fields(self)}
        if key not in known:
            raise ConfigError(f"elektronn2.config has no setting {key!r}; "
                              f"known settings: {', '.join(sorted(known))}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"config.{key}={value!r} is invalid; "
                              f"choose one of {_CHOICES[key]}")
        if key == 'device' and not _DEVICE_PATTERN.match(str(value)):
            raise ConfigError(f"config.device={value!r} is invalid; use 'auto', "
                              f"'cpu', 'cuda' or 'cuda:<index>'")
        super().__setattr__(key, value)

    @property
    def torch_device(self) -> torch.device:
        """The resolved torch device ('auto' becomes cuda when available)."""
        if self.device == 'auto':
            return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        if self.device.startswith('cuda') and not torch.cuda.is_available():
            raise ConfigError(f"config.device={self.device!r} but CUDA is not "
                              f"available here; use 'cpu' or 'auto'")
        return torch.device(self.device)

    @property
    def torch_float_dtype(self) -> torch.dtype:
        return getattr(torch, self.float_dtype)

    @property
    def use_compile(self) -> bool:
        """Whether graphs go through torch.compile on the current device."""
        if self.compile == 'auto':
            return self.torch_device.type == 'cuda'
        return self.compile == 'on'


def _from_environment() -> Config:
    cfg = Config()
    for key, var in (('device', 'ELEKTRONN2_DEVICE'), ('compile', 'ELEKTRONN2_COMPILE'),
                     ('precision', 'ELEKTRONN2_PRECISION'), ('data_dir', 'ELEKTRONN2_DATA'),
                     ('save_path', 'ELEKTRONN2_SAVE_PATH')):
        if os.environ.get(var):
            setattr(cfg, key, os.path.expanduser(os.environ[var]))
    return cfg


config = _from_environment()
