"""The remaining nodes: up-convolution and merges, shape operations, sources, losses, inits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import elektronn2.neuromancer as nm
from elektronn2.errors import ConfigError, ShapeError
from elektronn2.neuromancer.init import gabor, init_weights


def pv(node):
    return {k: torch.from_numpy(v) for k, v in node.get_param_values().items()}


def test_upconv_identity_init_is_nearest_upsampling():
    inp = nm.Input((None, 3, 8, 15), 'b,f,x,y')
    pooled = nm.Pool(inp, (2, 3), mode='average')
    up = nm.UpConv(pooled, 3, (2, 3), activation_func='lin')
    assert up.shape.shape == (None, 3, 8, 15) and up.shape.strides == (1, 1)
    assert up.shape.offsets == (0, 0)
    x = np.random.rand(2, 3, 8, 15).astype(np.float32)
    p = pooled(x)
    np.testing.assert_allclose(up(x), p.repeat(2, axis=2).repeat(3, axis=3), rtol=1e-6)


def test_upconv_matches_conv_transpose_and_divides_strides():
    inp = nm.Input((None, 2, 8, 8), 'b,f,x,y')
    pooled = nm.Conv(inp, 4, 3, 2)  # stride 2, size 3
    up = nm.UpConv(pooled, 5, 2, filter_shape=3, activation_func='tanh', identity_init=False)
    assert up.shape.strides == (1, 1) and up.shape.spatial_shape == (7, 7)
    x = np.random.rand(1, 2, 8, 8).astype(np.float32)
    p = pv(up)
    expected = torch.tanh(F.conv_transpose2d(torch.from_numpy(pooled(x)), p['w'], p['b'], stride=2))
    np.testing.assert_allclose(up(x), expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match='stride'):
        nm.UpConv(inp, 2, 2)  # stride 1 cannot be divided by 2


def unet3d(depth_features=((32, 64), (64, 128), (128, 256), (256, 512))):
    inp = nm.Input((None, 1, 116, 132, 132), 'b,f,z,x,y', name='raw')
    skips, out = [], inp
    for i, (a, b) in enumerate(depth_features):
        out = nm.Conv(nm.Conv(out, a, 3), b, 3)
        if i < len(depth_features) - 1:
            skips.append(out)
            out = nm.Pool(out, 2)
    for skip, (n_up, a, b) in zip(reversed(skips), [(512, 256, 256), (256, 128, 128), (128, 64, 64)]):
        out = nm.UpConvMerge(skip, out, n_up)
        out = nm.Conv(nm.Conv(out, a, 3), b, 3)
    barr = nm.Conv(out, 2, 1, activation_func='lin', name='barr')
    return nm.Softmax(barr)


def test_unet3d_example_shape():
    probs = unet3d()
    assert probs.shape.spatial_shape == (28, 44, 44)
    assert probs.shape.strides == (1, 1, 1)
    assert probs.shape.offsets == (44, 44, 44)  # centred: (116 - 28) / 2
    assert probs.model['barr'].shape['f'] == 2


def test_unet3d_lite_anisotropic_trains_a_step():
    inp = nm.Input((None, 1, 22, 140, 140), 'b,f,z,x,y', name='raw')
    conv1 = nm.Conv(nm.Conv(inp, 8, (1, 3, 3)), 8, (1, 3, 3))
    conv3 = nm.Conv(nm.Conv(nm.Pool(conv1, (1, 2, 2)), 16, (1, 3, 3)), 16, (1, 3, 3))
    conv5 = nm.Conv(nm.Conv(nm.Pool(conv3, (1, 2, 2)), 16, (1, 3, 3)), 16, (1, 3, 3))
    conv7 = nm.Conv(nm.Conv(nm.Pool(conv5, (1, 2, 2)), 32, (3, 3, 3)), 32, (3, 3, 3))
    up5 = nm.Conv(nm.Conv(nm.UpConvMerge(conv5, conv7, 32), 16, (1, 3, 3)), 16, (1, 3, 3))
    up8 = nm.Conv(nm.Conv(nm.UpConvMerge(conv3, up5, 16), 16, (3, 3, 3)), 16, (3, 3, 3))
    up11 = nm.Conv(nm.Conv(nm.UpConvMerge(conv1, up8, 16), 8, (3, 3, 3)), 8, (3, 3, 3))
    probs = nm.Softmax(nm.Conv(up11, 2, 1, activation_func='lin', name='barr'))
    target = nm.Input_like(up11, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss, prediction_node=probs)
    assert probs.shape.spatial_shape == (10, 52, 52) and probs.shape.offsets == (6, 44, 44)
    loss_value, _, _ = model.trainingstep(np.random.rand(1, 1, 22, 140, 140).astype(np.float32),
                                          np.random.randint(0, 2, (1, 1, 10, 52, 52)))
    assert np.isfinite(loss_value)


def test_automerge_crops_and_refuses_odd_differences():
    inp = nm.Input((None, 2, 20), 'b,f,x', name='raw')
    small = nm.Conv(inp, 3, 5)  # size 16, offset 2
    merged = nm.AutoMerge(inp, small)
    assert merged.shape.shape == (None, 5, 16) and merged.shape.offsets == (2,)
    x = np.random.rand(1, 2, 20).astype(np.float32)
    np.testing.assert_allclose(merged(x)[:, :2], x[:, :, 2:18])
    added = nm.AutoMerge(nm.Conv(inp, 3, 3), small, merge_mode='add')
    assert added.shape.shape == (None, 3, 16)
    odd = nm.Conv(inp, 3, 4)  # size 17, offset 1.5: difference to 20 is odd
    with pytest.raises(ShapeError, match='odd size difference'):
        nm.AutoMerge(inp, odd)
    with pytest.raises(ShapeError, match='not aligned'):
        nm.Concat([nm.Crop(inp, [(0, 4)]), small])


def test_crop_pad_keep_alignment():
    inp = nm.Input((None, 1, 10, 12), 'b,f,x,y')
    crop = nm.Crop(inp, [(1, 2), 3])
    assert crop.shape.spatial_shape == (7, 6) and crop.shape.offsets == (1, 3)
    x = np.arange(120, dtype=np.float32).reshape(1, 1, 10, 12)
    np.testing.assert_array_equal(crop(x), x[:, :, 1:8, 3:9])
    pad = nm.Pad(crop, 1, mode='reflect')
    assert pad.shape.spatial_shape == (9, 8) and pad.shape.offsets == (0, 2)
    np.testing.assert_array_equal(pad(x), np.pad(x[:, :, 1:8, 3:9], [(0, 0)] * 2 + [(1, 1)] * 2, 'reflect'))
    with pytest.raises(ShapeError, match='leaves nothing'):
        nm.Crop(inp, 6)


def test_split_reshape_multmerge():
    inp = nm.Input((None, 6, 5), 'b,f,x')
    a, b, c = nm.split(inp, 'f', n_out=3)
    x = np.random.rand(2, 6, 5).astype(np.float32)
    np.testing.assert_array_equal(b(x), x[:, 2:4])
    first, rest = nm.split(inp, 'x', index=1, strip_singleton_dims=True)
    assert first.shape.tags == ('b', 'f') and rest.shape.offsets == (1,)
    np.testing.assert_array_equal(first(x), x[:, :, 0])
    np.testing.assert_allclose(nm.MultMerge(a, c)(x), x[:, :2] * x[:, 4:], rtol=1e-6)
    flat = nm.Reshape(inp, (None, -1), 'b,f')
    assert flat.shape.shape == (None, 30)
    np.testing.assert_array_equal(flat(x), x.reshape(2, 30))
    with pytest.raises(ShapeError, match='cannot reshape'):
        nm.Reshape(inp, (None, 7), 'b,f')
    with pytest.raises(ShapeError, match='equal parts'):
        nm.split(inp, 'f', n_out=4)


def test_apply_func_only_torch_functions(tmp_path):
    inp = nm.Input((None, 2, 5), 'b,f,x', name='raw')
    node = nm.ApplyFunc(inp, torch.sigmoid)
    by_name = nm.ApplyFunc(inp, 'torch.nn.functional.softsign')
    x = np.random.randn(2, 2, 5).astype(np.float32)
    np.testing.assert_allclose(node(x), 1 / (1 + np.exp(-x)), rtol=1e-5)
    np.testing.assert_allclose(by_name(x), x / (1 + np.abs(x)), rtol=1e-5)
    assert node.descriptor['args']['functor'] == 'torch.sigmoid'
    with pytest.raises(ShapeError, match='restored without running code'):
        nm.ApplyFunc(inp, lambda t: t * 2)
    with pytest.raises(ShapeError, match='not a function'):
        nm.ApplyFunc(inp, 'os.system')
    model = node.model
    model.designate_nodes(input_node=inp, prediction_node=node)
    model.save(tmp_path / 'm.mdl')
    np.testing.assert_allclose(nm.modelload(tmp_path / 'm.mdl').predict(x), node(x))


def test_value_node_and_initial_state():
    v = nm.ValueNode((2, 3), 'b,f', value=1.5, apply_train=True)
    assert v.params['value'].requires_grad
    np.testing.assert_array_equal(v(), np.full((2, 3), 1.5, np.float32))
    inp = nm.Input((None, 4), 'b,f')
    state = nm.InitialState_like(inp, 7)
    assert state.shape.shape == (None, 7)
    assert state(np.zeros((5, 4))).shape == (5, 7)


def test_onehot_gaussian_nll_and_rv():
    t = nm.Input((None, 1, 3), 'b,f,x', name='t')
    hot = nm.OneHot(t, 4)
    y = np.array([[[0, 3, -1]]])
    np.testing.assert_array_equal(hot(y)[0].T, [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    mu = nm.Input((None, 2), 'b,f', name='mu')
    log_sig = nm.Input((None, 2), 'b,f', name='log_sig')
    target = nm.Input((None, 2), 'b,f', name='target')
    nll = nm.GaussianNLL(mu, log_sig, target, sig_is_log=True)
    m, ls, tv = np.random.randn(3, 2), np.random.randn(3, 2) * 0.3, np.random.randn(3, 2)
    expected = 0.5 * np.log(2 * np.pi) + ls + 0.5 * ((tv - m) / np.exp(ls)) ** 2
    np.testing.assert_allclose(nll(m, ls, tv), expected, rtol=1e-5)
    rv = nm.GaussianRV(mu, log_sig, n_samples=2000)
    assert rv.shape.shape == (None, 2000, 2) and rv.shape.tags == ('b', 's', 'f')
    fn = rv.model.function([rv], training=True)
    samples = fn(*fn.to_tensors(m, ls))[0].numpy()
    np.testing.assert_allclose(samples.mean(1), m, atol=0.1)
    np.testing.assert_allclose(samples.std(1), np.exp(ls), rtol=0.1)
    np.testing.assert_allclose(rv(m, ls), np.broadcast_to(m[:, None], (3, 2000, 2)), rtol=1e-6)
    sample_nll = nm.GaussianNLL(rv, nm.GaussianRV(mu, log_sig, n_samples=2000, name='rv2'), target)
    assert sample_nll.shape.shape == (None, 2000, 2)


def test_lrn_channel_and_spatial():
    inp = nm.Input((None, 6, 7, 7), 'b,f,x,y')
    x = np.random.rand(2, 6, 7, 7).astype(np.float32)
    ch = nm.LRN(inp, 3, mode='channel', alpha=0.1)
    np.testing.assert_allclose(ch(x), F.local_response_norm(torch.from_numpy(x), 3, 0.1).numpy(), rtol=1e-5)
    sp = nm.LRN(inp, 3, mode='spatial', alpha=0.5, k=2.0, beta=0.75)
    energy = F.avg_pool2d(torch.from_numpy(x) ** 2, 3, 1, 1, count_include_pad=False).numpy()
    np.testing.assert_allclose(sp(x), x / (2 + 0.5 * energy) ** 0.75, rtol=1e-5)
    with pytest.raises(ConfigError, match='odd filter'):
        nm.LRN(inp, 4)


def test_label_propagation():
    inp = nm.Input((None, 2, 4), 'b,f,x', name='raw')
    probs = nm.Softmax(nm.Conv(inp, 2, 1, activation_func='lin',
                               w=np.eye(2, dtype=np.float32)[:, :, None] * 10,
                               b=np.zeros(2, np.float32)))
    target = nm.Input_like(probs, override_f=1, name='target')
    prop = nm.MultinoulliNLL(probs, target, target_is_sparse=True, label_prop_thresh=0.9)
    plain = nm.MultinoulliNLL(probs, target, target_is_sparse=True)
    x = np.zeros((1, 2, 4), np.float32)
    x[0, 0] = [1, 1, 0, 0.05]  # confident class 0 at the first positions
    x[0, 1] = [0, 0, 1, 0]
    y = np.array([[[0, -1, -1, -1]]])
    # positions 1 and 2 are confidently predicted and join the loss; position 3 is not
    full = np.array([[[0, 0, 1, -1]]])
    assert prop(x, y).mean() == pytest.approx(plain(x, full).mean(), rel=1e-5)
    with pytest.raises(ConfigError, match='sparse'):
        nm.MultinoulliNLL(probs, nm.Input_like(probs, name='dense'), label_prop_thresh=0.5)


def test_initialisations():
    w = gabor((8, 2, 7, 7), 2 * 49, 8 * 49)
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-5)
    assert w.std() == pytest.approx(np.sqrt(2 / 98), rel=0.1)
    assert torch.equal(init_weights((3, 4), 3, 4, 'relu', 0.5), torch.full((3, 4), 0.5))
    q = init_weights((4, 6), 6, 4, 'tanh', 'orthogonal')
    assert torch.allclose(q @ q.T, torch.eye(4), atol=1e-5)
    inp = nm.Input((None, 1, 9, 9), 'b,f,x,y')
    first = nm.Conv(inp, 4, 5, w_init='gabor')
    assert first.params['w'].shape == (4, 1, 5, 5)
    with pytest.raises(ConfigError, match="unknown weight initialisation 'xavier'"):
        nm.Conv(inp, 4, 5, w_init='xavier')


def test_tied_autoencoder_learns():
    inp = nm.Input((None, 16), 'b,f', name='raw')
    enc = nm.Perceptron(inp, 4, activation_func='tanh')
    dec = enc.make_dual(enc, activation_func='lin')
    assert dec.params['w'] is enc.params['w'] and dec.shape.shape == (None, 16)
    loss = nm.AggregateLoss(nm.SquaredLoss(dec, inp))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, loss_node=loss, prediction_node=dec)
    assert len(loss.all_trainable_params) == 3  # w shared, two biases
    basis = np.random.randn(4, 16)
    x = (np.random.randn(64, 4) @ basis).astype(np.float32) * 0.3
    model.lr = 0.01
    before = model.loss(x)
    for _ in range(300):
        model.trainingstep(x)
    assert model.loss(x) < 0.2 * before


def test_conv_make_dual_shares_filters(tmp_path):
    inp = nm.Input((None, 2, 12, 12), 'b,f,x,y', name='raw')
    enc = nm.Conv(inp, 5, 3, 2)  # (b, 5, 5, 5)
    dec = enc.make_dual(enc)
    assert dec.params['w'] is enc.params['w']
    assert dec.shape.shape == (None, 2, 11, 11) and dec.shape.strides == (1, 1)
    model = enc.model
    model.designate_nodes(input_node=inp, prediction_node=dec)
    model.save(tmp_path / 'dual.mdl')
    loaded = nm.modelload(tmp_path / 'dual.mdl')
    assert loaded['dual'].params['w'] is loaded['conv'].params['w']
    x = np.random.rand(1, 2, 12, 12).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), dec(x), rtol=1e-6)
