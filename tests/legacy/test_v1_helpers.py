"""v1's helpers: createNetfromParams, CNNCalculator, makeGabor, the introspection names and
the v1 import paths."""
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import elektronn2.legacy as legacy
from elektronn2.errors import ConfigError, ModelFileError
from elektronn2.legacy import (
    CNNCalculator,
    MixedConvNN,
    createNetfromParams,
    embedMatricesInGray,
    makeGabor,
    plotFilters,
    showActivations,
    showActivityHistogram,
    showParamHistogram,
)
from elektronn2.legacy.v1paths import V1_MODULES
from elektronn2.utils.cnncalculator import cnncalculator


def conv_net(name='convnet'):
    """An all-conv 'nll' net on 12 x 12 images with 1 x 1 outputs, a 'tanh' last layer."""
    cnn = MixedConvNN((12, 12), input_depth=2, name=name)
    cnn.addConvLayer(3, 3, pool_shape=2, activation_func='relu')      # -> 5 x 5
    cnn.addConvLayer(4, 5, pool_shape=1, activation_func='tanh', is_last_layer=True)
    cnn.compileOutputFunctions()
    return cnn


def test_create_net_from_params_rebuilds_the_network(tmp_path):
    cnn = conv_net()
    images = np.random.default_rng(0).random((5, 2, 12, 12)).astype(np.float32)
    cnn.saveParameters(tmp_path / 'net.param')
    net = createNetfromParams(tmp_path / 'net.param', patch_size=(13, 13), batch_size=None,
                              activation_func=['relu', 'tanh'])
    assert net.model.input_node.shape.shape == (None, 2, 12, 12)  # 13 snapped to a valid size
    assert [layer.pool_shape for layer in net.layers] == [(2, 2), (1, 1)]
    np.testing.assert_allclose(net.class_probabilities(images), cnn.class_probabilities(images),
                               rtol=1e-5, atol=1e-7)
    net.get_error(images, np.zeros((5, 1, 1), np.int16))
    # v1's default: 'tanh' everywhere; a file without recorded poolings needs them given
    bare = {f"{i}.{k}": v for i, layer in enumerate(cnn.layers)
            for k, v in layer.get_param_values().items()}
    save_file(bare, str(tmp_path / 'bare.param'))
    with pytest.raises(ModelFileError, match='poolings'):
        createNetfromParams(tmp_path / 'bare.param', (12, 12))
    net = createNetfromParams(tmp_path / 'bare.param', (12, 12), poolings=[2, 1])
    assert [layer.activation_func for layer in net.layers] == ['tanh', 'tanh']
    with pytest.raises(ModelFileError, match='Cannot read'):
        createNetfromParams(tmp_path / 'missing.param', (12, 12))


def test_cnn_calculator_takes_v1s_argument_names():
    mine = CNNCalculator([[3, 3], [3, 3]], [2, 2], desired_input=27, MFP=[False, False], n_dim=2)
    assert mine == cnncalculator([[3, 3], [3, 3]], [2, 2], desired_patch_size=27, ndim=2)
    assert mine.patch_size == (26, 26) and mine.output_size == (5, 5)


def test_make_gabor():
    g0 = makeGabor(0, 2, 7, 0)
    assert g0.shape == (7, 7) and g0.dtype == np.float32 and abs(g0.sum()) < 1e-5
    np.testing.assert_allclose(g0, g0[:, ::-1], atol=1e-7)  # stripes across the rows
    np.testing.assert_allclose(makeGabor(90, 2, 7, 0), g0.T, atol=1e-6)
    assert not np.allclose(makeGabor(0, 2, 7, 45), g0)      # the phase offset
    assert makeGabor(30, 1, 4, 10).shape == (4, 4)
    with pytest.raises(ConfigError, match='filter_angle'):
        makeGabor(360, 1, 5, 0)


def test_embed_matrices_in_gray():
    mat = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3) + 1
    image = embedMatricesInGray(mat, 1)
    assert image.ndim == 2 and image.dtype == np.float32
    assert sorted(image[image != 0]) == sorted(mat.ravel())  # values kept, zeros between
    normalised = embedMatricesInGray(mat, normalize=True)
    assert normalised.min() == 0 and np.isclose(normalised.max(), 1)
    assert np.count_nonzero(np.isclose(normalised, 1)) == 5  # each matrix's maximum


def test_introspection_names_write_plots(tmp_path):
    cnn = conv_net('plots')
    images = np.random.default_rng(1).random((3, 2, 12, 12)).astype(np.float32)
    cnn.compileDebugFunctions()  # v1 needed it first; here it does nothing
    assert plotFilters(cnn, 0, channel=1, savename=tmp_path / 'f.png').exists()
    assert showParamHistogram(cnn, onlyW=False, savename=tmp_path / 'p.png').exists()
    assert showActivityHistogram(cnn, images, savename=tmp_path / 'a.png').exists()
    maps = showActivations(cnn, images, out_dir=tmp_path)
    assert len(maps) == 2 and all(m.ndim == 2 for m in maps)
    assert (tmp_path / f'activations_{cnn.layers[0].name}.png').exists()


def test_every_v1_path_name_exists():
    for path, (home, names) in V1_MODULES.items():
        for name in names:
            assert getattr(home, name) is getattr(legacy, name), (path, name)


V1_IMPORTS = """
import numpy as np
from elektronn.training.traindata import MNISTData
from elektronn.net.convnet import MixedConvNN
from elektronn.net.introspection import embedMatricesInGray
from elektronn.net.gaborfilters import makeGabor
from elektronn.net.netcreation import createNetfromParams
from elektronn.net.netutils import CNNCalculator
import elektronn2.legacy as legacy
assert MixedConvNN is legacy.MixedConvNN and MNISTData is legacy.MNISTData
data = MNISTData(path=None, convert2image=True, shift_augment=False)
cnn = MixedConvNN((28, 28), input_depth=1)
cnn.addConvLayer(4, 5, pool_shape=2, activation_func='abs')
cnn.addPerceptronLayer(10, activation_func='abs')
cnn.compileOutputFunctions()
cnn.setOptimizerParams(SGD={'LR': 1e-2, 'momentum': 0.9}, weight_decay=0)
for i in range(3):
    d, l = data.getbatch(20)
    loss, loss_instance, time_per_step = cnn.trainingStep(d, l, mode='SGD')
print('v1 imports ran', embedMatricesInGray(d[:, 0], 1).shape)
"""


def test_a_top_level_elektronn_package_makes_v1_imports_run(tmp_path, mnist_data):
    """A two-line ``elektronn`` package calling v1paths.install serves v1's import lines."""
    package = tmp_path / 'elektronn'
    package.mkdir()
    (package / '__init__.py').write_text("from elektronn2.legacy.v1paths import install\n"
                                         "install(__name__)\n")
    (tmp_path / 'script.py').write_text(V1_IMPORTS)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), ELEKTRONN2_DATA=str(mnist_data.parent))
    result = subprocess.run([sys.executable, str(tmp_path / 'script.py')], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'v1 imports ran' in result.stdout
