"""Every node of the CNN path against a direct torch computation."""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import elektronn2.neuromancer as nm
from elektronn2.errors import ConfigError, DataError, GraphError, ShapeError


def params(node):
    return {k: torch.from_numpy(v) for k, v in node.get_param_values().items()}


@pytest.mark.parametrize('tags, shape, conv, pool', [
    ('b,f,x', (2, 3, 17), F.conv1d, F.max_pool1d),
    ('b,f,x,y', (2, 3, 17, 13), F.conv2d, F.max_pool2d),
    ('b,f,z,x,y', (2, 3, 9, 11, 13), F.conv3d, F.max_pool3d),
])
def test_conv_1d_2d_3d_matches_torch(tags, shape, conv, pool):
    n_sp = len(shape) - 2
    inp = nm.Input((None,) + shape[1:], tags)
    node = nm.Conv(inp, 4, (2,) * n_sp, (2,) * n_sp, activation_func='tanh')
    x = np.random.randn(*shape).astype(np.float32)
    p = params(node)
    expected = torch.tanh(pool(conv(torch.from_numpy(x), p['w'], p['b']), 2)).numpy()
    out = node(x)
    assert out.shape == expected.shape
    assert tuple(s for s in node.shape.shape[1:]) == out.shape[1:]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('mode, out_size', [('valid', 8), ('same', 10), ('full', 12)])
def test_conv_modes(mode, out_size):
    inp = nm.Input((1, 2, 10, 10), 'b,f,x,y')
    node = nm.Conv(inp, 3, (3, 3), conv_mode=mode, activation_func='lin')
    assert node.shape.spatial_shape == (out_size, out_size)
    assert node.shape.fov == (3, 3)
    out = node(np.random.rand(1, 2, 10, 10).astype(np.float32))
    assert out.shape == (1, 3, out_size, out_size)


