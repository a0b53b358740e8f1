"""Training steps of the neuro3d net (batch 1, input 1 x 23 x 185 x 185, ~20 GMAC forward).

(a) Graph overhead: the net built with elektronn2.neuromancer against the same net
    hand-written in torch.nn with identical settings (layout, precision, convolution
    formulation, AdamW), and against the hand-written net with plain nn.Conv3d.
(b) elektronn2's default settings against naive eager fp32 PyTorch and against the best
    hand-written setting found (layout x precision x convolution formulation, optionally
    torch.compile).

All variants run in one process, in interleaved rounds (one step of each per round), so
that load changes on a shared machine hit all of them alike; a ratio is the median of the
per-round ratios.

Run: python benchmarks/bench_training.py [--rounds 15] [--compile] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

import elektronn2.neuromancer as nm
from elektronn2.config import config
from elektronn2.neuromancer import execution
from elektronn2.neuromancer.conv_paths import convolve

PATCH = (23, 185, 185)
NEURO3D = [(20, (1, 6, 6), (1, 2, 2)), (30, (1, 5, 5), (1, 2, 2)), (40, (1, 5, 5), (1, 1, 1)),
           (80, (4, 4, 4), (2, 1, 1)), (100, (3, 4, 4), (1, 1, 1)), (100, (3, 4, 4), (1, 1, 1)),
           (150, (2, 4, 4), (1, 1, 1)), (200, (1, 4, 4), (1, 1, 1)), (200, (1, 4, 4), (1, 1, 1)),
           (200, (1, 1, 1), (1, 1, 1))]
CL3D = torch.channels_last_3d


# --- machine and timing ----------------------------------------------------------------------
def describe_machine() -> str:
    """CPU, cores, torch version, threads and the current load average."""
    model = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                  if line.startswith('model name')), platform.processor())
    bf16 = execution.has_native_bf16(torch.device('cpu'))
    return (f"{model}, {os.cpu_count()} cores, native bf16 (AMX/AVX512-BF16): "
            f"{'yes' if bf16 else 'no'}; Python {platform.python_version()}, torch "
            f"{torch.__version__}, {torch.get_num_threads()} torch threads; load average "
            f"{os.getloadavg()[0]:.2f}")


def interleaved(variants: dict[str, Callable[[], object]], rounds: int,
                warmup: int = 2) -> dict[str, np.ndarray]:
    """Seconds per call of every variant, called in turn in each of ``rounds`` rounds."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: np.array(t) for name, t in times.items()}


def ratio(times: dict[str, np.ndarray], a: str, b: str) -> float:
    """Median over rounds of time(a) / time(b)."""
    return float(np.median(times[a] / times[b]))


