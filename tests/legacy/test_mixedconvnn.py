"""MixedConvNN: v1's layer-by-layer builder over neuromancer."""
import numpy as np
import pytest

from elektronn2.errors import ConfigError, GraphError, ModelFileError
from elektronn2.legacy import MixedConvNN


def toy_classes(n=64, seed=0):
    """Images whose class is the brighter half (left or right)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int16)
    images = rng.random((n, 1, 12, 12)).astype(np.float32) * 0.5
    for image, label in zip(images, labels):
        image[0, :, 6 * label:6 * label + 6] += 0.5
    return images, labels


def small_cnn(name='cnn', n_out=2):
    cnn = MixedConvNN((12, 12), input_depth=1, enable_dropout=True, name=name)
    cnn.addConvLayer(4, 3, pool_shape=2, activation_func='relu')
    cnn.addPerceptronLayer(8, activation_func='relu')
    cnn.addPerceptronLayer(n_out, activation_func='linear', force_no_dropout=True)
    cnn.compileOutputFunctions(target='nll')
    cnn.setOptimizerParams(SGD={'LR': 0.05, 'momentum': 0.9}, weight_decay=1e-4)
    return cnn


def test_cnn_trains_and_reports_errors():
    images, labels = toy_classes()
    cnn = small_cnn()
    assert cnn.model.input_node.shape.shape == (None, 1, 12, 12)
    assert cnn.model.lr == 0.05 and cnn.model.mom == 0.9 and cnn.model.wd == 1e-4
    first, _, _ = cnn.trainingStep(images, labels, mode='SGD')
    for _ in range(60):
        loss, per_example, seconds = cnn.trainingStep(images, labels, mode='SGD')
    assert loss < first and per_example.shape == (64, 1) and seconds > 0
    valid_loss, error, classes = cnn.get_error(images, labels)
    assert error < 0.1 and classes.shape == (64,) and np.mean(classes == labels) == 1 - error
    assert cnn.class_probabilities(images).shape == (64, 2)


def test_dropout_rates_only_where_enabled():
    cnn = small_cnn()
    assert cnn.getDropoutRates() == [0.0, 0.0]  # the conv and the hidden perceptron
    cnn.setDropoutRates([0.1, 0.5])
    assert cnn.model.dropout_rates == [0.1, 0.5, 0.0]
    with pytest.raises(ConfigError, match=r'\[0, 1\)'):
        cnn.setDropoutRates([1.5])


def test_parameters_round_trip_and_partial_loading(tmp_path):
    cnn = small_cnn()
    path = tmp_path / 'cnn.param'
    cnn.saveParameters(path)
    other = small_cnn('other', n_out=3)
    other.loadParameters(path)  # the last layer's shape differs: skipped
    np.testing.assert_array_equal(other.layers[0].get_param_values()['w'],
                                  cnn.layers[0].get_param_values()['w'])
    assert other.layers[2].get_param_values()['w'].shape == (8, 3)
    with pytest.raises(ModelFileError, match='layer 2'):
        other.loadParameters(path, strict=True)
    with pytest.raises(ModelFileError, match='Cannot read'):
        other.loadParameters(tmp_path / 'missing.param')


def test_tied_autoencoder_shares_the_encoder_weights():
    ae = MixedConvNN(20, name='ae')
    ae.addPerceptronLayer(10, activation_func='tanh')
    ae.addPerceptronLayer(4, activation_func='tanh')
    chain = ae.addTiedAutoencoderChain(activation_func='tanh', input_noise=0.2)
    ae.compileOutputFunctions(target='regression')
    assert [layer.shape['f'] for layer in chain] == [10, 20]
    assert chain[0].params['w'] is ae.layers[1].params['w']
    assert ae.layers[1].dropout_rate == 0.2  # noise on the code, while training only
    assert len(ae.layers) == 2  # the decoders are not network layers by default
    data = np.random.default_rng(0).random((32, 20)).astype(np.float32)
    loss, _, _ = ae.trainingStep(data, data, mode='Adam')
    loss, reconstruction = ae.get_error(data, data)  # v1: no error value for regression
    assert np.isfinite(loss) and reconstruction.shape == (32, 20)


def test_3d_layout_and_dense_prediction():
    cnn = MixedConvNN((5, 17, 17), input_depth=2, name='cnn3d')
    cnn.addConvLayer(3, (1, 4, 4), pool_shape=(1, 2, 2), activation_func='relu')
    cnn.addConvLayer(2, 1, pool_shape=1, activation_func='linear', is_last_layer=True)
    cnn.compileOutputFunctions()
    assert cnn.model.input_node.shape.tags == ('b', 'f', 'z', 'x', 'y')
    dense = cnn.predictDense(np.random.rand(2, 5, 20, 20).astype(np.float32))
    assert dense.shape[0] == 2 and dense.shape[1] == 5


@pytest.mark.parametrize('call, message', [
    (lambda c: c.addConvLayer(4, 3, pooling_mode='maxabs'), "'max' only"),
    (lambda c: c.compileOutputFunctions(use_label_prop=True), 'use_label_prop'),
    (lambda c: c.compileOutputFunctions(target='malis'), "target='malis'"),
])
def test_unsupported_v1_options_are_refused(call, message):
    cnn = MixedConvNN((12, 12), input_depth=1)
    cnn.addPerceptronLayer(2)
    with pytest.raises(ConfigError, match=message):
        call(cnn)


def test_training_needs_compiled_outputs_and_a_known_mode():
    cnn = MixedConvNN(4)
    cnn.addPerceptronLayer(4, activation_func='maxout 2')
    with pytest.raises(ConfigError, match="before the 'maxout 2' activation"):
        cnn.compileOutputFunctions()
    cnn = MixedConvNN(4)
    cnn.addPerceptronLayer(2, activation_func='linear')
    with pytest.raises(GraphError, match='compileOutputFunctions'):
        cnn.trainingStep(np.zeros((1, 4), np.float32), np.zeros(1, np.int16))
    cnn.compileOutputFunctions()
    with pytest.raises(ConfigError, match="mode='CG'"):
        cnn.trainingStep(np.zeros((1, 4), np.float32), np.zeros(1, np.int16), mode='CG')


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize('last', ['perceptron', 'conv'])
def test_nll_softmax_acts_before_the_last_activation(last):
    """v1's class probabilities are the softmax of the last layer's values before its
    activation ('abs' here), computed with that layer's (shared) parameters."""
    images, labels = toy_classes()
    cnn = MixedConvNN((12, 12), input_depth=1, name=f'abs_{last}')
    cnn.addConvLayer(4, 3, pool_shape=2, activation_func='abs')
    if last == 'perceptron':
        top = cnn.addPerceptronLayer(2, activation_func='abs')
    else:
        top = cnn.addConvLayer(2, 5, pool_shape=1, activation_func='abs', is_last_layer=True)
    cnn.compileOutputFunctions()
    cnn.setOptimizerParams(SGD={'LR': 0.05, 'momentum': 0.9})
    assert cnn.layers[-1] is top and top.activation_func == 'abs'
    hidden = cnn.layers[0](images)
    w, b = top.params['w'].detach().numpy().copy(), top.params['b'].detach().numpy().copy()
    if last == 'perceptron':
        logits = hidden.reshape(len(images), -1) @ w + b
    else:
        logits = np.einsum('nchw,fchw->nf', hidden, w)[:, :, None, None] + b[:, None, None]
    np.testing.assert_allclose(cnn.class_probabilities(images), softmax(logits), rtol=1e-4,
                               atol=1e-6)
    labels = labels if last == 'perceptron' else labels[:, None, None]
    first, _, _ = cnn.trainingStep(images, labels)
    for _ in range(30):
        loss, _, _ = cnn.trainingStep(images, labels)
    assert loss < first  # the shared parameters are trained
    assert not np.allclose(top.params['w'].detach().numpy(), w)


