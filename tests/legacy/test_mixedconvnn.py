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
    data = np.random.default_rng(0).random((32, 20)).astype(np.float32)
    loss, _, _ = ae.trainingStep(data, data, mode='Adam')
    rms_loss, rms, reconstruction = ae.get_error(data, data)
    assert np.isclose(rms, np.sqrt(rms_loss)) and reconstruction.shape == (32, 20)


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
    (lambda c: c.compileOutputFunctions(use_class_weights=True), 'use_class_weights'),
    (lambda c: c.compileOutputFunctions(target='malis'), "target='malis'"),
])
def test_unsupported_v1_options_are_refused(call, message):
    cnn = MixedConvNN((12, 12), input_depth=1)
    cnn.addPerceptronLayer(2)
    with pytest.raises(ConfigError, match=message):
        call(cnn)


def test_training_needs_compiled_outputs_and_a_known_mode():
    cnn = MixedConvNN(4)
    cnn.addPerceptronLayer(2, activation_func='tanh')
    with pytest.raises(ConfigError, match="needs activation_func='linear'"):
        cnn.compileOutputFunctions()
    cnn = MixedConvNN(4)
    cnn.addPerceptronLayer(2, activation_func='linear')
    with pytest.raises(GraphError, match='compileOutputFunctions'):
        cnn.trainingStep(np.zeros((1, 4), np.float32), np.zeros(1, np.int16))
    cnn.compileOutputFunctions()
    with pytest.raises(ConfigError, match="mode='CG'"):
        cnn.trainingStep(np.zeros((1, 4), np.float32), np.zeros(1, np.int16), mode='CG')
