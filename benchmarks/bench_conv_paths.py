"""Convolution replacements against plain F.conv3d, per layer of neuro3d and unet3d_lite.

For every Conv layer whose kernel allows a replacement (extent 1 in z: z folded into the
batch of a 2-D convolution; 1x1x1: a matrix product; a few output features: the z taps
packed into them; the blending benchmark's 'same' net has such an output layer), forward +
backward of the plain
``F.conv3d`` and of the replacement (``elektronn2.neuromancer.conv_paths``) on the
layer's input shape (batch 1), channels-last input, fp32 and bf16 autocast (activations
in bf16 as elektronn2 passes them on). Timed in interleaved rounds; a ratio below 1 means
the replacement is faster. ``--device cuda`` measures on a GPU.

Run: python benchmarks/bench_conv_paths.py [--rounds 15] [--threads 2 | --cpu-time] [--device cuda]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from bench_predict import build_same_net
from bench_training import build_neuro3d, describe_machine, interleaved, ratio

import elektronn2.neuromancer as nm
from elektronn2.neuromancer.conv_paths import pointwise_conv, z_folded_conv, z_packed_conv
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
                'z-folded' if kernel[0] == 1 else
                'z-packed' if node.shape['f'] * kernel[0] <= 16 else None)
        if kind:
            shape = (1,) + tuple(node.parent.shape.shape[1:])
            layers.append((f"{model.name}.{node.name}", shape, tuple(node.params['w'].shape), kind))
    return layers


def forward_backward(conv, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, bf16: bool):
    def run():
        with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            y = conv(x, w, b)
        y.float().sum().backward()
        if x.device.type == 'cuda':
            torch.cuda.synchronize()
    return run


def layer_tensors(shape, w_shape, precision: str, device: torch.device):
    """Input, filters and bias of a layer as elektronn2's graph has them in training: the
    input channels-last (features innermost also for one feature), in bf16 under bf16
    autocast except for the net's input, which arrives in float32."""
    torch.manual_seed(0)
    x = torch.rand(shape, device=device)
    if precision == 'bf16' and shape[1] > 1:
        x = x.to(torch.bfloat16)
    x = x.clone(memory_format=torch.channels_last_3d).requires_grad_(shape[1] > 1)
    w = (torch.randn(w_shape, device=device) * 0.1).clone(
        memory_format=torch.channels_last_3d).requires_grad_(True)
    return x, w, torch.zeros(w_shape[0], device=device, requires_grad=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--cpu-time', action='store_true',
                        help='one torch thread, timed by the CPU time of the main thread: '
                             'little affected by other jobs on the machine')
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    args = parser.parse_args()
    torch.set_num_threads(1 if args.cpu_time else args.threads)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    device = torch.device(args.device)
    print(describe_machine() + (f"; {torch.cuda.get_device_name(device)}"
                                if device.type == 'cuda' else ''))
    replacements = {'pointwise': pointwise_conv, 'z-folded': z_folded_conv,
                    'z-packed': z_packed_conv}
    layers = (replaceable_layers(build_neuro3d()) + replaceable_layers(unet3d_lite())
              + replaceable_layers(build_same_net((48, 96, 96))))
    print(f"forward + backward on {device}, "
          f"{'CPU time of one thread' if args.cpu_time else 'wall time'}, median of "
          f"{args.rounds} interleaved rounds; ratio = replacement / plain F.conv3d "
          f"(< 1: the replacement is faster)\n")
    print(f"{'layer':<22} {'input (f, z, y, x)':<22} {'kind':<10} {'fp32 ms':>8} {'ratio':>6} "
          f"{'bf16 ms':>8} {'ratio':>6}")
    ratios: dict[tuple[str, str, str], list[float]] = {}
    for name, shape, w_shape, kind in layers:
        row = f"{name:<22} {str(shape[1:]):<22} {kind:<10}"
        for precision in ('fp32', 'bf16'):
            bf16 = precision == 'bf16'
            x, w, b = layer_tensors(shape, w_shape, precision, device)
            times = interleaved({'plain': forward_backward(F.conv3d, x, w, b, bf16),
                                 kind: forward_backward(replacements[kind], x, w, b, bf16)},
                                args.rounds, clock=clock)
            r = ratio(times, kind, 'plain')
            inputs = '1 input feature' if shape[1] == 1 else 'more input features'
            ratios.setdefault((kind, precision, inputs), []).append(r)
            row += f" {np.median(times['plain']) * 1e3:>8.2f} {r:>6.2f}"
        print(row, flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("geometric mean ratio (replacement / plain) per case; kept only where < 1:")
    for (kind, precision, inputs), rs in sorted(ratios.items()):
        mean = float(np.exp(np.mean(np.log(rs))))
        print(f"  {kind:<10} {precision}, {inputs:<20}: {mean:.2f} over {len(rs):>2} layers "
              f"(best {min(rs):.2f}, worst {max(rs):.2f}) -> {'wins' if mean < 1 else 'LOSES'}")

if __name__ == '__main__':
    main()
