"""Benchmark of volume prediction on FIB-25 (elektronn2.inference).

1. The machine's float32 FMA peak, measured with a large matmul (torch, all threads).
2. A strided valid-convolution boundary net (output stride 1,4,4): elektronn2-predict's
   code path (HDF5 in, zarr out, blockwise) with max-fragment pooling and with tiling,
   the MAC rule's figures for both, output MVx/s and useful GFLOP/s against the peak.
3. A 'same'-padded net: elektronn2's blended blockwise prediction against MONAI's
   sliding_window_inference with the same network (Gaussian weights, overlap 0.25), both
   on an in-memory volume; MONAI is skipped with a message when it is not installed.
   MONAI gets elektronn2's Gaussian map (``roi_weight_map``; its own is centred at
   size // 2, off-centre for even windows), so the results must agree to float
   precision: the largest difference is printed. MONAI runs the net as exported
   (PredictionModule), with windows batched by 4 and by 1 (its default).

Useful FLOPs per output voxel = 2 x sum over conv layers of n_f * n_in * filter taps: the
work of a dense, non-redundant evaluation (what MFP computes, without patch borders).

Run: python benchmarks/bench_predict.py  (needs $ELEKTRONN2_DATA or ../shared/data)
"""
from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

import elektronn2.neuromancer as nm
from elektronn2.inference import Box, importance_map, predict_to_file, predict_volume, resolve_spec
from elektronn2.inference.export import PredictionModule
from elektronn2.inference.predictors import load_model
from elektronn2.neuromancer.dense import useful_macs_per_voxel

DATA = Path(os.environ.get('ELEKTRONN2_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data'))
FIB25 = DATA / 'em' / 'fib25_training_sample2.h5'


def machine() -> str:
    cpu = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text()
                .splitlines() if line.startswith('model name')), platform.processor())
    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")


def fma_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best GFLOP/s of an n x n float32 matmul (2 n^3 FLOPs)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def boundary_net(path: Path) -> Path:
    nm.model_manager.newmodel('bench_boundary')
    inp = nm.Input((None, 1, 13, 57, 57), 'b,f,z,y,x', name='raw')
    conv = nm.Conv(inp, 16, (3, 4, 4), (1, 2, 2))
    conv = nm.Conv(conv, 32, (3, 4, 4), (1, 2, 2))
    conv = nm.Conv(conv, 32, (3, 3, 3))
    conv = nm.Conv(conv, 32, (3, 3, 3))
    probs = nm.Softmax(nm.Conv(conv, 2, 1, activation_func='lin'))
    nm.model_manager.getmodel().designate_nodes(input_node=inp, prediction_node=probs)
    return Path(nm.model_manager.getmodel().save(path))


def same_net(path: Path) -> Path:
    nm.model_manager.newmodel('bench_same')
    inp = nm.Input((None, 1, 32, 64, 64), 'b,f,z,y,x', name='raw')
    conv = nm.Conv(inp, 16, 3, conv_mode='same')
    conv = nm.Conv(conv, 32, 3, conv_mode='same')
    conv = nm.Conv(conv, 32, 3, conv_mode='same')
    probs = nm.Softmax(nm.Conv(conv, 2, 3, conv_mode='same', activation_func='lin'))
    nm.model_manager.getmodel().designate_nodes(input_node=inp, prediction_node=probs)
    return Path(nm.model_manager.getmodel().save(path))


def report(name: str, voxels: int, seconds: float, macs: int, peak: float) -> None:
    gflops = 2 * macs * voxels / seconds / 1e9
    print(f"| {name:<50} | {voxels / 1e6:7.2f} | {seconds:7.2f} | {voxels / seconds / 1e6:7.3f} "
          f"| {gflops:7.1f} | {100 * gflops / peak:5.1f} % |")


def strided_net_benchmark(tmp: Path, raw: np.ndarray, peak: float) -> None:
    model_path = boundary_net(tmp / 'boundary.mdl')
    node = load_model(model_path).prediction_node
    macs = useful_macs_per_voxel(node)
    print(f"\n## Strided valid net (stride 1,4,4; fov {node.shape.fov}): useful "
          f"{2 * macs / 1e3:.1f} kFLOP per output voxel")
    block = (32, 64, 64)
    region = Box((0, 0, 0), raw.shape)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(lambda record: 'MACs per output voxel' in record.getMessage())
    logger = logging.getLogger('elektronn2')
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    spec, _ = resolve_spec(model_path, block, region)
    logger.removeHandler(handler)
    logger.setLevel(logging.WARNING)
    print(f"MAC rule for blocks {block}: chooses {spec.backend!r}")
    print("| run (elektronn2-predict code path, HDF5 -> zarr) | MVx | s | MVx/s | GFLOP/s | of peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for mfp, crop in (('on', raw), ('off', raw[:32, :128, :128])):
        volume = tmp / f'raw_{mfp}.h5'
        with h5py.File(volume, 'w') as f:
            f.create_dataset('raw', data=crop, chunks=(32, 64, 64))
        result = predict_to_file(model_path, volume, tmp / f'out_{mfp}.zarr', input_key='raw',
                                 block_shape=block, mfp=mfp, progress=False)
        report(f"mfp={mfp}, blocks {block}, volume {crop.shape}", result.voxels, result.seconds,
               macs, peak)


def same_net_benchmark(tmp: Path, raw: np.ndarray, peak: float) -> None:
    model_path = same_net(tmp / 'same.mdl')
    model = load_model(model_path)
    macs = useful_macs_per_voxel(model.prediction_node)
    roi = model.input_node.shape.spatial_shape
    print(f"\n## 'same'-padded net (windows {roi}, Gaussian weights, overlap 0.25): useful "
          f"{2 * macs / 1e3:.1f} kFLOP per output voxel, volume {raw.shape} in memory")
    print("| run | MVx | s | MVx/s | GFLOP/s | of peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for block in (raw.shape, (64, 128, 128)):  # one block; blocks that recompute straddling windows
        seconds = _seconds(lambda: predict_volume(model_path, raw, block_shape=block,
                                                  blend='gaussian'))
        report(f"elektronn2 predict_volume, blocks {block}", raw.size, seconds, macs, peak)
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        print("MONAI is not installed: skipped (pip install monai to compare)")
        return
    module = PredictionModule(model).eval()
    image = torch.as_tensor(raw[None, None].astype(np.float32) / 255)
    weights = torch.as_tensor(importance_map(tuple(roi), 'gaussian'))
    ours = predict_volume(model_path, raw, block_shape=raw.shape, blend='gaussian')
    for sw_batch in (4, 1):
        result = []
        with torch.no_grad():
            seconds = _seconds(lambda: result.append(sliding_window_inference(
                image, roi, sw_batch, module, overlap=0.25, mode='gaussian',
                roi_weight_map=weights)))
        report(f"MONAI sliding_window_inference (sw_batch {sw_batch})", raw.size, seconds, macs,
               peak)
        print(f"  largest |elektronn2 - MONAI|: {np.abs(ours - result[0][0].numpy()).max():.2e}")


def main() -> None:
    print(f"Machine: {machine()}")
    peak = fma_peak()
    print(f"float32 matmul peak (2048^2, best of 10): {peak:.1f} GFLOP/s")
    with h5py.File(FIB25) as f:
        raw = f['volumes/raw'][:64, :192, :192]
    with tempfile.TemporaryDirectory() as tmp:
        strided_net_benchmark(Path(tmp), raw, peak)
        same_net_benchmark(Path(tmp), raw, peak)


if __name__ == '__main__':
    main()
