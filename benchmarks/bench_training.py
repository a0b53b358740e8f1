"""Training steps of the neuro3d net (batch 1, input 1 x 23 x 185 x 185, ~20 GMAC forward).

(a) Graph overhead: the net built with elektronn2.neuromancer against the same net
    hand-written in torch.nn with identical settings (layout, precision, convolution
    formulation, AdamW), and against the hand-written net with plain nn.Conv3d.
(b) elektronn2's default settings against naive eager fp32 PyTorch and against the best
    hand-written setting found (layout x precision x convolution formulation, optionally
    torch.compile).
(c) The default step's useful GFLOP/s (``training_gflop``) as a fraction of the bf16 matmul
    peak measured in the same run, before and after the rounds.

All variants run in one process, in interleaved rounds (one step of each per round), so
that load changes on a shared machine hit all of them alike; ratios are given as the median
of the per-round ratios and as the ratio of the fastest steps (on a loaded machine the
fastest steps are those that ran undisturbed). ``--cpu-time`` measures the CPU time of one
torch thread instead of wall time, which other jobs affect far less.

Run: python benchmarks/bench_training.py [--rounds 15] [--compile] [--threads 2 | --cpu-time]
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
from elektronn2.neuromancer.mfp import pool

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


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 2,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, np.ndarray]:
    """Seconds per call of every variant, called in turn in each of ``rounds`` rounds
    (``clock``: wall time, or e.g. ``time.thread_time`` for CPU time with one thread)."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: np.array(t) for name, t in times.items()}


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 10,
                device: str = 'cpu') -> float:
    """Best GFLOP/s of an n x n matmul in ``dtype`` (2 n^3 FLOPs per product)."""
    a = torch.rand(n, n, device=device).to(dtype)
    b = torch.rand(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float('inf')
    for _ in range(repeats):
        start = _sync_clock(device)
        torch.mm(a, b)
        best = min(best, _sync_clock(device) - start)
    return 2 * n ** 3 / best / 1e9


def _sync_clock(device: str) -> float:
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter()


def ratio(times: dict[str, np.ndarray], a: str, b: str) -> float:
    """Median over rounds of time(a) / time(b)."""
    return float(np.median(times[a] / times[b]))


def min_ratio(times: dict[str, np.ndarray], a: str, b: str) -> float:
    """Fastest time(a) / fastest time(b): least affected by other jobs' load peaks."""
    return float(times[a].min() / times[b].min())


# --- the net, twice ----------------------------------------------------------------------------
def build_neuro3d(patch: tuple[int, ...] = PATCH, mfp: bool = False):
    """The neuro3d net in elektronn2 (as in tests/neuromancer/test_known_nets.py)."""
    nm.model_manager.newmodel('neuro3d')
    inp = nm.Input((None, 1) + tuple(patch), 'b,f,z,x,y', name='raw')
    out = inp
    for n_f, filt, pool_shape in NEURO3D:
        out = nm.Conv(out, n_f, filt, pool_shape, mfp=mfp and any(p > 1 for p in pool_shape))
    out = nm.Conv(out, 2, (1, 1, 1), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    return model


class TorchNeuro3d(torch.nn.Module):
    """The neuro3d net in torch.nn; ``formulation``: 'torch' (nn.Conv3d, F.max_pool3d) or
    'elektronn2' (the functions elektronn2's Conv layer calls: the convolution
    replacements of elektronn2.neuromancer.conv_paths and elektronn2.neuromancer.mfp.pool,
    which max-pools reduced-precision activations in their own dtype under autocast)."""

    def __init__(self, formulation: str = 'torch'):
        super().__init__()
        sizes = [1] + [n for n, _, _ in NEURO3D]
        self.convs = torch.nn.ModuleList(torch.nn.Conv3d(a, b, k) for a, b, (_, k, _) in
                                         zip(sizes, sizes[1:], NEURO3D))
        self.classifier = torch.nn.Conv3d(sizes[-1], 2, 1)
        self.formulation = formulation

    def _conv(self, conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        return conv(x) if self.formulation == 'torch' else convolve(x, conv.weight, conv.bias)

    def _pool(self, x: torch.Tensor, shape: tuple) -> torch.Tensor:
        return F.max_pool3d(x, shape) if self.formulation == 'torch' else pool(x, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, (_, _, pool_shape) in zip(self.convs, NEURO3D):
            x = self._conv(conv, x)
            if any(p > 1 for p in pool_shape):
                x = self._pool(x, pool_shape)
            x = F.relu(x)
        return self._conv(self.classifier, x)


def torch_step(layout: str, precision: str, formulation: str = 'torch',
               compiled: bool = False) -> Callable:
    """A training step (numpy batch -> loss) of the hand-written net with these settings
    (``layout`` applies to the input and the weights: with formulation 'torch' by
    ``Module.to(memory_format=...)``, which leaves one-feature filters as they are, with
    'elektronn2' the way elektronn2 arranges them, features innermost for all)."""
    torch.manual_seed(0)
    net = TorchNeuro3d(formulation)
    if layout == 'channels_last' and formulation == 'torch':
        net = net.to(memory_format=CL3D)
    elif layout == 'channels_last':     # as elektronn2 stores them: features innermost
        execution.ExecutionSettings(torch.device('cpu'), precision, layout, compiled).arrange(
            net.parameters())
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


def training_gflop(model) -> float:
    """Useful GFLOP of one training step: 2 FLOPs per multiply-add of the convolutions'
    forward pass, of their weight gradients and of their input gradients, except the input
    gradient of the convolution that reads the data (not computed); the other nodes'
    costs (pooling, activations, loss) are counted once."""
    convs = [n for n in model.nodes.values() if isinstance(n, nm.Conv)]
    first = [n for n in convs if isinstance(n.parent, nm.Input)]
    others = sum(n.computational_cost for n in model.nodes.values() if n not in convs)
    macs = 3 * sum(n.computational_cost for n in convs) - sum(n.computational_cost for n in first)
    return 2 * (macs + others) / 1e9


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.random((1, 1) + PATCH, dtype=np.float32),
            rng.integers(0, 2, (1, 1, 5, 21, 21)).astype(np.int16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--compile', action='store_true', help='also time torch.compile variants')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--overhead-rounds', type=int, default=30,
                        help='extra rounds of just the two variants compared in (a)')
    parser.add_argument('--cpu-time', action='store_true',
                        help='one torch thread, timed by the CPU time of the main thread: '
                             'little affected by other jobs on the machine')
    args = parser.parse_args()
    torch.set_num_threads(1 if args.cpu_time else args.threads)
    x, y = batch()
    defaults = execution.resolve(torch.device('cpu'), update=True)
    print(describe_machine())
    print(f"elektronn2 defaults for training steps: {defaults.describe()}")
    # the hand-written grid: layout x precision x formulation
    grid = {(layout, precision, formulation): f"torch.nn {layout} {precision}, {formulation}"
            for layout in ('contiguous', 'channels_last') for precision in ('fp32', 'bf16')
            for formulation in ('torch', 'elektronn2')}
    naive = grid['contiguous', 'fp32', 'torch']
    same = grid[defaults.memory_format, defaults.precision, 'elektronn2']
    gflop = training_gflop(build_neuro3d())
    peaks = [matmul_peak(torch.bfloat16)]
    steps = {'elektronn2 defaults': nm_step()}
    steps.update({name: torch_step(*key) for key, name in grid.items()})
    if args.compile:
        for precision in ('fp32', 'bf16'):
            steps[f"torch.nn channels_last {precision}, compiled"] = torch_step(
                'channels_last', precision, compiled=True)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    calls = {name: (lambda s=s: s(x, y)) for name, s in steps.items()}
    times = interleaved(calls, args.rounds, clock=clock)
    pair = interleaved({name: calls[name] for name in ('elektronn2 defaults', same)},
                       args.overhead_rounds, warmup=0, clock=clock)
    peaks.append(matmul_peak(torch.bfloat16))
    print(f"load average after: {os.getloadavg()[0]:.2f}; {args.rounds} rounds; "
          f"{'CPU time of the main thread' if args.cpu_time else 'wall time'}\n")
    print(f"{'variant (formulation: see TorchNeuro3d)':<44} {'median s':>9} {'min s':>7} "
          f"{'/ defaults':>10} {'min / min':>9}")
    for name, t in times.items():
        print(f"{name:<44} {np.median(t):>9.3f} {t.min():>7.3f} "
              f"{ratio(times, name, 'elektronn2 defaults'):>10.2f} "
              f"{min_ratio(times, name, 'elektronn2 defaults'):>9.2f}")
    best = min((n for n in times if n != 'elektronn2 defaults'), key=lambda n: np.median(times[n]))
    best_min = min((n for n in times if n != 'elektronn2 defaults'), key=lambda n: times[n].min())
    print("\n'/ defaults': median over rounds of the per-round ratio; 'min / min': ratio of the "
          "fastest steps (less affected by short load peaks, noisier otherwise)")
    for label, r, b in (('median of per-round ratios', ratio, best),
                        ('ratio of minimums', min_ratio, best_min)):
        overhead = r(times, 'elektronn2 defaults', same)
        speedup = r(times, naive, 'elektronn2 defaults')
        to_best = r(times, 'elektronn2 defaults', b)
        print(f"{label}:")
        print(f"  (a) graph overhead, elektronn2 / hand-written with the same settings "
              f"({same}): {overhead:.3f} (target <= 1.03: {_verdict(overhead <= 1.03)})")
        print(f"  (b) speed-up of the defaults over naive eager fp32 ({naive}): "
              f"{speedup:.2f}x (target >= 1.5: {_verdict(speedup >= 1.5)})")
        print(f"      defaults / best hand-tuned ({b}): "
              f"{to_best:.3f} (target <= 1.05: {_verdict(to_best <= 1.05)})")
    overhead = ratio(pair, 'elektronn2 defaults', same)
    print(f"(a) in {args.overhead_rounds} further rounds of these two alone: median of per-round "
          f"ratios {overhead:.3f}, ratio of minimums "
          f"{min_ratio(pair, 'elektronn2 defaults', same):.3f}, ratio of medians "
          f"{np.median(pair['elektronn2 defaults']) / np.median(pair[same]):.3f} "
          f"(target <= 1.03: {_verdict(overhead <= 1.03)})")
    step = float(np.median(times['elektronn2 defaults']))
    print(f"defaults against the bf16 matmul peak (2048^2, best of 10, before and after: "
          f"{peaks[0]:.0f}, {peaks[1]:.0f} GFLOP/s): {gflop:.1f} GFLOP per step (see "
          f"training_gflop) / {step:.3f} s = {gflop / step:.0f} GFLOP/s = "
          f"{100 * gflop / step / max(peaks):.0f} % of the peak (aim >= 50 %)")


def _verdict(met: bool) -> str:
    return 'met' if met else 'MISSED'


if __name__ == '__main__':
    main()
