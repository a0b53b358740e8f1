"""ELEKTRONN2 .mdl files, written here as ELEKTRONN2 wrote them, convert and predict
what the original computed (an independent NumPy reference under its conventions:
true convolution, pool-then-normalise, its GRU/LSTM gate order)."""
from __future__ import annotations

import gzip
import itertools
import logging
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from oldformat_writer import BASIC, GM, LOSS, NEURAL, Global, Obj, dumps, node, ptr, tagged_shape

import elektronn2.neuromancer as nm
from elektronn2.errors import ModelFileError
from elektronn2.neuromancer import oldmodels

rng = np.random.default_rng(0)


def _r(*shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _write(path: Path, descriptors: OrderedDict, designations: dict, compress=False) -> Path:
    data = dumps((descriptors, designations))
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _input(shape, tags, name='input'):
    return [node(BASIC, 'Input', [tuple(shape), tags], {'name': name, 'print_repr': True}),
            OrderedDict()]


# --- the original's computations in NumPy --------------------------------------------------
def true_conv(x, w):
    """Valid true convolution (Theano's): x (b, c, *sp), w (f, c, *k)."""
    n_sp = w.ndim - 2
    win = sliding_window_view(x, w.shape[2:], axis=tuple(range(2, 2 + n_sp)))
    flipped = w[(slice(None), slice(None)) + (slice(None, None, -1),) * n_sp]
    pos, tap = 'XYZ'[:n_sp], 'ijk'[:n_sp]
    return np.einsum(f"bc{pos}{tap},fc{tap}->bf{pos}", win, flipped, optimize=True)


def pool(x, p):
    for ax, k in enumerate(p, start=2):
        n = x.shape[ax] // k * k
        x = np.take(x, np.arange(n), axis=ax)
        x = x.reshape(x.shape[:ax] + (n // k, k) + x.shape[ax + 1:]).max(axis=ax + 1)
    return x


def bias(x, b):
    return x + b.reshape((1, -1) + (1,) * (x.ndim - 2))


def relu(x):
    return 0.5 * (x + np.abs(x))


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def upconv(x, w, p):
    """The original's UpConv: w (n_f, n_in, *p) scattered at stride p (no flip)."""
    b, c = x.shape[:2]
    out = np.zeros((b, w.shape[0]) + tuple(s * k for s, k in zip(x.shape[2:], p)), np.float64)
    for offs in itertools.product(*(range(k) for k in p)):
        sl = tuple(slice(o, None, k) for o, k in zip(offs, p))
        out[(slice(None), slice(None)) + sl] += np.einsum('bc...,fc->bf...', x, w[(...,) + offs])
    return out


def _predict(path, *inputs, **load_args):
    model = nm.modelload(path, make_current=False, **load_args)
    return model, model.predict(*inputs)


# --- the nets ---------------------------------------------------------------------------------
def test_mnist_cnn_converts_and_predicts_as_the_original(tmp_path, caplog):
    w1, b1, w2, b2 = _r(8, 1, 5, 5), _r(8), _r(6, 8, 3, 3), _r(6)
    w3, b3 = _r(6 * 5 * 5, 10, scale=0.1), _r(10)
    d = OrderedDict()
    d['input'] = _input((None, 1, 28, 28), 'b,f,x,y')
    d['conv'] = [node(NEURAL, 'Conv', [ptr('input'), 8, (5, 5), (2, 2)], {'name': 'conv'}),
                 OrderedDict(w=w1, b=b1)]
    d['conv1'] = [node(NEURAL, 'Conv', [ptr('conv'), 6, (3, 3), (2, 2)],
                       {'name': 'conv1', 'activation_func': 'tanh'}), OrderedDict(w=w2, b=b2)]
    d['dot'] = [node(NEURAL, 'Perceptron', [ptr('conv1'), 10, 'lin'], {'name': 'dot', 'flatten': True}),
                OrderedDict(w=w3, b=b3)]
    d['softmax'] = [node(LOSS, 'Softmax', [ptr('dot')], {'name': 'softmax'}), OrderedDict()]
    d['target'] = _input((None, 1), 'b,f', name='target')
    d['nll'] = [node(LOSS, 'MultinoulliNLL', [ptr('softmax'), ptr('target')],
                     {'target_is_sparse': True, 'name': 'nll'}), OrderedDict()]
    d['loss'] = [node(LOSS, 'AggregateLoss', [[ptr('nll')]], {'name': 'loss'}), OrderedDict()]
    path = _write(tmp_path / 'mnist.mdl', d, {'input_node': 'input', 'target_node': 'target',
                                              'loss_node': 'loss', 'prediction_node': 'softmax',
                                              'prediction_ext': ['loss', 'softmax'],
                                              'debug_outputs': [], 'error_node': None})
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    with caplog.at_level(logging.INFO, logger='elektronn2'):
        model, pred = _predict(path, x)
    assert any('Converted the ELEKTRONN2 model file' in r.message and 'elektronn2-convert'
               in r.message for r in caplog.records)
    h = relu(pool(bias(true_conv(x, w1), b1), (2, 2)))
    h = np.tanh(pool(bias(true_conv(h, w2), b2), (2, 2)))
    ref = softmax(h.reshape(3, -1) @ w3 + b3)
    np.testing.assert_allclose(pred, ref, rtol=1e-4, atol=1e-5)
    assert model.loss_node.name == 'loss'


def _dense_reference(x, layers, stride, out_shape):
    """Dense output of a strided net: the net on each input shift, interleaved."""
    dense = np.zeros((x.shape[0], layers[-1][0].shape[0]) + tuple(out_shape))
    for q in itertools.product(*(range(s) for s in stride)):
        h = x[(slice(None), slice(None)) + tuple(slice(o, None) for o in q)]
        for w, b, p, act in layers:
            h = act(pool(bias(true_conv(h, w), b), p))
        sl = tuple(slice(o, o + n * s, s) for o, n, s in zip(q, h.shape[2:], stride))
        counts = [len(range(*s.indices(d))) for s, d in zip(sl, out_shape)]
        dense[(slice(None), slice(None)) + sl] = h[(...,) + tuple(slice(0, c) for c in counts)]
    return dense


def test_3d_strided_cnn_with_mfp_gives_the_dense_prediction_of_the_original(tmp_path):
    w1, b1, w2, b2, w3, b3 = _r(3, 1, 2, 3, 3), _r(3), _r(4, 3, 3, 3, 3), _r(4), _r(2, 4, 1, 1, 1), _r(2)
    d = OrderedDict()
    d['input'] = _input((1, 1, 8, 13, 13), 'b,f,z,x,y')
    d['conv'] = [node(NEURAL, 'Conv', [ptr('input'), 3, (2, 3, 3), (1, 2, 2)],
                      {'name': 'conv', 'mfp': True}), OrderedDict(w=w1, b=b1)]
    d['conv1'] = [node(NEURAL, 'Conv', [ptr('conv'), 4, (3, 3, 3), (2, 2, 2)],
                       {'name': 'conv1', 'mfp': True}), OrderedDict(w=w2, b=b2)]
    d['conv2'] = [node(NEURAL, 'Conv', [ptr('conv1'), 2, (1, 1, 1)],
                       {'name': 'conv2', 'activation_func': 'lin'}), OrderedDict(w=w3, b=b3)]
    d['to_dense'] = [node(NEURAL, 'FragmentsToDense', [ptr('conv2')], {'name': 'to_dense'}),
                     OrderedDict()]
    d['softmax'] = [node(LOSS, 'Softmax', [ptr('to_dense')], {'name': 'softmax'}), OrderedDict()]
    path = _write(tmp_path / 'neuro3d.mdl', d, {'input_node': 'input',
                                                'prediction_node': 'softmax'}, compress=True)
    x = rng.random((1, 1, 8, 13, 13), dtype=np.float32)
    _, pred = _predict(path, x)
    lin = lambda v: v  # noqa: E731
    ref = softmax(_dense_reference(x, [(w1, b1, (1, 2, 2), relu), (w2, b2, (2, 2, 2), relu),
                                       (w3, b3, (1, 1, 1), lin)], (2, 4, 4), pred.shape[2:]))
    assert pred.shape == (1, 2, 4, 4, 4)
    np.testing.assert_allclose(pred, ref, rtol=1e-4, atol=1e-5)


def test_unet_with_upconvmerge_converts(tmp_path):
    w1, b1, w2, b2, w3, b3 = _r(4, 1, 3, 3), _r(4), _r(5, 4, 3, 3), _r(5), _r(6, 5, 3, 3), _r(6)
    wu, bu, wo, bo = _r(4, 6, 2, 2), _r(4), _r(2, 8, 1, 1), _r(2)
    d = OrderedDict()
    d['input'] = _input((None, 1, 20, 20), 'b,f,x,y')
    d['conv'] = [node(NEURAL, 'Conv', [ptr('input'), 4, (3, 3)], {'name': 'conv'}),
                 OrderedDict(w=w1, b=b1)]
    d['conv1'] = [node(NEURAL, 'Conv', [ptr('conv'), 5, (3, 3), (2, 2)], {'name': 'conv1'}),
                  OrderedDict(w=w2, b=b2)]
    d['conv2'] = [node(NEURAL, 'Conv', [ptr('conv1'), 6, (3, 3)], {'name': 'conv2'}),
                  OrderedDict(w=w3, b=b3)]
    # what UpConvMerge(conv, conv2, 4) recorded: UpConv, Crop of the finer map, Concat
    d['upconv'] = [node(NEURAL, 'UpConv', [ptr('conv2'), 4, (2, 2)], {'name': 'upconv'}),
                   OrderedDict(w=wu, b=bu)]
    d['crop'] = [node(NEURAL, 'Crop', [ptr('conv'), [3, 3]], {'name': 'crop', 'print_repr': True}),
                 OrderedDict()]
    d['merge'] = [node(BASIC, 'Concat', [(ptr('upconv'), ptr('crop'))],
                       {'axis': 'f', 'name': 'merge', 'print_repr': True}), OrderedDict()]
    d['conv3'] = [node(NEURAL, 'Conv', [ptr('merge'), 2, (1, 1)],
                       {'name': 'conv3', 'activation_func': 'lin'}), OrderedDict(w=wo, b=bo)]
    d['softmax'] = [node(LOSS, 'Softmax', [ptr('conv3')], {'name': 'softmax'}), OrderedDict()]
    path = _write(tmp_path / 'unet.mdl', d, {'input_node': 'input', 'prediction_node': 'softmax'})
    x = rng.random((2, 1, 20, 20), dtype=np.float32)
    _, pred = _predict(path, x)
    fine = relu(bias(true_conv(x, w1), b1))
    low = relu(bias(true_conv(relu(pool(bias(true_conv(fine, w2), b2), (2, 2))), w3), b3))
    up = relu(bias(upconv(low, wu, (2, 2)), bu))
    merged = np.concatenate([up, fine[:, :, 3:-3, 3:-3]], axis=1)
    ref = softmax(bias(true_conv(merged, wo), bo))
    np.testing.assert_allclose(pred, ref, rtol=1e-4, atol=1e-5)


def test_batch_normalisation_and_prelu_convert(tmp_path):
    w1, b1, w2 = _r(4, 2, 3, 3), _r(4, 2), _r(4 * 3 * 3, 3, scale=0.1)
    b1[:, 1] = np.abs(b1[:, 1])  # prelu slopes >= 0: pooling and activation commute
    gamma1, mean1 = np.abs(_r(4)) + 0.5, _r(4)
    std1 = np.array([0.5, 1.5, 1e-3, 2.0], np.float32)  # one below sqrt(eps)
    gamma2, mean2, std2, b2 = _r(3), _r(3), np.abs(_r(3)) + 0.2, _r(3)
    d = OrderedDict()
    d['input'] = _input((None, 2, 8, 8), 'b,f,x,y')
    d['conv'] = [node(NEURAL, 'Conv', [ptr('input'), 4, (3, 3), (2, 2)],
                      {'name': 'conv', 'activation_func': 'prelu', 'batch_normalisation': 'train',
                       'dropout_rate': 0.5}),
                 OrderedDict(w=w1, b=b1, gamma=gamma1, mean=mean1, std=std1,
                             dropout_rate=np.array(0.25, np.float32))]
    d['dot'] = [node(NEURAL, 'Perceptron', [ptr('conv'), 3, 'lin', True, 'train'], {'name': 'dot'}),
                OrderedDict(w=w2, b=b2, gamma=gamma2, mean=mean2, std=std2)]
    path = _write(tmp_path / 'bn.mdl', d, {'input_node': 'input', 'prediction_node': 'dot'})
    x = rng.random((3, 2, 8, 8), dtype=np.float32)
    model, pred = _predict(path, x)
    assert model['conv'].dropout_rate == 0.25
    h = pool(true_conv(x, w1), (2, 2))
    h = bias(h * (gamma1 / std1)[None, :, None, None], b1[:, 0] - gamma1 * mean1 / std1)
    h = np.where(h > 0, h, h * b1[:, 1][None, :, None, None])
    lin = h.reshape(3, -1) @ w2
    ref = (gamma2 / std2) * lin + b2 - gamma2 * mean2 / std2
    np.testing.assert_allclose(pred, ref, rtol=1e-4, atol=1e-4)


def test_gru_and_lstm_steps_convert(tmp_path):
    n_in, n = 5, 4
    w_gru, b_gru = _r(n + n_in, 3 * n), _r(3 * n)
    w_lstm, b_lstm = _r(n + n_in, 4 * n), _r(4 * n)
    h0, s0 = _r(n), _r(2 * n)
    w_out, b_out = _r(n + 2 * n, 3), _r(3)
    d = OrderedDict()
    d['input'] = _input((None, n_in), 'b,f')
    d['initial_state'] = [node(BASIC, 'InitialState_like', [ptr('input'), n], {'name': 'initial_state'}),
                          OrderedDict(value=h0)]
    d['gru'] = [node(NEURAL, 'GRU', [ptr('input'), ptr('initial_state'), n], {'name': 'gru'}),
                OrderedDict(w=w_gru, b=b_gru)]
    d['initial_state1'] = [node(BASIC, 'InitialState_like', [ptr('input'), 2 * n],
                                {'name': 'initial_state1'}), OrderedDict(value=s0)]
    d['lstm'] = [node(NEURAL, 'LSTM', [ptr('input'), ptr('initial_state1'), n], {'name': 'lstm'}),
                 OrderedDict(w=w_lstm, b=b_lstm)]
    d['concat'] = [node(BASIC, 'Concat', [[ptr('gru'), ptr('lstm')]], {'name': 'concat'}),
                   OrderedDict()]
    d['dot'] = [node(NEURAL, 'Perceptron', [ptr('concat'), 3, 'lin'], {'name': 'dot'}),
                OrderedDict(w=w_out, b=b_out)]
    path = _write(tmp_path / 'rnn.mdl', d, {'input_node': 'input', 'prediction_node': 'dot'})
    x = _r(2, n_in, scale=1.0)
    _, pred = _predict(path, x)
    h = np.broadcast_to(h0, (2, n))
    act = sigmoid(np.concatenate([h, x], 1) @ w_gru[:, :2 * n] + b_gru[:2 * n])
    z, r = act[:, :n], act[:, n:]
    h_tilde = np.tanh(np.concatenate([r * h, x], 1) @ w_gru[:, 2 * n:] + b_gru[2 * n:])
    gru = (1 - z) * h + z * h_tilde
    fb, cell = np.broadcast_to(s0[:n], (2, n)), np.broadcast_to(s0[n:], (2, n))
    g = np.concatenate([fb, x], 1) @ w_lstm + b_lstm
    f, i, o = sigmoid(g[:, :n]), sigmoid(g[:, n:2 * n]), sigmoid(g[:, 2 * n:3 * n])
    cell = f * cell + i * np.tanh(g[:, 3 * n:])
    lstm = np.concatenate([o * np.tanh(cell), cell], 1)
    ref = np.concatenate([gru, lstm], 1) @ w_out + b_out
    np.testing.assert_allclose(pred, ref, rtol=1e-4, atol=1e-5)


def test_split_graph_converts_with_the_original_names(tmp_path):
    w, b, wa, ba, wb, bb = _r(6, 6), _r(6), _r(4, 3), _r(3), _r(2, 3), _r(3)
    d = OrderedDict()
    d['input'] = _input((None, 6), 'b,f')
    d['dot'] = [node(NEURAL, 'Perceptron', [ptr('input'), 6, 'tanh'], {'name': 'dot'}),
                OrderedDict(w=w, b=b)]
    d['split'] = Obj(Global(GM, 'SplitDescriptor'), {
        'node_id': 'dot', 'func': Global(BASIC, 'split'), 'args': (),
        'kwargs': {'axis': 'f', 'index': 4, 'n_out': None, 'strip_singleton_dims': False,
                   'name': 'split'}})
    for name, size in (('split1', 4), ('split2', 2)):
        d[name] = [node(BASIC, 'FromTensor', ['TensorVariable not found',
                                              tagged_shape((None, size), 'bf'), ptr('dot')],
                        {'name': name}), OrderedDict()]
    d['a'] = [node(NEURAL, 'Perceptron', [ptr('split1'), 3, 'lin'], {'name': 'a'}),
              OrderedDict(w=wa, b=ba)]
    d['b'] = [node(NEURAL, 'Perceptron', [ptr('split2'), 3, 'lin'], {'name': 'b'}),
              OrderedDict(w=wb, b=bb)]
    d['add'] = [node(BASIC, 'Add', [ptr('a'), ptr('b')], {'name': 'add'}), OrderedDict()]
    path = _write(tmp_path / 'split.mdl', d, {'input_node': 'input', 'prediction_node': 'add',
                                              'debug_outputs': ['split2']})
    x = _r(5, 6, scale=1.0)
    model, pred = _predict(path, x)
    hidden = np.tanh(x @ w + b)
    ref = hidden[:, :4] @ wa + ba + hidden[:, 4:] @ wb + bb
    np.testing.assert_allclose(pred, ref, rtol=1e-5, atol=1e-5)
    assert [n.name for n in model.debug_outputs] == ['split2']


def test_surgery_options_and_unsupported_classes(tmp_path):
    d = OrderedDict()
    d['input'] = _input((1, 1, 21, 21), 'b,f,x,y')
    d['conv'] = [node(NEURAL, 'Conv', [ptr('input'), 2, (2, 2), (2, 2)],
                      {'name': 'conv', 'activation_func': 'lin'}), OrderedDict(w=_r(2, 1, 2, 2), b=_r(2))]
    path = _write(tmp_path / 'small.mdl', d, {'input_node': 'input', 'prediction_node': 'conv'})
    model = nm.modelload(path, make_current=False, override_mfp_to_active=True,
                         imposed_patch_size=(30, 30), make_weights_constant=True)
    assert model.input_node.shape.spatial_shape == (30, 30)
    assert model.prediction_node.shape.strides == (1, 1)
    assert not any(p.requires_grad for p in model.all_params().values())
    d['lrn'] = [node(NEURAL, 'LRN', [ptr('conv'), (3, 3)], {'name': 'lrn'}), OrderedDict()]
    bad = _write(tmp_path / 'lrn.mdl', d, {'input_node': 'input'})
    with pytest.raises(ModelFileError, match=r"node 'lrn' of class LRN cannot be converted"):
        nm.modelload(bad)
    del d['lrn']
    d['odd'] = [node('elektronn2.neuromancer.various', 'GaussianRV', [ptr('conv'), ptr('conv')],
                     {'name': 'odd'}), OrderedDict()]
    assert oldmodels.convert(_write(tmp_path / 'rv.mdl', d, {}))[0]['nodes'][-1]['class'] == 'GaussianRV'


def test_convert_command_writes_todays_format(tmp_path):
    d = OrderedDict()
    d['input'] = _input((None, 3), 'b,f')
    w, b = _r(3, 2), _r(2)
    d['dot'] = [node(NEURAL, 'Perceptron', [ptr('input'), 2, 'lin'], {'name': 'dot'}),
                OrderedDict(w=w, b=b)]
    old = _write(tmp_path / 'old.mdl', d, {'input_node': 'input', 'prediction_node': 'dot'})
    new = tmp_path / 'new.mdl'
    run = subprocess.run([sys.executable, '-m', 'elektronn2.training.convert_cli', str(old), str(new)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    x = _r(4, 3, scale=1.0)
    np.testing.assert_allclose(nm.modelload(new, make_current=False).predict(x), x @ w + b,
                               rtol=1e-5, atol=1e-6)
    again = subprocess.run([sys.executable, '-m', 'elektronn2.training.convert_cli', str(tmp_path / 'no.mdl'),
                            str(tmp_path / 'x.mdl')], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and 'error:' in again.stderr


def test_v1_parameter_file_loads_into_the_v1_network(tmp_path):
    from elektronn2.legacy import MixedConvNN
    from elektronn2.legacy.v1params import load_v1_parameters
    w1, b1, w2, b2 = _r(3, 1, 3, 3), _r(3), _r(3 * 4 * 4, 2), _r(2)
    path = tmp_path / 'CNN.save'
    with open(path, 'wb') as f:  # as v1 wrote it: shapes, conv [W, b], perceptron [b, W], pools
        for obj in ([w1.shape, b2.shape], w1, b1, b2, w2, [(2, 2)]):
            f.write(pickle.dumps(obj, protocol=2))
    cnn = MixedConvNN((10, 10), input_depth=1)
    cnn.addConvLayer(3, 3, 2, 'tanh')
    cnn.addPerceptronLayer(2, 'linear')
    load_v1_parameters(cnn.model, path)
    x = rng.random((2, 1, 10, 10), dtype=np.float32)
    h = np.tanh(bias(pool(true_conv(x, w1), (2, 2)), b1))
    np.testing.assert_allclose(cnn.layers[-1](x), h.reshape(2, -1) @ w2 + b2, rtol=1e-4, atol=1e-5)