def test_autoencoder_layers_added_to_the_network_pretrain_a_classifier(tmp_path):
    data = np.random.default_rng(1).random((40, 16)).astype(np.float32)
    labels = (data[:, :8].sum(1) > data[:, 8:].sum(1)).astype(np.int16)
    ae = MixedConvNN(16, input_depth=None, name='ae')
    for n in (8, 4):
        ae.addPerceptronLayer(n_outputs=n, activation_func='tanh')
    ae.addTiedAutoencoderChain(n_layers=None, activation_func='tanh', input_noise=0.3,
                               add_layers_to_network=True)
    ae.compileOutputFunctions(target='regression')
    assert [layer.shape['f'] for layer in ae.layers] == [8, 4, 8, 16]
    ae.trainingStep(data, data)
    loss, reconstruction = ae.get_error(data, data)
    assert reconstruction.shape == data.shape
    ae.saveParameters(tmp_path / 'ae.param', layers=ae.layers[0:2])
    classifier = MixedConvNN(16, input_depth=None, name='classifier')
    for n in (8, 4):
        classifier.addPerceptronLayer(n_outputs=n, activation_func='tanh')
    classifier.addPerceptronLayer(n_outputs=2, activation_func='tanh')  # v1: any last activation
    classifier.compileOutputFunctions(target='nll')
    classifier.loadParameters(tmp_path / 'ae.param')
    for mine, theirs in zip(classifier.layers[:2], ae.layers[:2]):
        np.testing.assert_array_equal(mine.get_param_values()['w'], theirs.get_param_values()['w'])
    loss, error, classes = classifier.get_error(data, labels)
    assert np.isfinite(loss) and classes.shape == (40,)


def elman(x, w, b, h0, act=np.tanh):
    """v1's recurrence h_t = act(x_t W_in + h_(t-1) W_hid + b); W = [W_in; W_hid]."""
    h = np.broadcast_to(h0, (len(x), len(h0)))
    for t in range(x.shape[1]):
        h = act(np.concatenate([x[:, t], h], axis=1) @ w + b)
    return h


