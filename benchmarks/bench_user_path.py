"""The user path of ``elektronn2-predict`` against the machine's fp32 matmul peak (issue 20).

For the neuro3d net (strided, max-fragment pooling) and the U-Net of
``examples/unet3d_lite.py`` (valid convolutions, up-convolutions), ``predict_to_file``
(HDF5 in, zarr out: what ``elektronn2-predict`` runs) with default settings (fp32, blocks
chosen from the footprint) on FIB-25 z 0-31, interleaved with the matmul peak (best of ten
2048² float32 products) in the same round. Useful work per output voxel:
:func:`elektronn2.neuromancer.dense.useful_macs_per_voxel` (x2 FLOPs); executed work: what
the chosen blocks run (``--verbose`` prints both). Weights are as initialised: speed does
not depend on them. The U-Net also runs with ``mfp='off'`` (tiling its saved patch, what
the default did before the 'patch' back end) in the same round, for the ratio.

Run: python benchmarks/bench_user_path.py [--rounds 2] [--z 0 32] [--no-tiled]
"""
from __future__ import annotations

import argparse
import os
import runpy
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from bench_predict import FIB25
from bench_training import build_neuro3d, describe_machine, matmul_peak

from elektronn2.inference import predict_to_file
from elektronn2.inference.predictors import load_model
from elektronn2.neuromancer.dense import useful_macs_per_voxel

EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'


def unet3d_lite():
    return runpy.run_path(str(EXAMPLES / 'unet3d_lite.py'))['create_model']()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--z', type=int, nargs=2, default=(0, 32))
    parser.add_argument('--no-tiled', action='store_true',
                        help="skip the U-Net's tiled run (--mfp off), the slowest")
    args = parser.parse_args()
    print(describe_machine())
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / 'raw.h5'
        with h5py.File(FIB25, 'r') as f, h5py.File(raw_path, 'w') as out:
            out['raw'] = f['volumes/raw'][args.z[0]:args.z[1]]
        paths = {}
        for name, build in (('neuro3d', lambda: build_neuro3d((23, 185, 185))),
                            ('unet3d_lite', unet3d_lite)):
            paths[name] = Path(tmp) / f'{name}.mdl'
            build().save(paths[name])
        # row name -> (model, --mfp)
        models = {'neuro3d': (paths['neuro3d'], 'auto'), 'unet3d_lite': (paths['unet3d_lite'], 'auto')}
        if not args.no_tiled:
            models['unet3d_lite, --mfp off (tiled)'] = (paths['unet3d_lite'], 'off')
        useful = {name: 2 * useful_macs_per_voxel(load_model(path).prediction_node)
                  for name, (path, _) in models.items()}
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, (path, mfp) in models.items():
                peak = matmul_peak()
                out = Path(tmp) / 'out.zarr'
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                report = predict_to_file(path, raw_path, out, 'raw', progress=False, mfp=mfp)
                seconds = time.perf_counter() - start
                rows[name].append((report.voxels * useful[name] / seconds / 1e9, peak))
                print(f"{name}: backend {report.backend}, blocks {report.block_shape} "
                      f"x{report.n_blocks}, {seconds:.1f} s, "
                      f"{report.voxels / seconds / 1e6:.4f} MVx/s, useful "
                      f"{rows[name][-1][0]:.1f} GFLOP/s, peak {peak:.0f} GFLOP/s "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    print("\n| net | useful MFLOP/voxel | useful GFLOP/s (median) "
          "| of the fp32 matmul peak (median of rounds) |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        print(f"| {name} | {useful[name] / 1e6:.2f} | {np.median([v for v, _ in values]):.1f} | "
              f"{100 * np.median([v / p for v, p in values]):.0f} % |")


if __name__ == '__main__':
    main()
