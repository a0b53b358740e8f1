"""Convolution replacements against plain F.conv3d, per layer of neuro3d and unet3d_lite.

For every Conv layer whose kernel allows a replacement (extent 1 in z: z folded into the
batch of a 2-D convolution; 1x1x1: a matrix product), forward + backward of the plain
``F.conv3d`` and of the replacement (``elektronn2.neuromancer.conv_paths``) on the
layer's input shape (batch 1), channels-last input, fp32 and bf16 autocast. Timed in
interleaved rounds; a ratio below 1 means the replacement is faster.

Run: python benchmarks/bench_conv_paths.py [--rounds 9] [--threads 2]
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F

import elektronn2.neuromancer as nm
from bench_training import build_neuro3d, describe_machine, interleaved, ratio
from elektronn2.neuromancer.conv_paths import pointwise_conv, z_folded_conv
from elektronn2.neuromancer.neural import Conv


def unet3d_lite():
    """The anisotropic U-Net of tests/neuromancer/test_zoo.py (input 22 x 140 x 140)."""
    nm.model_manager.newmodel('unet3d_lite')
    inp = nm.Input((None, 1, 22, 140, 140), 'b,f,z,x,y', name='raw')
    conv1 = nm.Conv(nm.Conv(inp, 8, (1, 3, 3)), 8, (1, 3, 3))
    conv3 = nm.Conv(nm.Conv(nm.Pool(conv1, (1, 2, 2)), 16, (1, 3, 3)), 16, (1, 3, 3))
    conv5 = nm.Conv(nm.Conv(nm.Pool(conv3, (1, 2, 2)), 16, (1, 3, 3)), 16, (1, 3, 3))
    conv7 = nm.Conv(nm.Conv(nm.Pool(conv5, (1, 2, 2)), 32, (3, 3, 3)), 32, (3, 3, 3))
    up5 = nm.Conv(nm.Conv(nm.UpConvMerge(conv5, conv7, 32), 16, (1, 3, 3)), 16, (1, 3, 3))
    up8 = nm.Conv(nm.Conv(nm.UpConvMerge(conv3, up5, 16), 16, (3, 3, 3)), 16, (3, 3, 3))
    up11 = nm.Conv(nm.Conv(nm.UpConvMerge(conv1, up8, 16), 8, (3, 3, 3)), 8, (3, 3, 3))
    nm.Conv(up11, 2, 1, activation_func='lin', name='barr')
    return nm.model_manager.getmodel()


def replaceable_layers(model) -> list[tuple[str, tuple, tuple, str]]:
    """(name, input shape, weight shape, replacement) of the layers with a replacement."""
    layers = []
    for node in model.nodes.values():
        if not isinstance(node, Conv):
            continue
        kernel = node.filter_shape
        kind = ('pointwise' if all(k == 1 for k in kernel) else
                'z-folded' if kernel[0] == 1 else None)
        if kind:
            shape = (1,) + tuple(node.parent.shape.shape[1:])
            layers.append((f"{model.name}.{node.name}", shape, tuple(node.params['w'].shape), kind))
    return layers


def forward_backward(conv, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, bf16: bool):
    def run():
        with torch.autocast('cpu', torch.bfloat16, enabled=bf16):
            y = conv(x, w, b)
        y.float().sum().backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=9)
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    replacements = {'pointwise': pointwise_conv, 'z-folded': z_folded_conv}
    layers = replaceable_layers(build_neuro3d()) + replaceable_layers(unet3d_lite())
    print(f"forward + backward, median of {args.rounds} interleaved rounds; ratio = "
          f"replacement / plain F.conv3d (< 1: the replacement is faster)\n")
    print(f"{'layer':<22} {'input (f, z, y, x)':<22} {'kind':<10} {'fp32 ms':>8} {'ratio':>6} "
          f"{'bf16 ms':>8} {'ratio':>6}")
    ratios: dict[tuple[str, str], list[float]] = {}
    for name, shape, w_shape, kind in layers:
        torch.manual_seed(0)
        # the layout the graph gives inputs (features innermost also for one feature)
        x = torch.rand(shape).clone(memory_format=torch.channels_last_3d)
        x.requires_grad_(shape[1] > 1)
        w = (torch.randn(w_shape) * 0.1).requires_grad_(True)
        b = torch.zeros(w_shape[0], requires_grad=True)
        row = f"{name:<22} {str(shape[1:]):<22} {kind:<10}"
        for precision in ('fp32', 'bf16'):
            bf16 = precision == 'bf16'
            times = interleaved({'plain': forward_backward(F.conv3d, x, w, b, bf16),
                                 kind: forward_backward(replacements[kind], x, w, b, bf16)},
                                args.rounds)
            r = ratio(times, kind, 'plain')
            ratios.setdefault((kind, precision), []).append(r)
            row += f" {np.median(times['plain']) * 1e3:>8.2f} {r:>6.2f}"
        print(row, flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("geometric mean ratio per replacement (kept only where < 1):")
    for (kind, precision), rs in ratios.items():
        mean = float(np.exp(np.mean(np.log(rs))))
        print(f"  {kind:<10} {precision}: {mean:.2f} over {len(rs)} layers, worst "
              f"{max(rs):.2f} -> {'wins' if mean < 1 else 'LOSES'}")


if __name__ == '__main__':
    main()
