"""Peak memory and time of blockwise segmentation against one block of the whole volume.

    python benchmarks/bench_segment_memory.py [--shape 250 250 250] [--block 64 64 64]

On FIB-25 (``$ELEKTRONN2_DATA/em/fib25_training_sample2.h5``) a boundary map (one minus
smoothed raw, scaled by percentiles: the thresholded-raw baseline's map) is written as a
uint8 two-class prediction, as ``elektronn2-predict --dtype uint8`` writes one. Each run
is a fresh process (its peak resident memory VmHWM, including the imports):

* ``whole``: :func:`~elektronn2.inference.blockwise_segmentation.segment_to_file` with one
  block covering the volume;
* ``blocks``: the same with ``--block`` blocks;
* ``flood``: :func:`~elektronn2.inference.segmentation.segment_boundaries` of the map in
  memory (the in-RAM watershed, for reference).

Prints each run's peak memory, its increase over the imports alone and its time, and
checks that ``whole`` and ``blocks`` wrote the same segmentation.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {'seed_threshold': 0.5, 'min_seed_size': 20, 'merge_threshold': 0.3, 'min_size': 200}


def write_prediction(path: Path, shape: tuple[int, int, int]) -> None:
    import h5py
    import scipy.ndimage as ndi
    import zarr
    data = Path(os.environ.get('ELEKTRONN2_DATA', 'data'))
    with h5py.File(data / 'em' / 'fib25_training_sample2.h5', 'r') as f:
        raw = f['volumes/raw'][tuple(slice(0, n) for n in shape)].astype(np.float32)
    smooth = ndi.gaussian_filter(raw, 1.0)
    low, high = np.percentile(smooth, (1, 99))
    boundary = 1 - np.clip((smooth - low) / (high - low), 0, 1)
    array = zarr.open_array(store=str(path), path='probabilities', mode='w',
                            shape=(2,) + boundary.shape, chunks=(2, 64, 64, 64), dtype='uint8')
    array[:] = np.rint(np.stack([1 - boundary, boundary]) * 255).astype(np.uint8)
    array.attrs.update({'resolution': [10, 10, 10]})


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from
    the parent across fork and exec)."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, prediction: str, output: str, block: list[int]) -> dict:
    """One run in this process: peak memory (MiB) after the imports and at the end."""
    from elektronn2.data.sources import open_source
    from elektronn2.inference.blockwise_segmentation import segment_to_file
    from elektronn2.inference.segmentation import segment_boundaries
    imports = peak_mib()
    t0 = time.perf_counter()
    if mode == 'flood':
        boundary = open_source(prediction, 'probabilities')[1].astype(np.float32) / 255
        segment_boundaries(boundary, **SETTINGS)
    else:
        shape = open_source(prediction, 'probabilities').shape[1:]
        segment_to_file(prediction, output, block_shape=shape if mode == 'whole' else block,
                        progress=False, **SETTINGS)
    return {'mode': mode, 'seconds': time.perf_counter() - t0, 'imports_mib': imports,
            'peak_mib': peak_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shape', type=int, nargs=3, default=(250, 250, 250))
    parser.add_argument('--block', type=int, nargs=3, default=(64, 64, 64))
    parser.add_argument('--child', nargs=3, metavar=('MODE', 'PREDICTION', 'OUTPUT'))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.block)))
        return
    import zarr
    with tempfile.TemporaryDirectory() as tmp:
        prediction = Path(tmp, 'prediction.zarr')
        write_prediction(prediction, tuple(args.shape))
        for mode in ('flood', 'whole', 'blocks'):
            command = [sys.executable, __file__, '--child', mode, str(prediction),
                       str(Path(tmp, f'{mode}.zarr')), '--block', *map(str, args.block)]
            result = json.loads(subprocess.run(command, check=True, capture_output=True,
                                               text=True).stdout.splitlines()[-1])
            print(f"{mode:<7} peak {result['peak_mib']:7.0f} MiB (imports "
                  f"{result['imports_mib']:.0f} MiB, +{result['peak_mib'] - result['imports_mib']:.0f})"
                  f"  {result['seconds']:6.1f} s")
        whole, blocks = (zarr.open_group(store=str(Path(tmp, f'{m}.zarr')), mode='r')['0'][:]
                         for m in ('whole', 'blocks'))
        print(f"whole == blocks: {np.array_equal(whole, blocks)} ({int(whole.max())} segments)")


if __name__ == '__main__':
    main()
