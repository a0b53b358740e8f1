"""Max-fragment pooling and predict_dense against brute-force evaluation, in 2-D and 3-D."""
import itertools

import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.errors import ShapeError


def strided_net(patch, mfp=False, dims=2):
    """Two conv+pool(2) layers (k + p odd) and a 1x1 classifier: stride 4, odd fov."""
    nm.model_manager.newmodel('strided')
    tags = 'b,f,x,y' if dims == 2 else 'b,f,z,x,y'
    inp = nm.Input((None, 1) + tuple(patch), tags, name='raw')
    c1 = nm.Conv(inp, 3, 4 if dims == 2 else (3, 4, 4), 2 if dims == 2 else (1, 2, 2), mfp=mfp)
    c2 = nm.Conv(c1, 4, 4 if dims == 2 else (1, 4, 4), 2 if dims == 2 else (1, 2, 2), mfp=mfp)
    out = nm.Conv(c2, 2, 1, activation_func='lin')
    if mfp:
        out = nm.FragmentsToDense(out)
    return nm.Softmax(out)


def copy_params(src_model, dst_model):
    for name, values in src_model.get_param_values().items():
        dst_model[name].set_param_values(values)


def brute_force(node, raw):
    """Evaluate the strided net at every patch position; dense index d is centred at
    input offset + d, and a patch starting at q yields d = q + j * stride."""
    patch = np.array(node.input_nodes[0].shape.spatial_shape)
    out = np.array(node.shape.spatial_shape)
    stride = np.array(node.shape.strides)
    dense = np.array(raw.shape[1:]) - (patch - (out - 1) * stride - 1)
    result = np.full((node.shape['f'],) + tuple(dense), np.nan, np.float32)
    last_start = np.array(raw.shape[1:]) - patch
    for start in itertools.product(*(range(q + 1) for q in last_start)):
        window = raw[(slice(None),) + tuple(slice(q, q + p) for q, p in zip(start, patch))]
        region = tuple(slice(q, q + o * s, s) for q, o, s in zip(start, out, stride))
        result[(slice(None),) + region] = node(window[None])[0]
    return result


@pytest.mark.parametrize('dims, patch, mfp_patch, raw_shape', [
    (2, (21, 25), (28, 32), (1, 45, 52)),
    (3, (4, 21, 25), (4, 28, 32), (1, 6, 38, 41)),
])
def test_predict_dense_equals_mfp_and_brute_force(dims, patch, mfp_patch, raw_shape):
    probs = strided_net(patch, dims=dims)
    raw = np.random.rand(*raw_shape).astype(np.float32)
    dense = probs.predict_dense(raw)
    expected = brute_force(probs, raw)
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(dense, expected, rtol=1e-5, atol=1e-6)
    # the same weights with max-fragment pooling give the dense output in one pass
    strided_model = probs.model
    mfp_probs = strided_net(mfp_patch, mfp=True, dims=dims)
    copy_params(strided_model, mfp_probs.model)
    assert mfp_probs.shape.strides == (1,) * dims
    np.testing.assert_allclose(mfp_probs.predict_dense(raw), dense, rtol=1e-5, atol=1e-6)


def test_mfp_fragments_on_batch_axis():
    probs = strided_net((28, 32), mfp=True)
    frag = probs.model['conv2']
    assert frag.shape.mfp_pools == ((2, 2), (2, 2)) and frag.shape.n_fragments == 16
    out = probs(np.random.rand(3, 1, 28, 32).astype(np.float32))
    assert out.shape == (3, 2, 16, 20) == tuple(s or 3 for s in probs.shape.shape)
    with pytest.raises(ShapeError, match='size\\+1 divisible'):
        strided_net((26, 31), mfp=True)


def test_pad_raw_uint8_and_slices():
    probs = strided_net((21, 25))
    raw = (np.random.rand(1, 40, 44) * 255).astype(np.uint8)
    valid = probs.predict_dense(raw)
    full = probs.predict_dense(raw, pad_raw=True)
    assert full.shape == (2, 40, 44)
    off = [int(o) for o in probs.shape.offsets]
    np.testing.assert_allclose(full[:, off[0]:off[0] + valid.shape[1], off[1]:off[1] + valid.shape[2]],
                               valid, rtol=1e-5, atol=1e-6)
    as_int = probs.predict_dense(raw, as_uint8=True)
    assert as_int.dtype == np.uint8 and np.abs(as_int / 255.0 - valid).max() <= 0.5 / 255 + 1e-6
    # a 2-D net on a volume predicts slice by slice
    volume = np.random.rand(1, 3, 30, 33).astype(np.float32)
    stack = probs.predict_dense(volume)
    np.testing.assert_allclose(stack[:, 1], probs.predict_dense(volume[:, 1]), rtol=1e-6)


