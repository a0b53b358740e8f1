"""Convolution, computed the fastest measured way for its kernel and layout.

:func:`convolve` equals ``F.conv{1,2,3}d(x, w, b, padding=padding)`` in values and
gradients; it replaces that call where a cheaper formulation measured faster, per layer
of neuro3d and a 3-D U-Net, forward + backward (``benchmarks/bench_conv_paths.py``;
results in ``benchmarks/RESULTS.md``). The first three need channels-last input (then
they take views only, no copies); all run on CPU only (not measured on GPUs yet):

* pointwise kernels (1x1, 1x1x1): a matrix product over the feature axis (``F.linear``
  on the NHWC/NDHWC view). In float32 0.4-0.8x the time of the plain convolution;
  under bf16 autocast 0.9-1.1x.
* 3-D kernels of extent 1 in z: a 2-D convolution with z folded into the batch. In
  float32 0.1-1.0x the time (oneDNN's channels-last 3-D convolution is slow for several
  of these shapes); under bf16 autocast 0.65-0.9x for one input feature and 0.95-1.05x
  on neuro3d's other layers, but the plain bf16 channels-last 3-D convolution has
  pathological shapes: its backward pass for a (1, 3, 3) kernel, 150 -> 200 features
  on 4 x 34 x 34 (neuro3d_lite) did not finish in minutes, the folded one takes 0.1 s.
  Both replacements are therefore used in every precision.
* float32 3-D kernels to few features (O x kz <= 16, e.g. a 3 x 3 x 3 output layer to
  2 classes): oneDNN computes 16 output features whatever O is, so the z taps are packed
  into the output features (a (1, ky, kx) convolution to O x kz features, z-folded as
  above) and summed with their z shifts. 2 classes: 0.35-0.5x the time forward, 0.5-0.7x
  forward + backward; 8 classes would be slower, hence the bound.
* thin float32 3-D convolutions of one example: ATen sends them to its slow native kernel
  unless N x C x D x H exceeds 20480 (or both last kernel extents exceed 3), whatever W
  is; slabs of 2 and 5 x 64 x 64 with 16 features took 4x to 16x oneDNN's time, a
  48 x 96 x 96 window's first layer (one feature in) 5x. These call oneDNN's convolution
  directly, which also keeps a channels-last input's output channels-last (no layout
  copy for the next layer). Blended windows and their shells
  (``elektronn2.inference.window_reuse``) are such.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .execution import is_channels_last

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
#: ATen's rule (``use_mkldnn``): a float32 convolution of one example whose N*C*D*H is at
#: most this, with a last-two kernel extent <= 3, runs on the slow native kernel
_NATIVE_SIZE_LIMIT = 20480
#: output features oneDNN computes at once in float32 (a 512-bit vector): below them its
#: 3-D convolution wastes the difference, z_packed_conv fills them with z taps
_PACKED_FEATURES = 16


def convolve(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
             padding: int | str | tuple = 0) -> torch.Tensor:
    """``F.conv{n}d(x, w, b, padding=padding)`` for (b, f, *spatial) ``x``."""
    if x.device.type == 'cpu' and is_channels_last(x):
        if all(k == 1 for k in w.shape[2:]):
            return pointwise_conv(x, w, b)
        if x.ndim == 5 and w.shape[2] == 1:
            return z_folded_conv(x, w, b, padding)
        if _packs_z_taps(x, w):
            return z_packed_conv(x, w, b, padding)
    if x.device.type == 'cpu' and _takes_native_kernel(x, w):
        return onednn_conv(x, w, b, padding)
    return _CONV[x.ndim - 2](x, w, b, padding=padding)


def _takes_native_kernel(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ATen would run this float32 3-D convolution on its slow native kernel."""
    return (x.ndim == 5 and x.dtype == torch.float32 and not torch.jit.is_tracing()
            and x.shape[0] == 1 and not torch.is_autocast_enabled('cpu')
            and torch.backends.mkldnn.is_available()
            and not (w.shape[-1] > 3 and w.shape[-2] > 3)
            and x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] <= _NATIVE_SIZE_LIMIT)


