"""Introspection plots: filter mosaics, activation maps and histograms as PNG files."""
import numpy as np
import pytest
import torch
from PIL import Image

from elektronn2.errors import GraphError, ShapeError
from elektronn2.utils.introspection import (
    activations,
    feature_maps,
    filter_mosaic,
    gradients,
    plot_activation_histograms,
    plot_activations,
    plot_filters,
    plot_gradient_histograms,
    plot_param_histograms,
)


def png_size(path):
    assert path.read_bytes()[:4] == b'\x89PNG'
    return Image.open(path).size


def test_filter_mosaic_layout_and_scaling():
    w = np.arange(2 * 3 * 2 * 4 * 5, dtype=float).reshape(2, 3, 2, 4, 5) - 50   # 3-D kernels
    mosaic = filter_mosaic(w)
    assert mosaic.shape == (2 * 5 - 1, 6 * 6 - 1)          # rows: filters; tiles: 3 inputs x 2 z
    tile = mosaic[:4, :5]
    np.testing.assert_allclose(tile, w[0, 0, 0] / np.abs(w[0, 0, 0]).max())
    assert np.isnan(mosaic[4]).all() and np.isnan(mosaic[:, 5]).all()
    global_scale = filter_mosaic(w, per_tile=False)
    assert np.nanmax(np.abs(global_scale)) == 1.0
    np.testing.assert_allclose(global_scale[:4, :5], w[0, 0, 0] / np.abs(w).max())
    assert filter_mosaic(np.ones((3, 1, 7))).shape == (3 * 2 - 1, 7)      # 1-D kernels
    assert filter_mosaic(np.ones((40, 1, 3, 3)), max_filters=9).shape == (3 * 4 - 1, 3 * 5 - 2)
    square = filter_mosaic(np.ones((16, 1, 5, 5)))              # single tiles fill a 4 x 4 grid
    assert square.shape == (4 * 6 - 1, 4 * 7 - 2) and np.sum(~np.isnan(square)) == 16 * 25
    with pytest.raises(ShapeError, match='not convolution filters'):
        filter_mosaic(np.ones((4, 4)))


def test_plot_filters_of_a_conv_node(small_model, tmp_path):
    path = plot_filters(small_model['conv2'], tmp_path / 'filters' / 'conv2.png')
    width, height = png_size(path)
    assert width > 200 and height > 150
    with pytest.raises(GraphError, match="Node 'pool' has no filter weights"):
        plot_filters(small_model['pool'], tmp_path / 'x.png')


def test_feature_maps_pick_example_channels_and_middle_slices():
    x = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)
    maps = feature_maps(x, ('b', 'f', 'z', 'x', 'y'), example=1)
    np.testing.assert_array_equal(maps, x[1, :, 2])
    assert feature_maps(x[:, :, 0, 0], ('b', 'f', 'y')).shape == (3, 1, 6)
    assert feature_maps(x[:, :, 0, 0, 0], ('b', 'f')).shape == (3, 1, 1)
    np.testing.assert_array_equal(feature_maps(x[0, 0], ('z', 'x', 'y'))[0], x[0, 0, 2])


def test_activations_accept_lists_and_name_mappings(small_model, small_batch):
    x, y = small_batch
    by_list = activations(small_model, ['conv', 'softmax'], [x])
    by_name = activations(small_model, ['conv', 'softmax'], {'raw': x, 'target': y})
    assert by_list['conv'].shape == (3, 4, 14, 14)
    np.testing.assert_allclose(by_list['softmax'], by_name['softmax'])
    np.testing.assert_allclose(by_list['softmax'], small_model.predict(x))
    with pytest.raises(GraphError, match=r"needs inputs \['raw'\]"):
        activations(small_model, ['conv'], {'target': y})


def test_plot_activations_writes_one_png_per_spatial_node(small_model, small_batch, tmp_path):
    x, y = small_batch
    paths = plot_activations(small_model, {'raw': x, 'target': y}, tmp_path, example=2)
    assert [p.name for p in paths] == [f"activations_{n}.png"
                                       for n in ('conv', 'conv1', 'concat', 'pool', 'conv2')]
    assert all(png_size(p)[0] > 200 for p in paths)
    [dense] = plot_activations(small_model, [x], tmp_path, nodes=['dot'])
    assert dense.exists()


def test_histograms_of_parameters_activations_and_gradients(small_model, small_batch, tmp_path):
    x, y = small_batch
    params = plot_param_histograms(small_model, tmp_path / 'params.png')
    acts = plot_activation_histograms(small_model, [x], tmp_path / 'acts.png',
                                      nodes=['conv', 'conv2', 'softmax'])
    grads = plot_gradient_histograms(small_model, [x, y], tmp_path / 'grads.png')
    for path in (params, acts, grads):
        width, height = png_size(path)
        assert width > 300 and height > 150


def test_gradients_match_autograd_and_leave_the_model_untouched(small_model, small_batch):
    x, y = small_batch
    before = {k: p.detach().clone() for k, p in small_model.all_params().items()}
    grads = gradients(small_model, {'raw': x, 'target': y})
    assert set(grads) == set(small_model.loss_node.all_trainable_params)
    assert all(np.abs(g).sum() > 0 for k, g in grads.items() if k.endswith('.w'))
    loss = small_model.function([small_model.loss_node], training=True)(
        torch.as_tensor(x), torch.as_tensor(y))[0]
    loss.backward()
    for key, p in small_model.loss_node.all_trainable_params.items():
        np.testing.assert_allclose(grads[key], p.grad.numpy(), rtol=1e-5, atol=1e-7)
    for key, p in small_model.all_params().items():
        assert torch.equal(p.detach(), before[key]), f"{key} changed"


def test_gradients_need_a_loss_node(fresh_model, tmp_path):
    import elektronn2.neuromancer as nm
    nm.Conv(nm.Input((None, 1, 5, 5), 'b,f,x,y'), 2, (3, 3))
    with pytest.raises(GraphError, match='designate_nodes'):
        plot_gradient_histograms(fresh_model, [np.zeros((1, 1, 5, 5), np.float32)],
                                 tmp_path / 'g.png')
