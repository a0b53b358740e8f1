"""(c) Time the neuro3d training loop waits for data from 2 background workers on FIB-25.

The loop of the trainer: ``BackgroundBatches.next()`` then ``Model.trainingstep`` with
elektronn2's default settings; batches from ``BatchCreatorImage`` on
``fib25_training_sample2.h5`` (boundary targets from ``ids2barriers``, default
augmentation: warp=0.5, grey values). The 2 workers share the 2 cores with torch's
threads in the main process, so each thread setting of the main process runs in its own
process: 2 threads, 1 thread, and 2 threads with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP
threads sleep instead of spinning while they wait). Each also times steps on batches
made beforehand with no workers running, so the workers' cost to the step shows.

Run: python benchmarks/bench_data_wait.py [--steps 30] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from bench_training import build_neuro3d, describe_machine

from elektronn2.data import BatchCreatorImage, ids2barriers
from elektronn2.data.workers import BackgroundBatches

WORKERS = 2
SETTINGS = {'2 threads': ({}, 2), '1 thread': ({}, 1),
            '2 threads, OMP_WAIT_POLICY=PASSIVE': ({'OMP_WAIT_POLICY': 'PASSIVE'}, 2)}


def barrier_file(fib25: Path, directory: Path) -> Path:
    """Boundaries of FIB-25's neuron ids, gzip-chunked like the raw data."""
    with h5py.File(fib25, 'r') as f:
        ids = f['volumes/labels/neuron_ids'][:]
    path = directory / 'barriers.h5'
    with h5py.File(path, 'w') as out:
        out.create_dataset('barriers', data=ids2barriers(ids), chunks=(50, 125, 125),
                           compression='gzip')
    return path


def training_loop(model, data, steps: int) -> tuple[float, float]:
    """(wait fraction, median seconds per step) of ``steps`` steps after 3 warm-up steps."""
    with BackgroundBatches(data, 1, n_workers=WORKERS, seed=0) as batches:
        for _ in range(3):
            model.trainingstep(*batches.next())
        batches.reset_stats()
        step_times = []
        for _ in range(steps):
            step_times.append(model.trainingstep(*batches.next())[1])
        return batches.stats.wait_fraction, float(np.median(step_times))


def steps_without_workers(model, data, steps: int) -> float:
    """Median seconds per step on batches made beforehand (no workers running)."""
    batches = [data.getbatch(1) for _ in range(4)]
    for batch in batches[:2]:
        model.trainingstep(*batch)
    return float(np.median([model.trainingstep(*batches[i % 4])[1] for i in range(steps)]))


def measure(fib25: Path, steps: int, repeats: int) -> None:
    """Print 'wait fraction, s/step, s/step without workers' for each repeat."""
    with tempfile.TemporaryDirectory() as tmp:
        model = build_neuro3d()
        data = BatchCreatorImage(model.input_node, model.target_node,
                                 d_files=[(fib25, 'volumes/raw')],
                                 l_files=[(barrier_file(fib25, Path(tmp)), 'barriers')],
                                 aniso_factor=1, seed=0)
        for _ in range(3):     # compilation of the warping kernels, chunk cache
            data.getbatch(1)
        start = time.perf_counter()
        for _ in range(10):
            data.getbatch(1)
        print(f"  one batch in the main process: "
              f"{(time.perf_counter() - start) / 10 * 1e3:.1f} ms", flush=True)
        waits = []
        for _ in range(repeats):
            wait, step = training_loop(model, data, steps)
            alone = steps_without_workers(model, data, steps // 2)
            waits.append(wait)
            print(f"  wait fraction {wait:6.2%}, {step:.3f} s/step; without workers "
                  f"{alone:.3f} s/step ({step / alone:.2f}x); load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
        print(f"  (c) largest wait fraction {max(waits):.2%}; target < 5%: "
              f"{'met' if max(waits) < 0.05 else 'MISSED'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--threads', type=int, help='(internal) measure in this process')
    args = parser.parse_args()
    data_dir = Path(os.environ.get('ELEKTRONN2_DATA',
                                   Path(__file__).resolve().parents[2] / 'shared' / 'data'))
    fib25 = data_dir / 'em' / 'fib25_training_sample2.h5'
    if args.threads:
        torch.set_num_threads(args.threads)
        measure(fib25, args.steps, args.repeats)
        return
    print(describe_machine())
    for name, (env, threads) in SETTINGS.items():
        print(f"main process: {name}", flush=True)
        subprocess.run([sys.executable, __file__, '--steps', str(args.steps), '--repeats',
                        str(args.repeats), '--threads', str(threads)],
                       env={**os.environ, **env}, check=True)


if __name__ == '__main__':
    main()
