"""(d) Dense prediction throughput of the neuro3d net against the CPU's float32 peak.

Peak: a 4096 x 4096 float32 matrix product (2 n^3 FLOPs; oneDNN/MKL run it at the
FMA units' limit), timed in the same interleaved rounds as the net, so that load from
other jobs affects both alike; "of peak" is the median over rounds of the ratio. Dense
prediction: the neuro3d net with max-fragment pooling (one pass gives dense output),
``predict_dense`` of a raw volume of one patch (tiling, copying and fragment
re-assembly included), and the bare forward of that patch; useful FLOPs are
2 x the multiply-adds of the nodes' ``computational_cost``. Inference runs with
elektronn2's defaults (fp32, channels-last); bf16 is shown for comparison.

Run: python benchmarks/bench_dense_flops.py [--rounds 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from bench_training import build_neuro3d, describe_machine, interleaved
from elektronn2.config import config
from elektronn2.neuromancer import execution, rebuild_model
from elektronn2.neuromancer.dense import predict_dense

MFP_PATCH = (22, 184, 184)
PEAK_N = 4096


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    mfp = rebuild_model(build_neuro3d(), override_mfp_to_active=True,
                        imposed_patch_size=MFP_PATCH)
    node = mfp.prediction_node
    flops = 2 * node.all_computational_cost
    patch = mfp.input_node.shape.spatial_shape
    print(f"MFP net: patch {patch}, dense output {node.shape.spatial_shape}, "
          f"{flops / 1e9:.1f} GFLOP per pass")
    fn = mfp.function([node])
    raw = np.random.default_rng(0).random((1, 1) + patch, dtype=np.float32)
    tensors = fn.to_tensors(raw)
    a, b = torch.rand(PEAK_N, PEAK_N), torch.rand(PEAK_N, PEAK_N)

    def forward(precision: str):
        def run():
            config.precision = precision
            with torch.no_grad():
                fn(*tensors)
        return run

    def dense():
        config.precision = 'auto'
        predict_dense(node, raw[0], progress=False)

    variants = {'matmul peak': lambda: a @ b, 'forward, defaults': forward('auto'),
                'predict_dense, defaults': dense, 'forward, bf16 autocast': forward('bf16')}
    config.precision = 'auto'
    print(f"defaults for evaluation: {execution.resolve(torch.device('cpu')).describe()}")
    gflops = {'matmul peak': 2 * PEAK_N ** 3 / 1e9}
    gflops.update({name: flops / 1e9 for name in variants if name != 'matmul peak'})
    times = interleaved(variants, args.rounds, warmup=1)
    config.precision = 'auto'
    print(f"load average after: {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds\n")
    rate = {name: gflops[name] / t for name, t in times.items()}   # GFLOP/s per round
    print(f"{'run':<26} {'median s':>9} {'GFLOP/s median':>15} {'best':>6} "
          f"{'of peak (median of rounds)':>27}")
    for name, r in rate.items():
        print(f"{name:<26} {np.median(times[name]):>9.3f} {np.median(r):>15.0f} {r.max():>6.0f} "
              f"{np.median(r / rate['matmul peak']):>27.0%}")
    share = float(np.median(rate['predict_dense, defaults'] / rate['matmul peak']))
    forward_share = float(np.median(rate['forward, defaults'] / rate['matmul peak']))
    print(f"\n(d) dense prediction with the defaults: {share:.0%} of the measured float32 peak "
          f"(bare forward {forward_share:.0%}); target >= 65%: "
          f"{'met' if share >= 0.65 else 'MISSED'}")


if __name__ == '__main__':
    main()
