"""bf16 against fp32 prediction of neuro3d on FIB-25: throughput and how far results differ.

1. A neuro3d net (``bench_training.build_neuro3d``) trained briefly on FIB-25 boundaries
   (z 64-249, Adam, elektronn2's default training settings), so that its probabilities
   mean something; cached between runs (``--model`` to give one, ``--train-steps 0`` for
   the untrained net).
2. ``predict_to_file`` (the code path of ``elektronn2-predict``: HDF5 in, zarr out, default
   block shape and back end) on FIB-25 z ``--z`` (held out from training), in fp32 and bf16,
   in interleaved rounds (the order alternates), with the fp32 (and bf16) matmul peak
   measured in every round: output MVx/s, useful GFLOP/s (2 x sum over conv layers of
   n_f * n_in * taps per output voxel, :func:`~elektronn2.neuromancer.dense.useful_macs_per_voxel`)
   and its fraction of the fp32 peak of the same round.
3. The differences: max and mean absolute difference of the boundary probability, voxels
   on the other side of 0.5, and the seeded watershed of each
   (:func:`~elektronn2.inference.segmentation.segment_boundaries`, seeds above the fp32
   map's median interior probability): variation of information
   between the two segmentations, and of each against the ground truth.

Run: python benchmarks/bench_precision.py [--z 0 32] [--rounds 2] [--train-steps 300]
     (needs $ELEKTRONN2_DATA or ../shared/data)
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
import zarr
from bench_training import build_neuro3d, describe_machine, matmul_peak

from elektronn2.data import BatchCreatorImage, BoundaryLabels, HDF5Source, SubVolume
from elektronn2.inference import predict_to_file
from elektronn2.inference.metrics import variation_of_information
from elektronn2.inference.predictors import load_model
from elektronn2.inference.segmentation import segment_boundaries
from elektronn2.neuromancer.dense import useful_macs_per_voxel

DATA = Path(os.environ.get('ELEKTRONN2_DATA',
                           Path(__file__).resolve().parents[2] / 'shared' / 'data'))
FIB25 = DATA / 'em' / 'fib25_training_sample2.h5'
RAW_KEY, IDS_KEY = 'volumes/raw', 'volumes/labels/neuron_ids'
TRAIN_Z = np.s_[64:250]          # training part; predictions are of z < 64
CACHE = Path(tempfile.gettempdir()) / 'elektronn2-bench'


# --- peaks and timing ------------------------------------------------------------------------
def useful_gflop_per_voxel(model_path: Path) -> float:
    """Useful GFLOP per output voxel: 2 x the MACs of a dense non-redundant evaluation."""
    return 2 * useful_macs_per_voxel(load_model(model_path).prediction_node) / 1e9


# --- the model ---------------------------------------------------------------------------------
def cached_model_path(steps: int, lr: float = 3e-4, seed: int = 0) -> Path:
    """Where :func:`trained_neuro3d` keeps the net of these training settings."""
    return CACHE / f'neuro3d-fib25-{steps}steps-lr{lr:g}-seed{seed}.mdl'


def trained_neuro3d(steps: int, path: Path | None = None, seed: int = 0, lr: float = 3e-4,
                    log: Callable[[str], None] = print) -> Path:
    """neuro3d trained ``steps`` Adam steps on FIB-25 boundaries (z 64-249, batch 1, grey
    augmentation, no warping), saved to ``path`` (default: a cache file reused when it
    exists)."""
    path = path or cached_model_path(steps, lr, seed)
    if path.exists():
        log(f"model: {path} (cached; {steps} training steps)")
        return path
    torch.manual_seed(seed)
    model = build_neuro3d()
    model.lr = lr
    data = BatchCreatorImage(
        model.input_node, model.target_node,
        d_files=[SubVolume(HDF5Source(FIB25, RAW_KEY), TRAIN_Z)],
        l_files=[SubVolume(BoundaryLabels(HDF5Source(FIB25, IDS_KEY)), TRAIN_Z)],
        valid_cubes=[], aniso_factor=1, seed=seed)
    start = time.perf_counter()
    losses = []
    for step in range(steps):
        x, y = data.getbatch(1, grey_augment_channels=[0])[:2]
        losses.append(model.trainingstep(x, y, optimiser='Adam')[0])
        if (step + 1) % 50 == 0:
            log(f"  training step {step + 1}/{steps}: loss (mean of last 50) "
                f"{np.mean(losses[-50:]):.3f}, {time.perf_counter() - start:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    log(f"model: {path} ({steps} training steps in {time.perf_counter() - start:.0f} s)")
    return path


def fib25_crop(z: tuple[int, int], directory: Path, yx: int | None = None,
               ) -> tuple[Path, np.ndarray, np.ndarray]:
    """FIB-25 raw z0:z1 (y, x < ``yx``) written as HDF5 (chunked like a typical input);
    (path, raw, ids)."""
    box = np.s_[z[0]:z[1], :yx, :yx]
    with h5py.File(FIB25) as f:
        raw = f[RAW_KEY][box]
        ids = f[IDS_KEY][box]
    path = directory / f'fib25_z{z[0]}-{z[1]}_yx{yx}.h5'
    with h5py.File(path, 'w') as f:
        f.create_dataset('raw', data=raw, chunks=(min(32, len(raw)), 64, 64))
    return path, raw, ids


# --- prediction runs ---------------------------------------------------------------------------
def timed_predictions(model_path: Path, input_path: Path, directory: Path,
                      precisions: tuple[str, ...], rounds: int, device: str = 'cpu',
                      **predict_args) -> tuple[dict[str, list[float]], list[dict[str, float]], int]:
    """Seconds of ``predict_to_file`` per precision and round (order alternating), the
    matmul peaks of every round (``'fp32'``, ``'bf16'``) and the output voxels."""
    seconds: dict[str, list[float]] = {p: [] for p in precisions}
    peaks: list[dict[str, float]] = []
    voxels = 0
    for r in range(rounds):
        peaks.append({'fp32': matmul_peak(torch.float32, device=device),
                      'bf16': matmul_peak(torch.bfloat16, device=device)})
        for precision in (precisions if r % 2 == 0 else precisions[::-1]):
            out = directory / f'{precision}.zarr'
            shutil.rmtree(out, ignore_errors=True)     # else the run would resume it
            report = predict_to_file(model_path, input_path, out, input_key='raw',
                                     progress=False, precision=precision, **predict_args)
            seconds[precision].append(report.seconds)
            voxels = report.voxels
    return seconds, peaks, voxels


def throughput_table(seconds: dict[str, list[float]], peaks: list[dict[str, float]],
                     voxels: int, gflop_per_voxel: float) -> list[str]:
    """Markdown rows: per precision, median MVx/s, useful GFLOP/s, of the fp32 peak."""
    lines = ["| precision | s (median) | MVx/s | useful GFLOP/s | of fp32 peak | vs fp32 |",
             "|---|---:|---:|---:|---:|---:|"]
    fp32_peak = np.array([p['fp32'] for p in peaks])
    base = np.array(seconds['fp32']) if 'fp32' in seconds else None
    for precision, times in seconds.items():
        t = np.array(times)
        gflops = voxels * gflop_per_voxel / t
        ratio = f"{np.median(base / t):.2f}x" if base is not None else '-'
        lines.append(f"| {precision} | {np.median(t):.1f} | {voxels / 1e6 / np.median(t):.3f} | "
                     f"{np.median(gflops):.1f} | {100 * np.median(gflops / fp32_peak):.0f} % | "
                     f"{ratio} |")
    return lines


# --- differences ---------------------------------------------------------------------------------
def differences(fp32: np.ndarray, other: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """How far ``other`` boundary probabilities ((z, y, x), class 1 of the output) and their
    watershed segmentation are from fp32's. Both are segmented with the same seed
    threshold: the median interior probability of the fp32 map (a briefly trained net's
    map has little contrast, a fixed 0.5 would give one segment)."""
    diff = np.abs(other - fp32)
    threshold = float(np.median(1 - fp32))
    seg32 = segment_boundaries(fp32, seed_threshold=threshold)
    seg = segment_boundaries(other, seed_threshold=threshold)
    split, merge = variation_of_information(seg, seg32, ignore_gt=())
    gt32 = sum(variation_of_information(seg32, ids))
    gt = sum(variation_of_information(seg, ids))
    return {'max_abs': float(diff.max()), 'mean_abs': float(diff.mean()),
            'flipped': float(np.mean((other > 0.5) != (fp32 > 0.5))),
            'voi_split': split, 'voi_merge': merge, 'voi': split + merge,
            'segments_fp32': int(len(np.unique(seg32))), 'segments': int(len(np.unique(seg))),
            'voi_gt_fp32': gt32, 'voi_gt': gt, 'seed_threshold': threshold}


def difference_table(results: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| vs fp32 | max abs diff | mean abs diff | voxels across 0.5 | VOI between "
             "segmentations (split + merge) | segments (fp32 / this) | VOI to ground truth "
             "(fp32 / this) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for precision, d in results.items():
        lines.append(f"| {precision} | {d['max_abs']:.2e} | {d['mean_abs']:.2e} | "
                     f"{100 * d['flipped']:.3f} % | {d['voi']:.4f} ({d['voi_split']:.4f} + "
                     f"{d['voi_merge']:.4f}) | {d['segments_fp32']} / {d['segments']} | "
                     f"{d['voi_gt_fp32']:.3f} / {d['voi_gt']:.3f} |")
    return lines


def boundary(path: Path) -> np.ndarray:
    return zarr.open_array(store=str(path), path='probabilities', mode='r')[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--z', type=int, nargs=2, default=(0, 32), metavar=('Z0', 'Z1'),
                        help="FIB-25 slices to predict (held out: below 64)")
    parser.add_argument('--yx', type=int, help="predict only y, x below this (default: all 250)")
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--train-steps', type=int, default=300,
                        help="training steps of the net (0: untrained)")
    parser.add_argument('--model', type=Path, help="a saved neuro3d-like model to use instead")
    parser.add_argument('--threads', type=int, default=2, help="torch threads")
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    print(f"uptime: {os.popen('uptime').read().strip()}")
    model = args.model or trained_neuro3d(args.train_steps)
    gflop = useful_gflop_per_voxel(model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        input_path, raw, ids = fib25_crop(tuple(args.z), tmp, args.yx)
        print(f"FIB-25 z {args.z[0]}-{args.z[1]}, shape {raw.shape}; useful {gflop * 1e3:.2f} MFLOP "
              f"per output voxel; {args.rounds} rounds")
        seconds, peaks, voxels = timed_predictions(model, input_path, tmp,
                                                   tuple(args.precisions), args.rounds)
        results = {p: differences(boundary(tmp / 'fp32.zarr'), boundary(tmp / f'{p}.zarr'), ids)
                   for p in args.precisions if p != 'fp32'}
    print("\nmatmul peaks per round (GFLOP/s): "
          + '; '.join(f"fp32 {p['fp32']:.0f}, bf16 {p['bf16']:.0f}" for p in peaks))
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print('\n'.join(throughput_table(seconds, peaks, voxels, gflop)))
    print()
    print('\n'.join(difference_table(results)))


if __name__ == '__main__':
    main()