def test_recurrent_layer_is_v1s_recurrence_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 4, 3)).astype(np.float32)   # (batch, time, features)
    rnn = MixedConvNN((3,), input_depth=4, recurrent=True, name='rnn')
    layer = rnn.addRecurrentLayer(n_hid=5, activation_func='tanh')
    rnn.addPerceptronLayer(2, activation_func='linear')
    rnn.compileOutputFunctions()
    step, h0 = rnn.model['recurrence'], rnn.model['initial_state']
    h0.set_param_values({'value': rng.normal(size=5).astype(np.float32)})
    values = step.get_param_values()
    np.testing.assert_allclose(layer(x), elman(x, values['w'], values['b'], h0.get_value()),
                               rtol=1e-5, atol=1e-6)
    loss, error, classes = rnn.get_error(x, np.zeros(6, np.int16))
    assert classes.shape == (6,)
    rnn.saveParameters(tmp_path / 'rnn.param')
    other = MixedConvNN((3,), input_depth=4, recurrent=True, name='rnn2')
    other.addRecurrentLayer(n_hid=5)
    other.addPerceptronLayer(2, activation_func='linear')
    other.compileOutputFunctions()
    other.loadParameters(tmp_path / 'rnn.param', strict=True)
    np.testing.assert_allclose(other.class_probabilities(x), rnn.class_probabilities(x), rtol=1e-6)
    # a vector fed at each of `iterations` steps
    same = MixedConvNN((3,), recurrent=True, name='broadcast')
    layer = same.addRecurrentLayer(n_hid=5, activation_func='relu', iterations=3)
    step, h0 = same.model['recurrence'], same.model['initial_state']
    values = step.get_param_values()
    vectors = x[:, 0]
    np.testing.assert_allclose(layer(vectors), elman(np.repeat(vectors[:, None], 3, axis=1),
                                                     values['w'], values['b'], h0.get_value(),
                                                     act=lambda v: np.maximum(v, 0)),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match='recurrent=True'):
        MixedConvNN(3, input_depth=4)


def test_recurrent_weights_are_trained():
    x = np.random.default_rng(3).normal(size=(8, 4, 3)).astype(np.float32)
    rnn = MixedConvNN((3,), input_depth=4, recurrent=True, name='rnn_train')
    rnn.addRecurrentLayer(n_hid=5)
    rnn.addPerceptronLayer(2, activation_func='linear')
    rnn.compileOutputFunctions()
    step = rnn.model['recurrence']
    before = step.get_param_values()['w']
    rnn.trainingStep(x, (x[:, -1, 0] > 0).astype(np.int16))
    assert not np.allclose(step.get_param_values()['w'], before)


def weighted_net():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(30, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 30).astype(np.int16)
    cnn = MixedConvNN(6, name='weighted')
    cnn.addPerceptronLayer(3, activation_func='linear')
    cnn.compileOutputFunctions(use_class_weights=True, use_example_weights=True,
                               use_lazy_labels=True)
    return cnn, data, labels


def test_class_and_example_weights_and_lazy_label_masks():
    """The extra arrays follow the labels in v1's order: mask_class_labeled,
    mask_class_not_present, class_weights, example_weights."""
    cnn, data, labels = weighted_net()
    n = len(data)
    labeled, absent = np.ones((n, 3), np.int16), np.zeros((n, 3), np.int16)
    ones_c, ones_e = np.ones(3, np.float32), np.ones(n, np.float32)

    def loss(d=data, lab=labels, m1=labeled, m2=absent, cw=ones_c, ew=ones_e):
        return cnn.get_error(d, lab, m1, m2, cw, ew)[0]

    base = loss()
    assert np.isclose(loss(cw=2 * ones_c), 2 * base, rtol=1e-5)
    # class weight 0: only the other classes' examples count (normalised by all labels)
    keep = labels != 1
    subset = loss(data[keep], labels[keep], labeled[keep], absent[keep], ones_c, ones_e[keep])
    assert np.isclose(loss(cw=np.array([1, 0, 1], np.float32)), subset * keep.sum() / n, rtol=1e-5)
    # example weight 0 for the second half
    half = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(np.float32)
    first = loss(data[:n // 2], labels[:n // 2], labeled[:n // 2], absent[:n // 2], ones_c,
                 ones_e[:n // 2])
    assert np.isclose(loss(ew=half), first / 2, rtol=1e-5)
    # lazy labels: class 1 not labelled in any example -> its labels are ignored
    lazy = labeled.copy()
    lazy[:, 1] = 0
    assert np.isclose(loss(m1=lazy), subset, rtol=1e-5)  # normalised by the labels left
    absent_2 = loss(m2=np.tile(np.array([0, 0, 1], np.int16), (n, 1)))  # class 2 absent
    assert np.isfinite(absent_2) and not np.isclose(absent_2, base)
    first_loss, per_example, _ = cnn.trainingStep(data, labels, labeled, absent, ones_c, ones_e)
    assert per_example.shape == (n, 1)
    with pytest.raises(ConfigError, match='mask_class_labeled'):
        cnn.trainingStep(data, labels)