@pytest.mark.parametrize('act, fn', [
    ('tanh', torch.tanh), ('relu', F.relu), ('elu', F.elu), ('selu', F.selu), ('abs', torch.abs),
    ('sigmoid', torch.sigmoid), ('sig', torch.sigmoid), ('logistic', torch.sigmoid),
    ('softplus', F.softplus), ('lin', lambda x: x), ('linear', lambda x: x),
])
def test_activations(act, fn):
    inp = nm.Input((2, 3, 8), 'b,f,x')
    node = nm.Conv(inp, 4, 3, activation_func=act)
    x = np.random.randn(2, 3, 8).astype(np.float32)
    p = params(node)
    np.testing.assert_allclose(node(x), fn(F.conv1d(torch.from_numpy(x), p['w'], p['b'])).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_prelu_and_maxout():
    inp = nm.Input((2, 3, 8), 'b,f,x')
    pre = nm.Conv(inp, 4, 3, activation_func='prelu')
    assert pre.params['prelu_slope'].shape == (4,)
    x = np.random.randn(2, 3, 8).astype(np.float32)
    lin = F.conv1d(torch.from_numpy(x), params(pre)['w'], params(pre)['b'])
    np.testing.assert_allclose(pre(x), torch.where(lin >= 0, lin, 0.25 * lin).numpy(), rtol=1e-5, atol=1e-6)
    mo = nm.Conv(inp, 6, 3, activation_func='maxout 2')
    assert mo.shape['f'] == 3
    lin = F.conv1d(torch.from_numpy(x), params(mo)['w'], params(mo)['b'])
    np.testing.assert_allclose(mo(x), lin.reshape(2, 3, 2, 6).amax(2).numpy(), rtol=1e-5)


def test_unknown_activation_is_named():
    inp = nm.Input((2, 3, 8), 'b,f,x')
    with pytest.raises(ConfigError, match="unknown activation_func 'relux'.*tanh"):
        nm.Conv(inp, 4, 3, activation_func='relux')


def test_pool_max_average_and_stride():
    inp = nm.Input((1, 2, 9, 9), 'b,f,x,y')
    x = np.random.randn(1, 2, 9, 9).astype(np.float32)
    mx = nm.Pool(inp, (3, 3), stride=(2, 2))
    av = nm.Pool(inp, 3, mode='average')
    np.testing.assert_allclose(mx(x), F.max_pool2d(torch.from_numpy(x), 3, 2).numpy())
    np.testing.assert_allclose(av(x), F.avg_pool2d(torch.from_numpy(x), 3).numpy(), rtol=1e-6)
    assert mx.shape.spatial_shape == (4, 4) and mx.shape.strides == (2, 2) and mx.shape.fov == (3, 3)
    with pytest.raises(ConfigError, match="mode='sum'"):
        nm.Pool(inp, 3, mode='sum')


def test_non_dividing_pool_names_node_axis_and_valid_sizes():
    inp = nm.Input((None, 1, 23, 185, 185), 'b,f,z,x,y', name='raw')
    c = nm.Conv(inp, 4, (1, 6, 6), (1, 2, 2))
    with pytest.raises(ShapeError) as info:
        nm.Conv(c, 4, (1, 4, 4), (1, 2, 2), name='bad')  # 90 - 4 + 1 = 87, odd
    msg = str(info.value)
    assert "'bad'" in msg and "Axis 'x'" in msg and "'raw'" in msg
    suggested = [int(v) for v in re.search(r"\(now 185\): \[([\d, ]+)\]", msg).group(1).split(',')]
    assert suggested == [179, 183, 187, 191]
    assert "other axes need: {'y': 183}" in msg
    for s in suggested:  # every suggestion really builds (with y repaired)
        nm.model_manager.newmodel()
        i = nm.Input((None, 1, 23, s, 183), 'b,f,z,x,y', name='raw')
        nm.Conv(nm.Conv(i, 4, (1, 6, 6), (1, 2, 2)), 4, (1, 4, 4), (1, 2, 2))


def test_perceptron_any_rank_and_flatten():
    inp = nm.Input((2, 5, 4, 3), 'b,x,f,y')  # 'f' in the middle
    dot = nm.Perceptron(inp, 6, activation_func='lin')
    assert dot.shape.shape == (2, 5, 6, 3)
    x = np.random.randn(2, 5, 4, 3).astype(np.float32)
    p = params(dot)
    expected = (torch.from_numpy(x).movedim(2, -1) @ p['w'] + p['b']).movedim(-1, 2)
    np.testing.assert_allclose(dot(x), expected.numpy(), rtol=1e-5, atol=1e-6)
    flat = nm.Perceptron(inp, 7, flatten=True, activation_func='tanh')
    assert flat.shape.shape == (2, 7) and flat.shape.tags == ('b', 'f')
    p = params(flat)
    expected = torch.tanh(torch.from_numpy(x).reshape(2, -1) @ p['w'] + p['b']).numpy()
    np.testing.assert_allclose(flat(x), expected, rtol=1e-5, atol=1e-6)
    assert nm.Dot is nm.Perceptron


def test_perceptron_without_f_axis():
    inp = nm.Input((2, 5), 'b,x')
    with pytest.raises(ShapeError, match="no 'f' axis; use flatten=True"):
        nm.Perceptron(inp, 3)


def test_given_and_constant_weights():
    inp = nm.Input((1, 2, 5), 'b,f,x')
    w = np.ones((3, 2, 2), np.float32)
    node = nm.Conv(inp, 3, 2, w=[w, 'const'], b=np.full(3, 0.5, np.float32), activation_func='lin')
    assert not node.params['w'].requires_grad and node.params['b'].requires_grad
    out = node(np.ones((1, 2, 5), np.float32))
    np.testing.assert_allclose(out, np.full((1, 3, 4), 4.5))
    with pytest.raises(ShapeError, match='initial w has shape'):
        nm.Conv(inp, 3, 3, w=w)


def test_batch_normalisation_train_and_predict():
    inp = nm.Input((None, 2, 6, 6), 'b,f,x,y')
    bn = nm.Conv(inp, 3, 3, activation_func='lin', batch_normalisation='train')
    assert 'b' not in bn.params and {'gamma', 'beta', 'mean', 'var'} <= set(bn.params)
    x = (np.random.randn(8, 2, 6, 6) * 3 + 2).astype(np.float32)
    fn = bn.model.function([bn], training=True)
    out = fn(*fn.to_tensors(x))[0].detach().numpy()
    # training mode: normalised with batch statistics
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-3)
    # the first batch sets the accumulated statistics; inference uses them
    p = params(bn)
    lin = F.conv2d(torch.from_numpy(x), p['w'])
    np.testing.assert_allclose(p['mean'].numpy(), lin.mean((0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p['var'].numpy(), lin.var((0, 2, 3)).numpy(), rtol=1e-4)
    pred = bn(x)
    np.testing.assert_allclose(pred, out * np.sqrt(lin.var((0, 2, 3), unbiased=False).numpy()
                                                   / lin.var((0, 2, 3)).numpy())[None, :, None, None]
                               , rtol=1e-3, atol=1e-3)
    fixed = nm.Conv(inp, 3, 3, activation_func='lin', batch_normalisation='predict')
    before = params(fixed)['mean'].clone()
    fn = fixed.model.function([fixed], training=True)
    fn(*fn.to_tensors(x))
    assert torch.equal(params(fixed)['mean'], before)


def test_dropout_only_in_training():
    inp = nm.Input((None, 50), 'b,f')
    node = nm.Perceptron(inp, 50, activation_func='lin', dropout_rate=0.5)
    x = np.random.rand(4, 50).astype(np.float32)
    a, b = node(x), node(x)
    np.testing.assert_array_equal(a, b)
    fn = node.model.function([node], training=True)
    out = fn(*fn.to_tensors(x))[0].detach().numpy()
    assert 0.3 < (out == 0).mean() < 0.7
    node.model.dropout_rates = 0.0
    out = fn(*fn.to_tensors(x))[0].detach().numpy()
    np.testing.assert_allclose(out, a, rtol=1e-5)


def test_concat_and_add():
    a = nm.Input((None, 2, 5), 'b,f,x', name='a')
    b = nm.Input((None, 3, 5), 'b,f,x', name='b')
    cat = nm.Concat([a, b])
    assert cat.shape['f'] == 5
    xa, xb = np.random.rand(2, 2, 5), np.random.rand(2, 3, 5)
    np.testing.assert_allclose(cat(xa, xb), np.concatenate([xa, xb], 1), rtol=1e-6)
    c = nm.Input((None, 2, 5), 'b,f,x', name='c')
    np.testing.assert_allclose(nm.Add(a, c)(xa, xa), 2 * xa, rtol=1e-6)
    with pytest.raises(ShapeError, match="axis 'f' of parent 'b' has size 3"):
        nm.Add(a, b)
    d = nm.Input((None, 2, 6), 'b,f,x', name='d')
    with pytest.raises(ShapeError, match="axis 'x'"):
        nm.Concat([a, d])


def test_softmax_groups():
    inp = nm.Input((2, 6, 3), 'b,f,x')
    lin = nm.Conv(inp, 6, 1, activation_func='lin')
    sm = nm.Softmax(lin, n_indep=2)
    assert sm.n_class == 3
    out = sm(np.random.randn(2, 6, 3).astype(np.float32))
    np.testing.assert_allclose(out.reshape(2, 2, 3, 3).sum(2), 1, rtol=1e-5)
    with pytest.raises(ConfigError, match="activation_func='lin'"):
        nm.Softmax(nm.Conv(inp, 2, 1, activation_func='relu'))
    with pytest.raises(ShapeError, match='softmax group'):
        nm.Softmax(lin, n_class=4)


def _classifier(n_class=3, n_indep=1, spatial=(4, 5)):
    inp = nm.Input((None, 2) + spatial, 'b,f,x,y', name='raw')
    lin = nm.Conv(inp, n_class * n_indep, 1, activation_func='lin')
    return inp, lin, nm.Softmax(lin, n_indep=n_indep)


def test_multinoulli_nll_sparse_matches_cross_entropy():
    inp, lin, sm = _classifier()
    target = nm.Input_like(sm, override_f=1, name='target', dtype='int16')
    nll = nm.MultinoulliNLL(sm, target, target_is_sparse=True)
    assert nll.shape.shape == (None, 1, 4, 5)
    x = np.random.randn(2, 2, 4, 5).astype(np.float32)
    y = np.random.randint(0, 3, (2, 1, 4, 5))
    y[0, 0, 0, :3] = -1  # unlabelled
    logits = torch.from_numpy(lin(x))
    expected = F.cross_entropy(logits, torch.from_numpy(y[:, 0]).long(), ignore_index=-1)
    assert nll(x, y).mean() == pytest.approx(expected.item(), rel=1e-5)


def test_multinoulli_nll_dense_class_and_example_weights():
    inp, lin, sm = _classifier()
    target = nm.Input_like(sm, name='target')
    ew = nm.Input((None, 1, 4, 5), 'b,f,x,y', name='ew')
    nll = nm.MultinoulliNLL(sm, target, class_weights=[1.0, 2.0, 0.5], example_weights=ew)
    x = np.random.randn(2, 2, 4, 5).astype(np.float32)
    labels = np.random.randint(0, 3, (2, 4, 5))
    dense = np.eye(3, dtype=np.float32)[labels].transpose(0, 3, 1, 2)
    w = np.random.rand(2, 1, 4, 5).astype(np.float32)
    logp = F.log_softmax(torch.from_numpy(lin(x)), 1).numpy()
    cw = np.array([1, 2, 0.5], np.float32)[None, :, None, None]
    expected = -(dense * cw * w * logp).sum() / dense.sum()
    assert nll(x, dense, w).mean() == pytest.approx(expected, rel=1e-5)


def test_multinoulli_nll_lazy_label_masks():
    inp, lin, sm = _classifier(spatial=(3, 3))
    target = nm.Input_like(sm, override_f=1, name='target')
    labeled = nm.Input((None, 3), 'b,f', name='labeled')
    absent = nm.Input((None, 3), 'b,f', name='absent')
    nll = nm.MultinoulliNLL(sm, target, target_is_sparse=True, mask_class_labeled=labeled,
                            mask_class_not_present=absent)
    x = np.random.randn(2, 2, 3, 3).astype(np.float32)
    y = np.random.randint(0, 3, (2, 1, 3, 3))
    all_labeled, none_absent = np.ones((2, 3)), np.zeros((2, 3))
    plain = nm.MultinoulliNLL(sm, target, target_is_sparse=True)
    # limit cases reduce to the ordinary NLL
    assert nll(x, y, all_labeled, none_absent).mean() == pytest.approx(plain(x, y).mean(), rel=1e-5)
    # class 2 unlabelled in example 0: its pixels are ignored there
    m = all_labeled.copy()
    m[0, 2] = 0
    y_ignored = y.copy()
    y_ignored[0][y[0] == 2] = -1
    assert nll(x, y, m, none_absent).mean() == pytest.approx(plain(x, y_ignored).mean(), rel=1e-5)
    # class 1 absent in example 1: -log(1 - p1) over all its pixels joins the average
    a = none_absent.copy()
    a[1, 1] = 1
    p = sm(x)
    up = -np.log(np.take_along_axis(p, y, 1)).sum()
    dn = -np.log(1 - p[1, 1]).sum()
    assert nll(x, y, all_labeled, a).mean() == pytest.approx((up + dn) / (y.size + 9), rel=1e-4)


def test_multinoulli_label_out_of_range():
    inp, lin, sm = _classifier()
    target = nm.Input_like(sm, override_f=1, name='target')
    nll = nm.MultinoulliNLL(sm, target, target_is_sparse=True)
    with pytest.raises(DataError, match='label 3, but there are only 3 classes'):
        nll(np.zeros((1, 2, 4, 5), np.float32), np.full((1, 1, 4, 5), 3))


def test_multinoulli_target_shape_checked():
    inp, lin, sm = _classifier()
    wrong = nm.Input((None, 2, 4, 5), 'b,f,x,y', name='wrong')
    with pytest.raises(ShapeError, match="sparse target"):
        nm.MultinoulliNLL(sm, wrong, target_is_sparse=True)


def test_binary_nll_with_unlabelled():
    inp = nm.Input((None, 2, 4), 'b,f,x', name='raw')
    prob = nm.Conv(inp, 2, 1, activation_func='sigmoid')
    target = nm.Input_like(prob, name='target')
    bnll = nm.BinaryNLL(prob, target)
    x = np.random.randn(3, 2, 4).astype(np.float32)
    t = np.random.rand(3, 2, 4).astype(np.float32)
    t[0, 0, :2] = np.nan
    p = torch.from_numpy(prob(x))
    mask = ~np.isnan(t)
    expected = F.binary_cross_entropy(p[mask], torch.from_numpy(t[mask])).item()
    assert bnll(x, t).mean() == pytest.approx(expected, rel=1e-4)


def test_soft_dice_loss_is_one_minus_the_soft_f1_per_example():
    inp, lin, sm = _classifier(n_class=3, n_indep=2)
    sparse_t = nm.Input((None, 2, 4, 5), 'b,f,x,y', name='labels', dtype='int16')
    dense_t = nm.Input_like(sm, name='dense')
    dice = nm.SoftDiceLoss(sm, sparse_t, target_is_sparse=True, classes=[1, 2], smooth=0.5)
    dense_dice = nm.SoftDiceLoss(sm, dense_t, classes=[1, 2], smooth=0.5)
    assert dice.shape.shape == ()
    x = np.random.randn(3, 2, 4, 5).astype(np.float32)
    y = np.random.randint(0, 3, (3, 2, 4, 5))
    y[0, 1, :2] = -1  # unlabelled in example 0, group 1
    p = sm(x).reshape(3, 2, 3, 4, 5)  # b, group, class, x, y
    expected = []
    for b in range(3):
        for g in range(2):
            labelled = y[b, g] >= 0
            for c in (1, 2):
                pc, tc = p[b, g, c][labelled], (y[b, g] == c)[labelled]
                expected.append(1 - (2 * (pc * tc).sum() + 0.5) / (pc.sum() + tc.sum() + 0.5))
    assert float(dice(x, y)) == pytest.approx(np.mean(expected), rel=1e-5)
    dense = np.eye(3, dtype=np.float32)[np.maximum(y, 0)]  # b, group, x, y, class
    dense = dense.transpose(0, 1, 4, 2, 3).reshape(3, 6, 4, 5)
    dense[0, 3:6, :2] = np.nan  # the same positions unlabelled (the whole group row)
    assert float(dense_dice(x, dense)) == pytest.approx(np.mean(expected), rel=1e-5)
    # a perfect prediction scores 0; the gradient raises the overlap
    perfect = np.eye(3, dtype=np.float32)[y.clip(0)].transpose(0, 1, 4, 2, 3).reshape(3, 6, 4, 5)
    assert float(nm.SoftDiceLoss(dense_t, dense_t, classes=[1, 2], smooth=0)(perfect)) == 0
    with pytest.raises(ConfigError, match='classes'):
        nm.SoftDiceLoss(sm, sparse_t, target_is_sparse=True, classes=[3])
    with pytest.raises(ShapeError, match="'f'=2"):
        nm.SoftDiceLoss(sm, dense_t, target_is_sparse=True)
    with pytest.raises(DataError, match='only 3 classes'):
        dice(x, np.full_like(y, 3))


def test_soft_dice_loss_trains_with_an_nll_and_survives_save(tmp_path):
    inp, lin, sm = _classifier(n_class=2, spatial=(6, 6))
    target = nm.Input_like(sm, override_f=1, name='target', dtype='int16')
    nll = nm.MultinoulliNLL(sm, target, target_is_sparse=True)
    loss = nm.AggregateLoss([nll, nm.SoftDiceLoss(sm, target, target_is_sparse=True)])
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss, prediction_node=sm)
    x = np.random.randn(4, 2, 6, 6).astype(np.float32)
    y = (x[:, :1] > 0.5).astype(np.int16)  # thin-ish class 1: a third of the positions
    dice = loss.parents[1]
    before = float(dice(x, y))
    model.lr = 0.05
    for _ in range(60):
        model.trainingstep(x, y, optimiser='Adam')
    assert float(dice(x, y)) < 0.5 * before
    model.save(str(tmp_path / 'dice.mdl'))
    restored = nm.modelload(str(tmp_path / 'dice.mdl'))
    assert float(restored.loss_node(x, y)) == pytest.approx(float(loss(x, y)), rel=1e-5)


@pytest.mark.parametrize('margin', [None, 0.3])
def test_squared_and_abs_loss(margin):
    inp = nm.Input((None, 2, 5), 'b,f,x', name='raw')
    pred = nm.Conv(inp, 2, 1, activation_func='lin')
    target = nm.Input_like(pred, name='target')
    se = nm.SquaredLoss(pred, target, margin=margin)
    ae = nm.AbsLoss(pred, target, margin=margin)
    assert se.shape.shape == (None, 1, 5)
    x = np.random.randn(3, 2, 5).astype(np.float32)
    t = np.random.randn(3, 2, 5).astype(np.float32)
    dev = np.abs(t - pred(x))
    if margin:
        dev = np.maximum(dev - margin, 0)
    assert se(x, t).mean() == pytest.approx((0.5 * dev ** 2).mean(), rel=1e-5)
    assert ae(x, t).mean() == pytest.approx(dev.mean(), rel=1e-5)
    t[1] = np.nan
    assert ae(x, t).mean() == pytest.approx(np.delete(dev, 1, axis=0).mean(), rel=1e-5)


def test_aggregate_loss_mixing_and_errors():
    inp = nm.Input((None, 2, 5), 'b,f,x', name='raw')
    pred = nm.Conv(inp, 2, 1, activation_func='lin')
    target = nm.Input_like(pred, name='target')
    se, ae = nm.SquaredLoss(pred, target), nm.AbsLoss(pred, target)
    total = nm.AggregateLoss([se, ae], mixing_weights=[2.0, 1.0])
    assert total.shape.shape == ()
    x, t = np.random.randn(3, 2, 5).astype(np.float32), np.random.randn(3, 2, 5).astype(np.float32)
    assert float(total(x, t)) == pytest.approx((2 * se(x, t).mean() + ae(x, t).mean()) / 2, rel=1e-5)
    with pytest.raises(ShapeError, match='mixing_weights'):
        nm.AggregateLoss([se, ae], mixing_weights=[1.0])


def test_errors_sparse_dense_and_binary():
    inp, lin, sm = _classifier(spatial=(2, 2))
    sparse_t = nm.Input_like(sm, override_f=1, name='t1')
    dense_t = nm.Input_like(sm, name='t2')
    err_s = nm.Errors(sm, sparse_t, target_is_sparse=True)
    err_d = nm.Errors(sm, dense_t)
    x = np.random.randn(4, 2, 2, 2).astype(np.float32)
    cls = sm(x).argmax(1)[:, None]
    y = cls.copy()
    y[0, 0, 0, 0] = (y[0, 0, 0, 0] + 1) % 3
    y[1, 0, 0, 0] = -1
    assert float(err_s(x, y)) == pytest.approx(1 / 15)
    dense = np.eye(3, dtype=np.float32)[cls[:, 0]].transpose(0, 3, 1, 2)
    assert float(err_d(x, dense)) == 0
    prob = nm.Conv(inp, 1, 1, activation_func='sigmoid')
    err_b = nm.Errors(prob, nm.Input_like(prob, name='t3'))
    p = prob(x)
    assert float(err_b(x, (p > 0.5).astype(np.float32))) == 0


def test_errors_skip_nan_targets():
    """NaN targets are unlabelled: not counted (a whole group for dense one-hot targets)."""
    inp, lin, sm = _classifier(spatial=(2, 2))
    assert nm.Errors.masks_nan_target and not nm.MultinoulliNLL.masks_nan_target
    x = np.random.randn(4, 2, 2, 2).astype(np.float32)
    cls = sm(x).argmax(1)[:, None]
    wrong = (cls + 1) % 3
    sparse = cls.astype(np.float32)
    sparse[0, 0, 0, 0] = wrong[0, 0, 0, 0]
    sparse[1, 0, :, :] = np.nan
    err_s = nm.Errors(sm, nm.Input_like(sm, override_f=1, name='t1'), target_is_sparse=True)
    assert float(err_s(x, sparse)) == pytest.approx(1 / 12)
    dense = np.eye(3, dtype=np.float32)[wrong[:, 0]].transpose(0, 3, 1, 2)
    dense[1:, 0] = np.nan           # one NaN class makes the group of examples 1-3 unlabelled
    err_d = nm.Errors(sm, nm.Input_like(sm, name='t2'))
    assert float(err_d(x, dense)) == 1
    prob = nm.Conv(inp, 1, 1, activation_func='sigmoid')
    right = (prob(x) > 0.5).astype(np.float32)
    right[0, 0, 0, 0] = 1 - right[0, 0, 0, 0]
    right[2:] = np.nan
    assert float(nm.Errors(prob, nm.Input_like(prob, name='t3'))(x, right)) == pytest.approx(1 / 8)


def test_gradients_match_finite_differences():
    inp, lin, sm = _classifier()
    target = nm.Input_like(sm, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(sm, target, target_is_sparse=True))
    x, y = np.random.randn(2, 2, 4, 5), np.random.randint(0, 3, (2, 1, 4, 5))
    fn = loss.model.function([loss], training=True)
    fn(*fn.to_tensors(x, y))[0].backward()
    assert all(p.grad is not None for p in loss.all_trainable_params.values())
    w = lin.params['w']
    eps = 1e-3
    with torch.no_grad():
        w[0, 0, 0, 0] += eps
        up = float(loss(x, y))
        w[0, 0, 0, 0] -= 2 * eps
        down = float(loss(x, y))
        w[0, 0, 0, 0] += eps
    assert w.grad[0, 0, 0, 0].item() == pytest.approx((up - down) / (2 * eps), rel=1e-2, abs=1e-4)


def test_input_checks_shape_and_dtype():
    inp = nm.Input((None, 2, 4), 'b,f,x', name='raw')
    node = nm.Conv(inp, 3, 2)
    with pytest.raises(ShapeError, match="Input 'raw': axis 'x' has size 5, expected 4"):
        node(np.zeros((1, 2, 5)))
    with pytest.raises(ShapeError, match='expects 3 axes'):
        node(np.zeros((2, 4)))
    with pytest.raises(ShapeError, match='numeric'):
        node(np.full((1, 2, 4), 'a'))
    labels = nm.Input((None, 1, 4), 'b,f,x', dtype='int16', name='labels')
    with pytest.raises(ShapeError, match='non-integer'):
        labels.to_tensor(np.full((1, 1, 4), 0.5))
    with pytest.raises(ShapeError, match='unknown dtype'):
        nm.Input((1, 2), 'b,f', dtype='float8')
    hard = nm.Input((2, 2, 4), 'b,f,x', hardcoded_shape=True, name='hard')
    with pytest.raises(ShapeError, match="axis 'b'"):
        hard.to_tensor(np.zeros((3, 2, 4)))
    assert inp.to_tensor(np.zeros((5, 2, 4))).shape == (5, 2, 4)


def test_call_needs_all_inputs():
    inp, lin, sm = _classifier()
    target = nm.Input_like(sm, override_f=1, name='target')
    nll = nm.MultinoulliNLL(sm, target, target_is_sparse=True)
    with pytest.raises(GraphError, match=r"needs 2 input\(s\) \['raw', 'target'\], got 1"):
        nll(np.zeros((1, 2, 4, 5)))


def test_parents_from_other_model_refused():
    inp = nm.Input((1, 2), 'b,f')
    nm.model_manager.newmodel('other')
    with pytest.raises(GraphError, match='belongs to model'):
        nm.Perceptron(inp, 3)