# --- the net, twice ----------------------------------------------------------------------------
def build_neuro3d(patch: tuple[int, ...] = PATCH, mfp: bool = False):
    """The neuro3d net in elektronn2 (as in tests/neuromancer/test_known_nets.py)."""
    nm.model_manager.newmodel('neuro3d')
    inp = nm.Input((None, 1) + tuple(patch), 'b,f,z,x,y', name='raw')
    out = inp
    for n_f, filt, pool in NEURO3D:
        out = nm.Conv(out, n_f, filt, pool, mfp=mfp and any(p > 1 for p in pool))
    out = nm.Conv(out, 2, (1, 1, 1), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    return model


class TorchNeuro3d(torch.nn.Module):
    """The neuro3d net in torch.nn; ``formulation``: 'conv3d' (nn.Conv3d) or 'elektronn2'
    (the convolution replacements of elektronn2.neuromancer.conv_paths)."""

    def __init__(self, formulation: str = 'conv3d'):
        super().__init__()
        sizes = [1] + [n for n, _, _ in NEURO3D]
        self.convs = torch.nn.ModuleList(torch.nn.Conv3d(a, b, k) for a, b, (_, k, _) in
                                         zip(sizes, sizes[1:], NEURO3D))
        self.classifier = torch.nn.Conv3d(sizes[-1], 2, 1)
        self.formulation = formulation

    def _conv(self, conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        return conv(x) if self.formulation == 'conv3d' else convolve(x, conv.weight, conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, (_, _, pool) in zip(self.convs, NEURO3D):
            x = self._conv(conv, x)
            if any(p > 1 for p in pool):
                x = F.max_pool3d(x, pool)
            x = F.relu(x)
        return self._conv(self.classifier, x)


def torch_step(layout: str, precision: str, formulation: str = 'conv3d',
               compiled: bool = False) -> Callable:
    """A training step (numpy batch -> loss) of the hand-written net with these settings
    (``layout`` applies to the input and the weights)."""
    torch.manual_seed(0)
    net = TorchNeuro3d(formulation)
    if layout == 'channels_last':
        net = net.to(memory_format=CL3D)
    forward = torch.compile(net) if compiled else net
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        data = torch.as_tensor(x)
        if layout == 'channels_last':   # features innermost also for the 1-channel input
            data = data.clone(memory_format=CL3D)
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast('cpu', torch.bfloat16, enabled=precision == 'bf16'):
            logits = forward(data)
        loss = F.cross_entropy(logits.float(), torch.as_tensor(y)[:, 0].long())
        loss.backward()
        optimiser.step()
        return float(loss.detach())
    return step


def nm_step() -> Callable:
    """A training step of the elektronn2 net with the default ('auto') settings."""
    torch.manual_seed(0)
    model = build_neuro3d()

    def step(x: np.ndarray, y: np.ndarray) -> float:
        config.precision = config.memory_format = config.compile = 'auto'
        return model.trainingstep(x, y, optimiser='Adam')[0]
    return step


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.random((1, 1) + PATCH, dtype=np.float32),
            rng.integers(0, 2, (1, 1, 5, 21, 21)).astype(np.int16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--compile', action='store_true', help='also time torch.compile variants')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = batch()
    defaults = execution.resolve(torch.device('cpu'), update=True)
    print(describe_machine())
    print(f"elektronn2 defaults for training steps: {defaults.describe()}")
    # the hand-written grid: layout x precision x formulation (the replacements only act
    # on channels-last input, so contiguous runs plain convolutions only)
    grid = {(layout, precision, formulation): f"torch.nn {layout} {precision}, {formulation}"
            for layout in ('contiguous', 'channels_last') for precision in ('fp32', 'bf16')
            for formulation in ('conv3d', 'elektronn2')
            if layout == 'channels_last' or formulation == 'conv3d'}
    naive = grid['contiguous', 'fp32', 'conv3d']
    same = grid[defaults.memory_format, defaults.precision, 'elektronn2']
    steps = {'elektronn2 defaults': nm_step()}
    steps.update({name: torch_step(*key) for key, name in grid.items()})
    if args.compile:
        for precision in ('fp32', 'bf16'):
            steps[f"torch.nn channels_last {precision}, compiled"] = torch_step(
                'channels_last', precision, compiled=True)
    times = interleaved({name: (lambda s=s: s(x, y)) for name, s in steps.items()}, args.rounds)
    print(f"load average after: {os.getloadavg()[0]:.2f}; {args.rounds} rounds\n")
    print(f"{'variant (conv3d: nn.Conv3d; elektronn2: conv_paths)':<52} {'median s':>9} "
          f"{'min s':>7} {'/ defaults':>10}")
    for name, t in times.items():
        print(f"{name:<52} {np.median(t):>9.3f} {t.min():>7.3f} "
              f"{ratio(times, name, 'elektronn2 defaults'):>10.2f}")
    best = min((n for n in times if n != 'elektronn2 defaults'), key=lambda n: np.median(times[n]))
    overhead = ratio(times, 'elektronn2 defaults', same)
    speedup = ratio(times, naive, 'elektronn2 defaults')
    to_best = ratio(times, 'elektronn2 defaults', best)
    print(f"\n(a) graph overhead: elektronn2 / hand-written with the same settings "
          f"({same}): {overhead:.3f} (target <= 1.03: {_verdict(overhead <= 1.03)})")
    print(f"(b) speed-up of the defaults over naive eager fp32 ({naive}): "
          f"{speedup:.2f}x (target >= 1.5: {_verdict(speedup >= 1.5)})")
    print(f"    defaults / best hand-tuned ({best}): "
          f"{to_best:.3f} (target <= 1.05: {_verdict(to_best <= 1.05)})")


def _verdict(met: bool) -> str:
    return 'met' if met else 'MISSED'


if __name__ == '__main__':
    main()
