"""Execution settings: precision, memory layout, torch.compile and GPU switches.

:data:`elektronn2.config.config` holds what the user asked for, each setting either a
fixed choice or 'auto'; :func:`resolve` turns it into :class:`ExecutionSettings` for a
device, for optimiser updates (:meth:`Model.trainingstep`) or for any other evaluation.
The rules for 'auto', from the measurements in ``benchmarks/RESULTS.md``:

``precision='auto'``
    bf16 autocast for optimiser updates on devices that compute bf16 natively (CPUs
    with AMX-BF16 or AVX512-BF16, CUDA GPUs of compute capability 8.0 or newer), where
    it is fastest and training converges as in fp32 (``tests/performance``); fp32
    for updates elsewhere and for everything else (predictions, monitoring, direct
    graph-function calls), so outputs do not depend on the hardware. Set 'bf16' to
    evaluate everything in bf16. 'fp16' is never chosen for you: it needs gradient
    scaling (:attr:`ExecutionSettings.grad_scaling`), which ``trainingstep`` applies.
``memory_format='auto'``
    channels-last (NHWC, NDHWC) for float32 graphs on CPU, where oneDNN convolutions are
    fastest in that layout, and on CUDA where training runs in bf16/fp16 (tensor-core
    kernels); contiguous (NCHW, NCDHW) otherwise. The layout applies to the inputs, every node's result and
    the filters (stored in it); it only changes strides, never values or shapes.
``compile='auto'``
    ``torch.compile`` on CUDA; off on CPU, where it gave no gain.

On CUDA, ``config.cudnn_benchmark`` and ``config.tf32`` are applied to
``torch.backends`` whenever settings are resolved.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..config import CHOICES, Config, config
from ..errors import ConfigError

logger = logging.getLogger('elektronn2')

_AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
_reported: set = set()


@dataclass(frozen=True)
class ExecutionSettings:
    """How graph functions run on ``device``; every field is a concrete choice."""
    device: torch.device
    precision: str          # 'fp32', 'bf16' or 'fp16'
    memory_format: str      # 'contiguous' or 'channels_last'
    compile: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST_DTYPES.get(self.precision)

    @property
    def grad_scaling(self) -> bool:
        """Whether training must scale the loss (fp16 gradients underflow otherwise)."""
        return self.precision == 'fp16'

    def autocast(self):
        """The autocast context of this precision (a no-op for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def to_layout(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` in this layout if it is a 4-D or 5-D floating tensor (activations,
        filters): channels-last or contiguous; same values and shape, other strides.
        Anything else (e.g. the object fed to a GenericInput) passes unchanged."""
        if (not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point()
                or tensor.ndim not in _CHANNELS_LAST):
            return tensor
        if self.memory_format == 'contiguous':
            return tensor.contiguous()
        if is_channels_last(tensor):
            return tensor
        return tensor.clone(memory_format=_CHANNELS_LAST[tensor.ndim])

    def empty(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` in this layout, ``like``'s dtype and device."""
        memory_format = (_CHANNELS_LAST.get(len(shape), torch.contiguous_format)
                         if self.memory_format == 'channels_last' else torch.contiguous_format)
        return torch.empty(tuple(shape), dtype=like.dtype, device=like.device,
                           memory_format=memory_format)

    def arrange(self, params: Iterable[torch.Tensor]) -> None:
        """Store ``params`` (e.g. convolution filters) in this layout, in place."""
        with torch.no_grad():
            for param in params:
                arranged = self.to_layout(param.data)
                if arranged is not param.data:
                    param.data = arranged

    def describe(self) -> str:
        autocast = f"{self.precision} autocast" if self.autocast_dtype else self.precision
        return (f"{autocast}, {self.memory_format.replace('_', '-')} layout, "
                f"torch.compile {'on' if self.compile else 'off'}")


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether 4-D/5-D ``x`` is stored channels-last with the features innermost.

    A tensor of one feature is also 'contiguous' in the channels-last sense whatever its
    strides; only with feature stride 1 do convolutions keep its output channels-last.
    """
    memory_format = _CHANNELS_LAST.get(x.ndim)
    return (memory_format is not None and x.is_contiguous(memory_format=memory_format)
            and x.stride(1) == 1)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The layout ``x`` is stored in: channels-last (:func:`is_channels_last`) or contiguous."""
    return _CHANNELS_LAST[x.ndim] if is_channels_last(x) else torch.contiguous_format


@functools.lru_cache(maxsize=None)
def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has bf16 matrix units (AMX-BF16/AVX512-BF16; CUDA sm >= 8.0)."""
    if device.type == 'cuda':
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == 'cpu':
        probes = ('_is_amx_tile_supported', '_is_avx512_bf16_supported')
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve(device: torch.device, update: bool = False, cfg: Config = config,
            precision: str | None = None) -> ExecutionSettings:
    """The concrete settings for graphs on ``device``; ``update``: for optimiser updates.

    ``precision``: 'auto', 'fp32', 'bf16' or 'fp16' in place of ``cfg.precision`` (e.g.
    ``elektronn2-predict --precision``); None follows ``cfg``.
    """
    requested = cfg.precision if precision is None else precision
    if requested not in CHOICES['precision']:
        raise ConfigError(f"precision={requested!r} is invalid; choose one of "
                          f"{CHOICES['precision']}")
    precision = requested
    if precision == 'auto':
        precision = 'bf16' if update and has_native_bf16(device) else 'fp32'
    memory_format = cfg.memory_format
    if memory_format == 'auto':     # one layout for updates and other evaluations alike
        reduced = precision != 'fp32' or (requested == 'auto' and has_native_bf16(device))
        fast = ((device.type == 'cpu' and cfg.float_dtype == 'float32')
                or (device.type == 'cuda' and reduced))
        memory_format = 'channels_last' if fast else 'contiguous'
    compile_graphs = cfg.compile == 'on' or (cfg.compile == 'auto' and device.type == 'cuda')
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        torch.backends.cudnn.allow_tf32 = cfg.tf32
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    settings = ExecutionSettings(device, precision, memory_format, compile_graphs)
    if (settings, update) not in _reported:
        _reported.add((settings, update))
        logger.info("%s on %s: %s", 'Training steps' if update else 'Graph evaluation', device,
                    settings.describe())
    return settings
