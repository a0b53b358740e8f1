"""elektronn2-view on an elektronn2-segment output: raw, prediction and segmentation together."""
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use('Agg')

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import zarr  # noqa: E402

from elektronn2.inference.blockwise_segmentation import segment_to_file  # noqa: E402
from elektronn2.inference.outputs import MANIFEST_ATTR  # noqa: E402
from elektronn2.utils.segmentation_view import segmentation_layers  # noqa: E402
from elektronn2.utils.viewer import main  # noqa: E402


@pytest.fixture
def segmented(tmp_path):
    """(raw, boundary, output): a raw volume, a prediction of its z 5-15 recording it as its
    input, and the elektronn2-segment output of the prediction."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (20, 30, 40), dtype=np.uint8)
    with h5py.File(tmp_path / 'raw.h5', 'w') as f:
        f['raw'] = raw
    boundary = np.full((10, 30, 40), 0.1, np.float32)
    boundary[:, :, 20] = 0.9
    prediction = tmp_path / 'prediction.zarr'
    array = zarr.open_array(store=str(prediction), path='probabilities', mode='w',
                            shape=(2, 10, 30, 40), dtype='f4')
    array[:] = np.stack([1 - boundary, boundary])
    array.attrs.update({MANIFEST_ATTR: {'input': f"{tmp_path / 'raw.h5'}:raw"},
                        'voxel_offset': [5, 0, 0]})
    output = tmp_path / 'seg.zarr'
    segment_to_file(prediction, output, block_shape=(8, 16, 16), progress=False)
    return raw, boundary, output


def test_segmentation_is_shown_with_prediction_and_raw(segmented, tmp_path):
    raw, boundary, output = segmented
    prediction = output.parent / 'prediction.zarr'
    layers = segmentation_layers(str(output))
    assert sorted(layers) == ['prediction', 'raw', 'segmentation']
    np.testing.assert_array_equal(layers['raw'], raw[5:15])
    np.testing.assert_array_equal(layers['prediction'], boundary)
    assert layers['segmentation'].max() == 2
    assert segmentation_layers(str(prediction)) is None
    assert main([str(output), '--save', str(tmp_path / 'view.png')]) == 0
    assert (tmp_path / 'view.png').stat().st_size > 1000


SOURCES = 'window.viewer.layerManager.managedLayers.flatMap(m => m.layer.dataSources)'
LOADED = f"() => {SOURCES}.length === 3 && {SOURCES}.every(d => d.loadState !== undefined)"
ERRORS = f"() => {SOURCES}.filter(d => d.loadState.error).map(d => d.loadState.error.message)"
CHROMIUM = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))),
                None)


@pytest.mark.skipif(CHROMIUM is None, reason='Chromium not found (apt-get install chromium)')
def test_neuroglancer_page_loads_the_layers_in_headless_chromium(segmented):
    pytest.importorskip('neuroglancer', reason='pip install neuroglancer')
    sync_api = pytest.importorskip('playwright.sync_api', reason='pip install playwright')
    _, _, output = segmented
    process = subprocess.Popen([sys.executable, '-m', 'elektronn2.utils.viewer', str(output),
                                '--backend', 'neuroglancer'], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith('neuroglancer: http://127.0.0.1:'), line
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                '--no-sandbox', '--use-gl=swiftshader', '--enable-unsafe-swiftshader'])
            page = browser.new_page()
            page.goto(line.split()[1])
            page.wait_for_selector('.neuroglancer-layer-item', timeout=60000)
            names = page.eval_on_selector_all(
                '.neuroglancer-layer-item .neuroglancer-layer-item-label',
                'items => items.map(item => item.textContent)')
            # every layer's source loaded: the segmentation's OME-Zarr over HTTP included
            page.wait_for_function(LOADED, timeout=60000)
            errors = page.evaluate(ERRORS)
            browser.close()
    finally:
        process.kill()
        process.wait()
    assert names == ['raw', 'prediction', 'segmentation']
    assert errors == []