def onednn_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                padding: int | str | tuple = 0) -> torch.Tensor:
    """A stride-1 convolution by oneDNN whatever ATen's size rule says."""
    x, pads = _pad_uneven(x, *_paddings(padding, w.shape[2:]))
    ones = [1] * len(pads)
    return torch.ops.aten.mkldnn_convolution(x, w, b, pads, ones, ones, 1)


def _paddings(padding: int | str | tuple, kernel: Sequence[int]) -> tuple[list[int], list[int]]:
    """Zeros before and after each spatial axis that F.conv's ``padding`` adds."""
    if padding == 'same':
        before = [(k - 1) // 2 for k in kernel]
        return before, [k - 1 - a for k, a in zip(kernel, before)]
    if padding == 'valid':
        padding = 0
    pads = [padding] * len(kernel) if isinstance(padding, int) else [int(p) for p in padding]
    return pads, pads


def _pad_uneven(x: torch.Tensor, before: list[int], after: list[int]
                ) -> tuple[torch.Tensor, list[int]]:
    """``x`` padded explicitly where the sides differ (e.g. 'same' for even kernels), and
    the symmetric padding left for the convolution."""
    if before == after:
        return x, before
    x = F.pad(x, [n for a, z in zip(before[::-1], after[::-1]) for n in (a, z)])
    return x, [0] * len(before)


def _packs_z_taps(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether a float32 3-D convolution goes to few output features (module docstring)."""
    return (x.ndim == 5 and x.dtype == torch.float32 and not torch.is_autocast_enabled('cpu')
            and w.shape[2] > 1 and w.shape[0] * w.shape[2] <= _PACKED_FEATURES)


def z_packed_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                  padding: int | str | tuple = 0) -> torch.Tensor:
    """A 3-D convolution as a (1, ky, kx) convolution to O x kz features (the z taps) whose
    z-shifted parts are summed."""
    n_out, n_in, kz = w.shape[:3]
    x, (pad_z, *pads_yx) = _pad_uneven(x, *_paddings(padding, w.shape[2:]))
    packed = w.transpose(1, 2).reshape(n_out * kz, n_in, 1, *w.shape[3:])
    taps = z_folded_conv(x, packed, None, (0, *pads_yx))     # (n, O * kz, D, H', W')
    n, _, depth, *plane = taps.shape
    taps = taps.unflatten(1, (n_out, kz))
    out_depth = depth + 2 * pad_z - kz + 1
    y = x.new_zeros((n, n_out, out_depth, *plane)).contiguous(
        memory_format=torch.channels_last_3d)
    if b is not None:
        y += b.view(1, -1, 1, 1, 1)
    for tap in range(kz):
        shift = tap - pad_z     # y[z] += taps[tap][z + shift], zero outside the input
        lo, hi = max(0, -shift), min(out_depth, depth - shift)
        if lo < hi:
            y[:, :, lo:hi] += taps[:, :, tap, lo + shift:hi + shift]
    return y


def pointwise_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """A 1x1(x1) convolution as a matrix product over the feature axis."""
    y = F.linear(x.movedim(1, -1), w.flatten(1), b)
    return y.movedim(-1, 1)


def z_folded_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                  padding: int | str | tuple = 0) -> torch.Tensor:
    """A 3-D convolution with kernel extent 1 in z as a 2-D convolution of all z-slices."""
    n, c, d, height, width = x.shape
    slices = x.transpose(1, 2).reshape(n * d, c, height, width)
    padding_2d = padding[1:] if isinstance(padding, tuple) else padding
    y = F.conv2d(slices, w.squeeze(2), b, padding=padding_2d)
    return y.reshape(n, d, *y.shape[1:]).transpose(1, 2)
