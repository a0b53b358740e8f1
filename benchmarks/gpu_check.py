"""The GPU check: run it the moment a CUDA machine is there; it writes a RESULTS.md section.

On a CUDA machine it

1. runs the test suite's device-dependent tests (graph evaluation, training steps,
   prediction: ``DEVICE_TESTS``) with ``ELEKTRONN2_DEVICE=cuda``, so every model they
   build lives on the GPU (pytest's header names the device);
2. times neuro3d training steps (``bench_training``: batch 1, 23 x 185 x 185): elektronn2's
   defaults against naive eager fp32 PyTorch, and elektronn2 in fp32 and bf16 with
   ``torch.compile`` off and on, in interleaved rounds;
3. times ``predict_to_file`` (the code path of ``elektronn2-predict``) of neuro3d on FIB-25
   in fp32, bf16 and fp16, compile off and on, with the matmul peaks measured in the same run
   (``bench_precision``), and the largest probability difference to fp32;
4. prints a Markdown section naming the device (``--output`` writes it to a file,
   ``--append`` appends it to benchmarks/RESULTS.md).

On a machine without CUDA it runs the same timings on the CPU, skips the CUDA-only parts
(the test run on CUDA, fp16, compile on) and says so. ``--quick``: few rounds, a small
FIB-25 box and the untrained net (or the cached trained one of ``bench_precision``), to
check that the script itself works (a minute or two on a CPU).

Run: python benchmarks/gpu_check.py [--quick] [--output FILE] [--append]
     (or benchmarks/gpu_check.sh; data from $ELEKTRONN2_DATA or ../shared/data)
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from bench_precision import (
    boundary,
    cached_model_path,
    fib25_crop,
    trained_neuro3d,
    useful_gflop_per_voxel,
)
from bench_training import (
    TorchNeuro3d,
    batch,
    build_neuro3d,
    interleaved,
    matmul_peak,
    training_gflop,
)

from elektronn2.config import config
from elektronn2.inference import Box, predict_to_file
from elektronn2.neuromancer import execution

ROOT = Path(__file__).resolve().parents[1]
#: tests whose models evaluate on config.device: graphs, training steps, prediction
DEVICE_TESTS = ('tests/neuromancer', 'tests/performance', 'tests/inference',
                'tests/test_footprint_agreement.py', 'tests/training/test_units.py',
                'tests/reliability/test_exact_resume.py')
QUICK_TESTS = ('tests/neuromancer/test_nodes.py', 'tests/performance/test_execution.py',
               'tests/inference/test_precision.py')


def describe_device(device: torch.device) -> str:
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        return (f"{props.name} ({props.total_memory / 2**30:.0f} GiB, compute capability "
                f"{props.major}.{props.minor}, {props.multi_processor_count} SMs), CUDA "
                f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; host "
                f"{_cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}")
    bf16 = execution.has_native_bf16(device)
    return (f"CPU {_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads, native bf16: {'yes' if bf16 else 'no'}; no CUDA; torch {torch.__version__}")


def _cpu_name() -> str:
    try:
        return next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo')
                     if line.startswith('model name')), platform.processor())
    except OSError:
        return platform.processor()


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"


# --- 1. tests on the device -------------------------------------------------------------------
def run_device_tests(paths: tuple[str, ...], timeout: int) -> tuple[str, list[str]]:
    """pytest on ``paths`` with ELEKTRONN2_DEVICE=cuda: (summary line, failed test ids)."""
    env = dict(os.environ, ELEKTRONN2_DEVICE='cuda')
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rf',
               '-m', 'not slow', *paths]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s", []
    lines = result.stdout.strip().splitlines()
    failed = [line.split(' ', 2)[1] for line in lines if line.startswith(('FAILED', 'ERROR'))]
    summary = next((line.strip('= ') for line in reversed(lines)
                    if re.search(r'\d+ (passed|failed|error)', line)), lines[-1] if lines else '')
    probe = subprocess.run([sys.executable, '-c', 'from elektronn2.config import config; '
                            'print(config.torch_device)'], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    return f"{summary}; config.torch_device in the tests: {probe.stdout.strip()}", failed


# --- 2. training steps ---------------------------------------------------------------------------
def naive_step(device: torch.device) -> Callable[[np.ndarray, np.ndarray], float]:
    """Naive eager PyTorch: neuro3d as nn.Conv3d + max_pool3d, contiguous fp32, AdamW."""
    torch.manual_seed(0)
    net = TorchNeuro3d('torch').to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        if device.type == 'cuda':   # torch's defaults (elektronn2's steps set their own)
            torch.backends.cudnn.benchmark = False
            torch.backends.cuda.matmul.allow_tf32 = False
        optimiser.zero_grad(set_to_none=True)
        logits = net(torch.as_tensor(x).to(device))
        loss = F.cross_entropy(logits.float(), torch.as_tensor(y).to(device)[:, 0].long())
        loss.backward()
        optimiser.step()
        return float(loss.detach())    # waits for the device
    return step


def elektronn2_step(precision: str, compile_: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """elektronn2's neuro3d training step with these settings (set before every step, as
    the variants share the global config)."""
    torch.manual_seed(0)
    model = build_neuro3d()

    def step(x: np.ndarray, y: np.ndarray) -> float:
        config.precision, config.compile, config.memory_format = precision, compile_, 'auto'
        return model.trainingstep(x, y, optimiser='Adam')[0]
    return step


def training_table(device: torch.device, rounds: int, compile_on: bool) -> list[str]:
    x, y = batch()
    variants = {'naive eager PyTorch (fp32, contiguous)': naive_step(device),
                'elektronn2 defaults (auto)': elektronn2_step('auto', 'auto'),
                'elektronn2 fp32, compile off': elektronn2_step('fp32', 'off'),
                'elektronn2 bf16, compile off': elektronn2_step('bf16', 'off')}
    if compile_on:
        variants['elektronn2 fp32, compile on'] = elektronn2_step('fp32', 'on')
        variants['elektronn2 bf16, compile on'] = elektronn2_step('bf16', 'on')
    defaults = execution.resolve(device, update=True)
    gflop = training_gflop(build_neuro3d())
    n = 8192 if device.type == 'cuda' else 2048
    peaks = [matmul_peak(torch.bfloat16, n=n, device=device.type)]
    times = interleaved({name: (lambda s=s: s(x, y)) for name, s in variants.items()}, rounds)
    peaks.append(matmul_peak(torch.bfloat16, n=n, device=device.type))
    naive = times['naive eager PyTorch (fp32, contiguous)']
    lines = [f"neuro3d training step, batch 1 (input 23 x 185 x 185), {rounds} interleaved "
             f"rounds after 2 warm-up steps; elektronn2 defaults here: {defaults.describe()}; "
             f"{gflop:.1f} useful GFLOP per step (`bench_training.training_gflop`); bf16 "
             f"matmul peak before / after: {peaks[0]:.0f} / {peaks[1]:.0f} GFLOP/s", '',
             "| variant | median s | it/s | vs naive | useful GFLOP/s | of the bf16 peak |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, t in times.items():
        rate = gflop / np.median(t)
        lines.append(f"| {name} | {np.median(t):.4f} | {1 / np.median(t):.2f} | "
                     f"{np.median(naive / t):.2f}x | {rate:.0f} | {100 * rate / max(peaks):.0f} % |")
    return lines


# --- 3. prediction -----------------------------------------------------------------------------
def prediction_table(device: torch.device, model: Path, z: tuple[int, int],
                     region_yx: int | None, rounds: int,
                     variants: list[tuple[str, str]]) -> list[str]:
    """predict_to_file of FIB-25 z0:z1 per (precision, compile), interleaved rounds."""
    gflop = useful_gflop_per_voxel(model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        input_path, raw, _ = fib25_crop(z, tmp)
        region = (Box((0, 0, 0), (raw.shape[0], region_yx, region_yx)) if region_yx else None)
        seconds: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
        peaks: list[float] = []
        voxels = 0
        for r in range(rounds):
            peaks.append(matmul_peak(torch.float32, n=8192 if device.type == 'cuda' else 2048,
                                     device=str(device)))
            for precision, compile_ in (variants if r % 2 == 0 else variants[::-1]):
                config.compile = compile_
                out = tmp / f'{precision}-{compile_}.zarr'
                shutil.rmtree(out, ignore_errors=True)
                report = predict_to_file(model, input_path, out, input_key='raw',
                                         progress=False, precision=precision, region=region)
                seconds[precision, compile_].append(report.seconds)
                voxels = report.voxels
        config.compile = 'auto'
        reference = boundary(tmp / f'fp32-{variants[0][1]}.zarr')
        diffs = {v: float(np.abs(boundary(tmp / f'{v[0]}-{v[1]}.zarr') - reference).max())
                 for v in variants}
    shape = (raw.shape[0],) + ((region_yx, region_yx) if region_yx else raw.shape[1:])
    lines = [f"`predict_to_file` (the `elektronn2-predict` code path, HDF5 -> zarr, default "
             f"blocks) of neuro3d on FIB-25 z {z[0]}-{z[1]}, output {shape} = {voxels / 1e6:.2f} "
             f"MVx; useful {gflop * 1e3:.2f} MFLOP per voxel; fp32 matmul peak "
             f"{np.median(peaks):.0f} GFLOP/s (median of {rounds} rounds"
             f"{', TF32 allowed' if device.type == 'cuda' and config.tf32 else ''}); "
             f"{rounds} interleaved rounds, the first includes compilation", '',
             "| precision | compile | median s | MVx/s | useful GFLOP/s | of fp32 peak | vs fp32 "
             "| max abs diff to fp32 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    base = np.array(seconds[variants[0]])
    for (precision, compile_), t in seconds.items():
        t = np.array(t)
        gflops = voxels * gflop / np.median(t)
        lines.append(f"| {precision} | {compile_} | {np.median(t):.2f} | "
                     f"{voxels / 1e6 / np.median(t):.3f} | {gflops:.1f} | "
                     f"{100 * gflops / np.median(peaks):.0f} % | {np.median(base / t):.2f}x | "
                     f"{diffs[precision, compile_]:.1e} |")
    return lines


# --- main ----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help="few rounds, a small FIB-25 box, a subset of the device tests")
    parser.add_argument('--rounds', type=int, help="timing rounds (default 5; quick 2)")
    parser.add_argument('--train-steps', type=int, default=300,
                        help="training steps of the predicting net (bench_precision; cached)")
    parser.add_argument('--skip-tests', action='store_true', help="no test run")
    parser.add_argument('--test-timeout', type=int, default=300,
                        help="seconds for the test run")
    parser.add_argument('--output', type=Path, help="also write the Markdown section here")
    parser.add_argument('--append', action='store_true',
                        help="append the section to benchmarks/RESULTS.md")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device('cuda' if cuda else 'cpu')
    config.device = device.type
    rounds = args.rounds or (2 if args.quick else 5)
    started = time.perf_counter()
    section = [f"## GPU check (`gpu_check.py{' --quick' if args.quick else ''}`): "
               f"{'CUDA' if cuda else 'no CUDA, CPU only'}", '',
               f"Device: {describe_device(device)}. {_load()} at the start; "
               f"{time.strftime('%Y-%m-%d %H:%M')}.", '']
    if not cuda:
        section += ["No CUDA device: the device tests (which run on the CPU in the normal "
                    "suite), fp16 and torch.compile were skipped; the timings below are of "
                    "the CPU.", '']

    def emit(lines: list[str]) -> None:
        section.extend(lines + [''])
        print('\n'.join(lines), flush=True)

    print('\n'.join(section), flush=True)
    if cuda and not args.skip_tests:
        paths = QUICK_TESTS if args.quick else DEVICE_TESTS
        summary, failed = run_device_tests(paths, args.test_timeout)
        emit([f"### Tests on CUDA (`ELEKTRONN2_DEVICE=cuda pytest -m 'not slow' "
              f"{' '.join(paths)}`)", '', summary]
             + [f"- failed: `{name}`" for name in failed])
    emit(["### Training steps", ''] + training_table(device, rounds, compile_on=cuda))
    if args.quick and not cached_model_path(args.train_steps).exists():
        model = trained_neuro3d(0)
        trained = "untrained neuro3d (no cached trained one; run bench_precision.py first)"
    else:
        model = trained_neuro3d(args.train_steps)
        trained = f"neuro3d trained {args.train_steps} steps on FIB-25 z 64-249"
    variants = [('fp32', 'off'), ('bf16', 'off')]
    if cuda:
        variants += [('fp16', 'off'), ('fp32', 'on'), ('bf16', 'on')]
    z, region = ((0, 16), 128) if args.quick else ((0, 64), None)
    emit(["### Prediction", '', f"Net: {trained}."]
         + prediction_table(device, model, z, region, rounds, variants))
    section.append(f"{_load()} at the end; {time.perf_counter() - started:.0f} s in all.")
    print(section[-1])
    text = '\n'.join(section) + '\n'
    if args.output:
        args.output.write_text(text)
    if args.append:
        with open(ROOT / 'benchmarks' / 'RESULTS.md', 'a') as f:
            f.write('\n' + text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
