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
   (PredictionModule), with windows batched by 4 and by 1 (its default). elektronn2 also
   runs with every window evaluated alone (no reuse of the overlap, ``window_reuse``).

Useful FLOPs per output voxel = 2 x sum over conv layers of n_f * n_in * filter taps: the
work of a dense, non-redundant evaluation (what MFP computes, without patch borders).

Run: python benchmarks/bench_predict.py [--same-only] [--rounds N] [--window Z Y X]
     (needs $ELEKTRONN2_DATA or ../shared/data)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from bench_training import describe_machine, matmul_peak

import elektronn2.neuromancer as nm
from elektronn2.inference import Box, importance_map, predict_to_file, predict_volume, resolve_spec
from elektronn2.inference.blending import BlendingPredictor
from elektronn2.inference.export import PredictionModule
from elektronn2.inference.predictors import load_model
from elektronn2.neuromancer.dense import useful_macs_per_voxel

DATA = Path(os.environ.get('ELEKTRONN2_DATA', Path(__file__).resolve().parents[2] / 'shared' / 'data'))
FIB25 = DATA / 'em' / 'fib25_training_sample2.h5'


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


def build_same_net(window: tuple[int, int, int] = (32, 64, 64)):
    """The 'same'-padded net of the blending comparison (4 layers of 3 x 3 x 3, 2 classes)."""
    nm.model_manager.newmodel('bench_same')
    inp = nm.Input((None, 1) + tuple(window), 'b,f,z,y,x', name='raw')
    conv = nm.Conv(inp, 16, 3, conv_mode='same')
    conv = nm.Conv(conv, 32, 3, conv_mode='same')
    conv = nm.Conv(conv, 32, 3, conv_mode='same')
    probs = nm.Softmax(nm.Conv(conv, 2, 3, conv_mode='same', activation_func='lin'))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    return model


def same_net(path: Path, window: tuple[int, int, int] = (32, 64, 64)) -> Path:
    return Path(build_same_net(window).save(path))


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


def same_net_benchmark(tmp: Path, raw: np.ndarray, peak: float, rounds: int = 1,
                       window: tuple[int, int, int] = (32, 64, 64)) -> None:
    model_path = same_net(tmp / 'same.mdl', window)
    model = load_model(model_path)
    macs = useful_macs_per_voxel(model.prediction_node)
    roi = model.input_node.shape.spatial_shape
    print(f"\n## 'same'-padded net (windows {roi}, Gaussian weights, overlap 0.25): useful "
          f"{2 * macs / 1e3:.1f} kFLOP per output voxel, volume {raw.shape} in memory; "
          f"median of {rounds} interleaved round(s)")
    region = Box((0, 0, 0), raw.shape)
    alone = BlendingPredictor(model.prediction_node, region, reuse=False)
    runs = {f"elektronn2 predict_volume, blocks {block}":
            (lambda block=block: predict_volume(model_path, raw, block_shape=block,
                                                blend='gaussian'))
            for block in (raw.shape, (64, 128, 128))}  # one block; blocks recomputing windows
    runs["elektronn2, one block, every window alone (reuse off)"] = (
        lambda: alone.predict(raw[None], region))
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        print("MONAI is not installed: skipped (pip install monai to compare)")
        sliding_window_inference = None
    if sliding_window_inference is not None:
        module = PredictionModule(model).eval()
        image = torch.as_tensor(raw[None, None].astype(np.float32) / 255)
        weights = torch.as_tensor(importance_map(tuple(roi), 'gaussian'))
        for sw_batch in (4, 1):
            runs[f"MONAI sliding_window_inference (sw_batch {sw_batch})"] = (
                lambda sw_batch=sw_batch: sliding_window_inference(
                    image, roi, sw_batch, module, overlap=0.25, mode='gaussian',
                    roi_weight_map=weights)[0].numpy())
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    results = {}
    for _ in range(rounds):
        for name, run in runs.items():
            with torch.no_grad():
                seconds[name].append(_seconds(lambda: results.__setitem__(name, run())))
    print("| run | MVx | s | MVx/s | GFLOP/s | of peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, times in seconds.items():
        report(name, raw.size, float(np.median(times)), macs, peak)
    one_block = f"elektronn2 predict_volume, blocks {raw.shape}"
    for name, out in results.items():
        print(f"largest |{one_block} - {name}|: {np.abs(results[one_block] - out).max():.2e}")
    for name in seconds:
        per_round = np.divide(seconds[name], seconds[one_block])
        print(f"{one_block}: {np.median(seconds[name]) / np.median(seconds[one_block]):.2f}x "
              f"the voxels/s of {name} (median of per-round ratios {np.median(per_round):.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=1,
                        help="interleaved rounds of the 'same'-padded net's runs")
    parser.add_argument('--same-only', action='store_true',
                        help="only the 'same'-padded net (blending against MONAI)")
    parser.add_argument('--window', type=int, nargs=3, default=(32, 64, 64),
                        help="the 'same'-padded net's window (z y x)")
    args = parser.parse_args()
    print(f"Machine: {describe_machine()}")
    peak = matmul_peak()
    print(f"float32 matmul peak (2048^2, best of 10): {peak:.1f} GFLOP/s")
    with h5py.File(FIB25) as f:
        raw = f['volumes/raw'][:64, :192, :192]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.same_only:
            strided_net_benchmark(Path(tmp), raw, peak)
        same_net_benchmark(Path(tmp), raw, peak, args.rounds, tuple(args.window))


if __name__ == '__main__':
    main()
