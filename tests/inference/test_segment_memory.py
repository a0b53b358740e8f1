"""Peak memory of blockwise segmentation follows the block, not the volume (subprocesses)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

#: run in a fresh interpreter: segment; print the growth of the peak resident memory
#: (VmHWM, not inherited across exec) over its value after the imports, in MiB
PROBE = """
import json, sys
from elektronn2.inference.blockwise_segmentation import segment_to_file

def peak():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith('VmHWM'))

prediction, output, block = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3:6]]
base = peak()
segment_to_file(prediction, output, block_shape=block, progress=False, merge_threshold=0.3,
                min_size=50)
print(json.dumps(peak() - base))
"""


def boundary_map(path, shape):
    rng = np.random.default_rng(0)
    boundary = ndi.gaussian_filter(rng.random(shape, np.float32), 2)
    boundary = (boundary - boundary.min()) / (boundary.max() - boundary.min())
    zarr.open_array(store=str(path), mode='w', shape=shape, chunks=(32, 64, 64),
                    dtype='f4')[:] = boundary


@pytest.mark.slow
def test_peak_memory_follows_the_block_not_the_volume(tmp_path):
    growth = {}
    for depth in (64, 192):
        prediction = tmp_path / f'boundary{depth}.zarr'
        boundary_map(prediction, (depth, 128, 128))
        for name, block in (('blocks', (32, 32, 32)), ('whole', (depth, 128, 128))):
            result = subprocess.run([sys.executable, '-c', PROBE, str(prediction),
                                     str(tmp_path / f'{name}{depth}.zarr'), *map(str, block)],
                                    capture_output=True, text=True, check=True)
            growth[name, depth] = json.loads(result.stdout.splitlines()[-1])
    # three times the volume: the whole-volume run grows about threefold, the blocks' barely
    assert growth['whole', 192] > 2 * growth['whole', 64], growth
    assert growth['blocks', 192] < growth['blocks', 64] + 30, growth
    assert growth['blocks', 192] < growth['whole', 192] / 4, growth
