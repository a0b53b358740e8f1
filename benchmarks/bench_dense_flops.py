"""(d) Dense prediction throughput of the neuro3d net against the CPU's float32 FMA peak.

Peak: a small C kernel of independent AVX-512 (else AVX2) fused multiply-add chains in
registers, one OpenMP thread per torch thread, compiled here with the system C compiler
(``cc -O3 -march=native -fopenmp``); the best of 5 repetitions per round. For reference
also a 4096 x 4096 float32 matrix product (oneDNN/MKL, 2 n^3 FLOPs). Both are measured in
the same interleaved rounds as the net, so load from other jobs affects all alike; "of
peak" is the median over rounds of the per-round ratio. Without a C compiler the matrix
product stands in for the peak (said in the output).

Dense prediction: the neuro3d net with max-fragment pooling (one pass gives dense output),
``predict_dense`` of a raw volume of one patch (tiling, copying and fragment re-assembly
included), and the bare forward of that patch; useful FLOPs are 2 x the multiply-adds of
the nodes' ``computational_cost``. Inference runs with elektronn2's defaults (fp32,
channels-last); bf16 autocast is shown for comparison (against the float32 peak).

Run: python benchmarks/bench_dense_flops.py [--rounds 5] [--threads 2 | --cpu-time]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_training import build_neuro3d, describe_machine, interleaved

from elektronn2.config import config
from elektronn2.neuromancer import execution, rebuild_model
from elektronn2.neuromancer.dense import predict_dense

MFP_PATCH = (22, 184, 184)
PEAK_N = 4096

FMA_KERNEL = r'''
#include <immintrin.h>
#include <stdio.h>
#include <omp.h>
#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define STORE _mm512_storeu_ps
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define STORE _mm256_storeu_ps
#endif
#define CHAINS 12   /* independent chains: > latency x FMA ports */
int main(void) {
    const long iterations = 4000000;
    double best = 0;
    for (int repeat = 0; repeat < 5; repeat++) {
        float sink = 0;
        double start = omp_get_wtime();
        #pragma omp parallel reduction(+:sink)
        {
            vec acc[CHAINS], a = SET1(0.9999999f), b = SET1(1e-7f);
            float out[LANES];
            for (int c = 0; c < CHAINS; c++) acc[c] = SET1(c * 1e-3f);
            for (long i = 0; i < iterations; i++)
                for (int c = 0; c < CHAINS; c++) acc[c] = FMA(acc[c], a, b);
            for (int c = 0; c < CHAINS; c++) { STORE(out, acc[c]); sink += out[0]; }
        }
        double seconds = omp_get_wtime() - start;
        double gflops = 2.0 * LANES * CHAINS * iterations * omp_get_max_threads() / seconds / 1e9;
        if (gflops > best) best = gflops;
        if (sink == 12345.f) printf("#");
    }
    printf("%.1f\n", best);
    return 0;
}
'''


def fma_peak_program(directory: Path) -> Path | None:
    """The compiled FMA kernel, or None without a working C compiler."""
    compiler = shutil.which('cc') or shutil.which('gcc')
    if compiler is None:
        return None
    source, program = directory / 'fma_peak.c', directory / 'fma_peak'
    source.write_text(FMA_KERNEL)
    result = subprocess.run([compiler, '-O3', '-march=native', '-fopenmp', str(source), '-o',
                             str(program)], capture_output=True, text=True)
    return program if result.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--cpu-time', action='store_true',
                        help='one torch thread, timed by the CPU time of the main thread: '
                             'little affected by other jobs on the machine')
    args = parser.parse_args()
    threads = 1 if args.cpu_time else args.threads
    torch.set_num_threads(threads)
    clock = time.thread_time if args.cpu_time else time.perf_counter
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

    tmp = tempfile.TemporaryDirectory()
    program = fma_peak_program(Path(tmp.name))
    fma_rates: list[float] = []

    def fma():
        result = subprocess.run([str(program)], capture_output=True, text=True, check=True,
                                env={**os.environ, 'OMP_NUM_THREADS': str(threads)})
        fma_rates.append(float(result.stdout.split()[-1]))

    variants = {'matmul 4096^2': lambda: a @ b, 'forward, defaults': forward('auto'),
                'predict_dense, defaults': dense, 'forward, bf16 autocast': forward('bf16')}
    if program is not None:
        variants = {'FMA kernel': fma, **variants}
    config.precision = 'auto'
    print(f"defaults for evaluation: {execution.resolve(torch.device('cpu')).describe()}")
    times = interleaved(variants, args.rounds, warmup=1, clock=clock)
    tmp.cleanup()
    config.precision = 'auto'
    print(f"load average after: {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds; "
          f"{'CPU time of one thread' if args.cpu_time else 'wall time'}\n")
    rate = {name: flops / 1e9 / t for name, t in times.items()}   # GFLOP/s per round
    rate['matmul 4096^2'] = 2 * PEAK_N ** 3 / 1e9 / times['matmul 4096^2']
    if program is not None:
        rate['FMA kernel'] = np.array(fma_rates[-args.rounds:])
    peak = 'FMA kernel' if program is not None else 'matmul 4096^2'
    if program is None:
        print("no C compiler: the matrix product stands in for the FMA peak")
    print(f"{'run':<26} {'median s':>9} {'GFLOP/s median':>15} {'best':>6} "
          f"{'of peak (median of rounds)':>27}")
    for name, r in rate.items():
        seconds = '-' if name == 'FMA kernel' else f"{np.median(times[name]):.3f}"
        print(f"{name:<26} {seconds:>9} {np.median(r):>15.0f} {r.max():>6.0f} "
              f"{np.median(r / rate[peak]):>27.0%}")
    for label, of_peak in (('median of per-round ratios',
                            lambda n: float(np.median(rate[n] / rate[peak]))),
                           ('best / best peak', lambda n: rate[n].max() / rate[peak].max())):
        share, forward_share = of_peak('predict_dense, defaults'), of_peak('forward, defaults')
        print(f"(d) {label}: dense prediction with the defaults at {share:.0%} of the "
              f"measured float32 {'FMA' if program else 'matmul'} peak (bare forward "
              f"{forward_share:.0%}); target >= 65%: {'met' if share >= 0.65 else 'MISSED'}")


if __name__ == '__main__':
    main()
