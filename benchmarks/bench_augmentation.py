"""Benchmark of the warping augmentation (23 x 185 x 185 patches, the neuro3d input).

1. Interpolation tools for one warped patch (random rotation + shear, anisotropy 2):
   elektronn2's numba kernel vs scipy.ndimage.map_coordinates, scipy.ndimage.affine_transform
   and torch.nn.functional.grid_sample, each checked against the numba result.
2. Warped batches per second of BatchCreatorImage on FIB-25 (one process).
3. The same (warp=0.5) delivered by 1 and 2 background worker processes
   (elektronn2.data.BackgroundBatches) to a consumer that does nothing else.
4. The cost of seeding every generator before each batch (``make_batch``, as the workers
   make batch i from (seed, i)) against plain ``getbatch``, alternated in one process.

Run: python benchmarks/bench_augmentation.py  (needs $ELEKTRONN2_DATA or ../shared/data)
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

import elektronn2.neuromancer as nm
from elektronn2.data import BackgroundBatches, BatchCreatorImage, ids2barriers
from elektronn2.data import augmentation as aug
from elektronn2.data.workers import batch_entropy, make_batch

PATCH = (23, 185, 185)
NEURO3D = [(20, (1, 6, 6), (1, 2, 2)), (30, (1, 5, 5), (1, 2, 2)), (40, (1, 5, 5), (1, 1, 1)),
           (80, (4, 4, 4), (2, 1, 1)), (100, (3, 4, 4), (1, 1, 1)), (100, (3, 4, 4), (1, 1, 1)),
           (150, (2, 4, 4), (1, 1, 1)), (200, (1, 4, 4), (1, 1, 1)), (200, (1, 4, 4), (1, 1, 1)),
           (200, (1, 1, 1), (1, 1, 1))]


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    """Median seconds of ``repeats`` calls (after one warm-up call) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), np.asarray(result)


def interpolation_tools(repeats: int = 15) -> None:
    rng = np.random.default_rng(0)
    transform = aug.random_transform(rng, aug.WarpParams(), aniso_factor=2.0)
    matrix = aug.patch_matrix(transform, PATCH, (0, 0, 0))
    corners = aug.map_points(matrix, aug.box_corners(PATCH))
    lo = np.floor(corners.min(0)).astype(int)
    matrix = aug.translation(-lo) @ matrix  # coordinates within the source box
    box_shape = tuple(int(s) for s in np.floor(corners.max(0)).astype(int) - lo + 2)
    source = rng.random(box_shape, dtype=np.float32)
    print(f"source box {box_shape} -> warped patch {PATCH} ({np.prod(PATCH) / 1e6:.2f} M voxels)")

    def scipy_map_coordinates():
        grid = np.indices(PATCH, dtype=np.float32).reshape(3, -1)
        coords = matrix[:3, :3].astype(np.float32) @ grid + matrix[:3, 3:4].astype(np.float32)
        return ndimage.map_coordinates(source, coords, order=1).reshape(PATCH)

    source_t = torch.from_numpy(source)[None, None]
    scale = torch.tensor([2.0 / (s - 1) for s in box_shape[::-1]], dtype=torch.float32)

    def torch_grid_sample():
        grid = torch.from_numpy(np.indices(PATCH, dtype=np.float32).reshape(3, -1))
        coords = torch.from_numpy(matrix[:3, :3].astype(np.float32)) @ grid \
            + torch.from_numpy(matrix[:3, 3:4].astype(np.float32))
        normalised = coords.flip(0).T * scale - 1  # grid_sample wants (x, y, z) in [-1, 1]
        return F.grid_sample(source_t, normalised.reshape(1, *PATCH, 3), mode='bilinear',
                             align_corners=True)[0, 0]

    def single_threaded(fn):
        def run():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return fn()
            finally:
                torch.set_num_threads(threads)
        return run

    tools = {
        'numba kernel (elektronn2, 1 thread)':
            lambda: aug.warp_linear(source[None], matrix, PATCH)[0],
        'scipy.ndimage.affine_transform': lambda: ndimage.affine_transform(
            source, matrix[:3, :3], matrix[:3, 3], output_shape=PATCH, order=1),
        'scipy.ndimage.map_coordinates': scipy_map_coordinates,
        'torch grid_sample (1 thread)': single_threaded(torch_grid_sample),
        f'torch grid_sample ({torch.get_num_threads()} threads)': torch_grid_sample,
    }
    results = {name: timed(fn, repeats) for name, fn in tools.items()}
    reference_time, reference = next(iter(results.values()))
    print(f"{'tool':40s} {'ms/patch':>9s} {'x numba':>8s} {'max |diff|':>11s}")
    for name, (seconds, out) in results.items():
        print(f"{name:40s} {seconds * 1e3:9.1f} {seconds / reference_time:8.1f} "
              f"{np.abs(out - reference).max():11.2e}")