def test_predict_dense_errors():
    probs = strided_net((21, 25))
    fov = probs.shape.fov
    with pytest.raises(ShapeError, match='smaller than the field of view'):
        probs.predict_dense(np.zeros((1, fov[0] - 1, 40), np.float32))
    with pytest.raises(ShapeError, match='channel'):
        probs.predict_dense(np.zeros((2, 40, 40), np.float32))
    nm.model_manager.newmodel()


def test_even_field_of_view_outputs_sit_at_fov_half():
    """ELEKTRONN2's rule: a net with an even field of view (4) gives dense output d for the
    window starting at d, placed at input d + fov // 2; pad_raw covers the whole image."""
    nm.model_manager.newmodel()
    inp = nm.Input((None, 1, 20), 'b,f,x')
    even = nm.Conv(inp, 2, 4, activation_func='lin')
    raw = np.random.default_rng(0).random((1, 40)).astype(np.float32)
    dense = even.predict_dense(raw)
    windows = np.stack([raw[:, d:d + 4] for d in range(37)])
    manual = np.einsum('fck,dck->fd', even.params['w'].detach().numpy(), windows) \
        + even.params['b'].detach().numpy()[:, None]
    np.testing.assert_allclose(dense, manual, rtol=1e-5, atol=1e-5)
    full = even.predict_dense(raw, pad_raw=True)
    assert full.shape == (2, 40)
    np.testing.assert_allclose(full[:, 2:39], dense, rtol=1e-6)


def test_predict_dense_on_images_smaller_than_a_patch():
    """An image smaller than patch + stride - 1 (even than the patch) is predicted on its
    valid region, equal to the same region of a larger image: the last patches overhang a
    mirrored end that feeds only outputs outside the image."""
    probs = strided_net((21, 25))
    fov = probs.shape.fov
    raw = np.random.rand(1, 45, 52).astype(np.float32)
    large = probs.predict_dense(raw)
    for shape in [(22, 26), (fov[0] + 2, fov[1]), (fov[0], fov[1] + 5)]:
        small = probs.predict_dense(raw[:, :shape[0], :shape[1]])
        assert small.shape == (2, shape[0] - fov[0] + 1, shape[1] - fov[1] + 1)
        np.testing.assert_allclose(small, large[:, :small.shape[1], :small.shape[2]], rtol=1e-5,
                                   atol=1e-6)
    expected = brute_force(probs, raw[:, :22, :26])  # only two patch positions fit
    known = ~np.isnan(expected)
    assert known.mean() > 0.2
    np.testing.assert_allclose(probs.predict_dense(raw[:, :22, :26])[known], expected[known],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('image', [50, 53])
def test_unet_predict_dense_equals_one_large_patch(image):
    """A stride-1 U-Net tiled by predict_dense equals the same net on the whole image: patches
    start on its pooling grid, also when the image is not a whole number of tiles."""
    def unet(size):
        nm.model_manager.newmodel('unet')
        inp = nm.Input((None, 1, size, size), 'b,f,x,y', name='raw')
        c0 = nm.Conv(inp, 4, 3)
        c1 = nm.Conv(nm.Pool(c0, 2), 4, 3)
        return nm.Softmax(nm.Conv(nm.UpConvMerge(c0, c1, 4), 2, 1, activation_func='lin'))
    small = unet(26)
    raw = np.random.rand(1, image, image).astype(np.float32)
    dense = small.predict_dense(raw)
    big = unet(50)
    copy_params(small.model, big.model)
    whole = big(raw[None, :, :50, :50])[0]
    border = 50 - whole.shape[1]
    assert dense.shape == (2, image - border, image - border)
    np.testing.assert_allclose(dense[:, :whole.shape[1], :whole.shape[2]], whole, rtol=1e-5, atol=1e-6)
