"""Blended sliding windows for 'same'-padded nets: grid, weights, independence of blocks, MONAI."""
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.inference import Box, WeightedMerge, WindowGrid, importance_map, predict_volume
from elektronn2.inference.export import PredictionModule


def test_importance_maps():
    assert (importance_map((3, 4), 'constant') == 1).all()
    gauss = importance_map((5, 8, 8), 'gaussian')
    assert gauss.shape == (5, 8, 8) and gauss.max() == 1 and gauss.min() >= 1e-3
    assert gauss[2, 3, 3] == gauss[2, 4, 4] > gauss[0, 0, 0]  # symmetric, peaked in the middle
    np.testing.assert_allclose(gauss, gauss[::-1, ::-1, ::-1])


def test_window_grid_covers_region():
    grid = WindowGrid(Box((0, 10), (30, 17)), window=(8, 8), overlap=0.25)
    assert grid.starts(0) == [0, 6, 12, 18, 22] and grid.starts(1) == [10]
    windows = grid.windows_in(Box((5, 10), (13, 17)))
    assert [w.lo for w in windows] == [(0, 10), (6, 10), (12, 10)]
    covered = np.zeros(30, int)
    for start in grid.starts(0):
        covered[start:start + 8] += 1
    assert covered.min() >= 1


def test_weighted_merge_averages_overlaps():
    merge = WeightedMerge(Box((0,), (6,)), 1, np.array([1.0, 3.0, 1.0], np.float32))
    merge.add(Box((0,), (3,)), np.full((1, 3), 2.0, np.float32))
    merge.add(Box((2,), (5,)), np.full((1, 3), 4.0, np.float32))
    np.testing.assert_allclose(merge.result()[0], [2, 2, 3, 4, 4, 0])


def global_blend(model_path, volume, mode, overlap):
    """Brute force: every window of the whole volume at once, weighted mean (z, y, x net)."""
    model = nm.modelload(model_path)
    window = model.input_node.shape.spatial_shape
    grid = WindowGrid(Box((0, 0, 0), volume.shape), window, overlap)
    weights = importance_map(window, mode)
    total = np.zeros((2,) + volume.shape)
    weight = np.zeros(volume.shape)
    raw = volume.astype(np.float32) / 255
    for w in grid.windows_in(Box((0, 0, 0), volume.shape)):
        index = w.slices_in(Box((0, 0, 0), volume.shape))
        total[(slice(None),) + index] += model.predict(raw[index][None, None])[0] * weights
        weight[index] += weights
    return total / weight


@pytest.mark.parametrize('mode, block', [('gaussian', (12, 24, 24)), ('constant', (64, 64, 64))])
def test_blockwise_blending_equals_global_blending(same_model, fib25_raw, mode, block):
    volume = fib25_raw[:20, :40, :45]
    out = predict_volume(same_model, volume, block_shape=block, blend=mode, overlap=0.5)
    np.testing.assert_allclose(out, global_blend(same_model, volume, mode, 0.5), rtol=1e-5, atol=1e-6)


def test_constant_blending_matches_monai(same_model, fib25_raw):
    monai_inferers = pytest.importorskip('monai.inferers')
    volume = fib25_raw[:20, :40, :45]
    module = PredictionModule(nm.modelload(same_model)).eval()
    image = torch.as_tensor(volume[None, None].astype(np.float32) / 255)
    with torch.no_grad():
        expected = monai_inferers.sliding_window_inference(image, (8, 16, 16), 4, module,
                                                           overlap=0.25, mode='constant')
    out = predict_volume(same_model, volume, block_shape=(10, 20, 20), blend='constant')
    np.testing.assert_allclose(out, expected[0].numpy(), rtol=1e-5, atol=1e-6)


def test_gaussian_blending_matches_monai_with_the_same_weights(same_model, fib25_raw):
    """MONAI's own Gaussian map is centred at size // 2 (off-centre for even windows);
    given elektronn2's symmetric map (``roi_weight_map``) its result is elektronn2's."""
    monai_inferers = pytest.importorskip('monai.inferers')
    volume = fib25_raw[:20, :40, :45]
    module = PredictionModule(nm.modelload(same_model)).eval()
    image = torch.as_tensor(volume[None, None].astype(np.float32) / 255)
    weights = torch.as_tensor(importance_map((8, 16, 16), 'gaussian'))
    with torch.no_grad():
        expected = monai_inferers.sliding_window_inference(
            image, (8, 16, 16), 4, module, overlap=0.25, mode='gaussian', roi_weight_map=weights)
    out = predict_volume(same_model, volume, block_shape=(10, 20, 20), blend='gaussian')
    np.testing.assert_allclose(out, expected[0].numpy(), rtol=1e-5, atol=1e-6)