def neuro3d_nodes():
    inp = nm.Input((None, 1) + PATCH, 'b,f,z,x,y', name='raw')
    out = inp
    for n_f, filt, pool in NEURO3D:
        out = nm.Conv(out, n_f, filt, pool)
    probs = nm.Softmax(nm.Conv(out, 2, (1, 1, 1), activation_func='lin'))
    return inp, nm.Input_like(probs, override_f=1, name='target', dtype='int16')


def batches_per_second(data_dir: Path, n_batches: int = 40) -> None:
    fib25 = data_dir / 'em' / 'fib25_training_sample2.h5'
    with h5py.File(fib25, 'r') as f:  # closed before the sources open it with a chunk cache
        ids = f['volumes/labels/neuron_ids'][:]
    with tempfile.TemporaryDirectory() as tmp:
        barriers = Path(tmp) / 'barriers.h5'
        with h5py.File(barriers, 'w') as out:
            out.create_dataset('barriers', data=ids2barriers(ids), chunks=(50, 125, 125),
                               compression='gzip')
        creator = BatchCreatorImage(*neuro3d_nodes(), d_files=[(fib25, 'volumes/raw')],
                                    l_files=[(barriers, 'barriers')], aniso_factor=1, seed=0)
        print(f"\n{creator}")
        for label, kwargs in [('warp=1 (every example warped)', dict(warp=1)),
                              ('warp=0.5 (default)', dict(warp=0.5)),
                              ('warp=0 (plain crops)', dict(warp=0)),
                              ('warp=1, lock_z=False, perspective', dict(
                                  warp=1, warp_args={'lock_z': False, 'perspective': True}))]:
            for _ in range(5):  # warm the chunk cache and the JIT
                creator.getbatch(1, **kwargs)
            start = time.perf_counter()
            for _ in range(n_batches):
                creator.getbatch(1, **kwargs)
            rate = n_batches / (time.perf_counter() - start)
            print(f"batch_size 1, {label:38s} {rate:6.1f} batches/s ({1e3 / rate:5.1f} ms/batch)")
        background_batches_per_second(creator, 3 * n_batches)
        seeding_overhead(creator, 3 * n_batches)


def background_batches_per_second(creator, n_batches: int) -> None:
    """Warped batches (warp=0.5) per second delivered by 1 and 2 worker processes."""
    for n_workers in (1, 2):
        with BackgroundBatches(creator, 1, n_workers=n_workers,
                               batch_kwargs=dict(warp=0.5), seed=0) as batches:
            for _ in range(4 * n_workers):  # start-up, JIT and chunk cache
                batches.next()
            start = time.perf_counter()
            for _ in range(n_batches):
                batches.next()
            rate = n_batches / (time.perf_counter() - start)
        print(f"batch_size 1, warp=0.5, {n_workers} background worker(s) {rate:8.1f} batches/s")


def seeding_overhead(creator, n_batches: int) -> None:
    """Median ms of plain crops (warp=0, the cheapest batch) made by ``getbatch`` and by
    ``make_batch`` (every generator seeded first), alternated side by side."""
    plain, seeded = [], []
    for index in range(n_batches):
        start = time.perf_counter()
        creator.getbatch(1, warp=0)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        make_batch(creator, 1, 'train', {'warp': 0}, batch_entropy(0, index))
        seeded.append(time.perf_counter() - start)
    a, b = 1e3 * np.median(plain), 1e3 * np.median(seeded)
    print(f"batch_size 1, warp=0: getbatch {a:.2f} ms, make_batch (seeded per batch) "
          f"{b:.2f} ms: ratio {b / a:.3f}")


def main() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, numpy {np.__version__}; load average "
          f"{os.getloadavg()[0]:.2f}")
    interpolation_tools()
    data_dir = Path(os.environ.get('ELEKTRONN2_DATA',
                                   Path(__file__).resolve().parents[2] / 'shared' / 'data'))
    batches_per_second(data_dir)


if __name__ == '__main__':
    main()
