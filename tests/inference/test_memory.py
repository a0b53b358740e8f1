"""Peak memory of blockwise prediction does not grow with the volume (measured in subprocesses)."""
import json
import subprocess
import sys

import h5py
import pytest

#: run in a fresh interpreter: predict; print the growth of anonymous memory (RssAnon,
#: sampled every 2 ms: what the process allocated, without shared-library pages) and of
#: the peak RSS (ru_maxrss) over their values after the imports, in bytes
PROBE = """
import json, resource, sys, threading, time
import psutil
from elektronn2.data.sources import open_source
from elektronn2.inference import predict_to_file, predict_volume

def anonymous():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith('RssAnon'))

def sample(peak):
    while True:
        peak[0] = max(peak[0], anonymous())
        time.sleep(0.002)

model, volume, mode, output = sys.argv[1:5]
anon_base, rss_base, peak = anonymous(), psutil.Process().memory_info().rss, [0]
threading.Thread(target=sample, args=(peak,), daemon=True).start()
if mode == 'blockwise':
    predict_to_file(model, volume, output, input_key='raw', block_shape=(32, 64, 64),
                    progress=False)
else:
    source = open_source(volume, 'raw')
    predict_volume(model, source[...], block_shape=source.shape)
max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({'anonymous': peak[0] - anon_base, 'rss': max_rss - rss_base}))
"""


def peak_memory(model, volume, mode, output=None) -> dict:
    """Growth of peak memory (MiB) of one prediction in a subprocess: 'anonymous', 'rss'."""
    result = subprocess.run([sys.executable, '-c', PROBE, str(model), str(volume), mode,
                             str(output)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return {k: v / 2 ** 20 for k, v in json.loads(result.stdout.splitlines()[-1]).items()}


def compare(boundary_model, fib25_raw, tmp_path, depth):
    """Peak memory growth of blockwise and of whole-volume prediction of FIB-25[:depth]."""
    volume = tmp_path / 'raw.h5'
    with h5py.File(volume, 'w') as f:
        f.create_dataset('raw', data=fib25_raw[:depth], chunks=(16, 64, 64), compression='gzip')
    return {'blockwise': peak_memory(boundary_model, volume, 'blockwise', tmp_path / 'out.zarr'),
            'whole': peak_memory(boundary_model, volume, 'whole')}


def test_blockwise_peak_memory_small(boundary_model, fib25_raw, tmp_path):
    grown = compare(boundary_model, fib25_raw, tmp_path, depth=64)
    assert grown['blockwise']['anonymous'] < grown['whole']['anonymous'] / 3, grown


@pytest.mark.slow
def test_blockwise_peak_memory_full_fib25(boundary_model, fib25_raw, tmp_path, capsys):
    grown = compare(boundary_model, fib25_raw, tmp_path, depth=250)
    arrays = fib25_raw.size * 4 * 3 / 2 ** 20  # float32 input and 2 output classes
    with capsys.disabled():
        print(f"\nFIB-25 250^3, peak growth in MiB (anonymous / RSS): blockwise "
              f"{grown['blockwise']['anonymous']:.0f} / {grown['blockwise']['rss']:.0f}, whole "
              f"volume {grown['whole']['anonymous']:.0f} / {grown['whole']['rss']:.0f}; "
              f"float32 input + output arrays {arrays:.0f}")
    # a quarter: the acceptance of blockwise prediction and segmentation (issues 6, 19);
    # the absolute bound: less than the volume's own float32 input and output arrays
    assert grown['blockwise']['anonymous'] < grown['whole']['anonymous'] / 4, grown
    assert grown['blockwise']['anonymous'] < arrays, grown
