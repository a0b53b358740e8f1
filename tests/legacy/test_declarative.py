"""ELEKTRONN v1 configs: networks from v1 keys, translated settings, elektronn2-train runs them."""
import logging

import h5py
import numpy as np
import pytest

from elektronn2.errors import ConfigError
from elektronn2.legacy.declarative import V1_KEYS, network_from_v1
from elektronn2.training import cli
from elektronn2.training.experiment import ExperimentConfig, build_data, build_model

MNIST_V1 = """
    save_path = '~/CNN_Training/2D/'
    save_name = 'MNIST_v1'
    save_path += save_name + '/'
    activation_func = 'relu'
    batch_size = 20
    dropout_rates = [0, 0.2, 0.5]
    n_dim = 2
    desired_input = 27
    filters = [3, 3]
    pool = [2, 2]
    nof_filters = [8, 16]
    MLP_layers = [50]
    target = 'nll'
    mode = 'img-scalar'
    n_lab = None
    background_processes = True
    data_class_name = 'MNISTData'
    data_load_kwargs = dict(path=None, convert2image=True, warp_on=False, shift_augment=True,
                            center=True)
    data_batch_kwargs = dict()
    n_steps = 3
    max_runtime = 600
    history_freq = [2]
    monitor_batch_size = 20
    weight_decay = False
    optimizer = 'SGD'
    LR_decay = 0.99
    LR_schedule = None
    SGD_params = dict(LR=0.02, momentum=0.9)
    plot_on = True
    print_status = True
"""


def test_v1_keys_cover_the_network_and_training_keys():
    assert {'n_dim', 'filters', 'pool', 'nof_filters', 'desired_input', 'MLP_layers',
            'activation_func', 'dropout_rates', 'target', 'n_lab', 'MFP', 'SGD_params',
            'LR_decay', 'data_class_name', 'd_files'} <= V1_KEYS


def test_v1_mnist_config_is_translated(v1_config, caplog):
    caplog.set_level(logging.INFO, logger='elektronn2')
    exp = ExperimentConfig(v1_config(MNIST_V1))
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if 'unknown setting' in m]
    assert any('plot_on has no effect' in m for m in messages)
    assert exp.optimiser == 'SGD' and exp.optimiser_params == {'lr': 0.02, 'mom': 0.9, 'wd': 0.0}
    assert exp.schedules == {'lr': {'dec': 0.99}}
    assert exp.history_freq == 2 and exp.background_processes == 2
    assert exp.data_class == 'MNISTData' and 'center' not in exp.data_init_kwargs
    assert exp.save_path.endswith('CNN_Training/2D') and exp.save_name == 'MNIST_v1'


def test_v1_mnist_network(v1_config, mnist_data):
    exp = ExperimentConfig(v1_config(MNIST_V1))
    model = build_model(exp)
    assert model.input_node.shape.shape == (None, 1, 26, 26)  # 27 snapped to a valid size
    assert model.input_node.shape.tags == ('b', 'f', 'x', 'y')
    assert model.prediction_node.shape.shape == (None, 10)
    assert model.dropout_rates == [0.0, 0.2, 0.5, 0.0]  # the last layer never has dropout
    x, y = build_data(exp, model).getbatch(4)
    assert np.isfinite(model.loss(x, y))


def test_elektronn2_train_runs_a_v1_config(v1_config, mnist_data, tmp_path):
    config = v1_config(MNIST_V1.replace("background_processes = True",
                                        "background_processes = 0"))
    assert cli.main([str(config), '--gpu', 'none', '--save-path', str(tmp_path / 'runs')]) == 0
    assert (tmp_path / 'runs' / 'MNIST_v1' / 'model-final.mdl').exists()


def test_v1_3d_network_uses_zxy_order_and_channels_of_the_data(tmp_path):
    with h5py.File(tmp_path / 'raw.h5', 'w') as f:
        f['raw'] = np.zeros((2, 8, 40, 40), np.uint8)  # 2 channels, z, y, x
    net = network_from_v1(dict(
        n_dim=3, desired_input=[25, 25, 5], filters=[[4, 4, 1], [3, 3, 3]],
        pool=[[2, 2, 1], [1, 1, 1]], nof_filters=[4, 6], MFP=[True, False], n_lab=3,
        activation_func=['tanh', 'relu'], data_path=str(tmp_path), d_files=[('raw.h5', 'raw')]))
    assert net.tags == 'b,f,z,x,y' and net.input_shape[0] == 2
    assert net.layers[0].filter_shape == (1, 4, 4) and net.layers[0].pool_shape == (1, 2, 2)
    assert net.layers[0].mfp and not net.layers[1].mfp
    model = net.create_model()
    assert model.prediction_node.shape['f'] == 3
    assert model.input_node.shape.spatial_shape[0] == 5


def test_regression_and_vector_networks():
    net = network_from_v1(dict(mode='vect-scalar', desired_input=12, MLP_layers=[7],
                               target='regression', n_lab=2))
    model = net.create_model()
    assert model.input_node.shape.shape == (None, 12)
    x, y = np.random.rand(3, 12).astype(np.float32), np.random.rand(3, 2).astype(np.float32)
    assert np.isfinite(model.loss(x, y))


@pytest.mark.parametrize('setting, culprit', [
    ("rnn_layer_kwargs = dict(n_hid=10)", 'rnn_layer_kwargs'),
    ("param_file = 'old.param'", 'param_file'),
    ("optimizer = 'CG'", "optimizer='CG'"),
    ("target = 'malis'", "target='malis'"),
    ("pooling_mode = 'maxabs'", 'maxabs'),
    ("filters = [3]", 'one entry per conv layer'),
])
def test_unsupported_v1_settings_name_the_culprit(v1_config, setting, culprit):
    with pytest.raises(ConfigError, match=culprit) as info:
        ExperimentConfig(v1_config(MNIST_V1 + '    ' + setting + '\n'))
    assert 'v1_config.py' in str(info.value)


def test_v1_image_volumes_become_a_batch_creator(v1_config):
    exp = ExperimentConfig(v1_config("""
        n_dim = 3
        desired_input = [37, 37, 5]
        filters = [[4, 4, 1], [3, 3, 3]]
        pool = [[2, 2, 1], [1, 1, 1]]
        nof_filters = [4, 6]
        n_lab = 2
        data_path = '~/data/'
        label_path = '~/data/'
        d_files = [('raw_%i.h5' % i, 'raw') for i in range(3)]
        l_files = [('barrier_%i.h5' % i, 'lab') for i in range(3)]
        valid_cubes = [2]
        anisotropic_data = True
        warp_on = 0.7
        flip_data = False
        grey_augment_channels = [0]
        LR_schedule = [(1000, 1e-3)]
        optimizer = 'Adam'
        Adam_params = dict(LR=5e-4, beta2=0.99)
    """))
    assert exp.data_class == 'BatchCreatorImage'
    assert exp.data_init_kwargs['aniso_factor'] == 2 and exp.data_init_kwargs['valid_cubes'] == [2]
    assert exp.data_batch_args == {'grey_augment_channels': [0], 'warp': 0.7,
                                   'warp_args': {'flips': False, 'swaps': False}}
    assert exp.optimiser == 'Adam' and exp.optimiser_params == {'lr': 5e-4, 'beta2': 0.99}
    assert exp.schedules == {'lr': {'updates': [(1000, 1e-3)]}}


V1_3D = """
    n_dim = 3
    desired_input = [25, 25, 9]        # x, y, z
    filters = [[4, 4, 1], [3, 3, 3]]
    pool = [[2, 2, 1], [1, 1, 1]]
    nof_filters = [4, 6]
    n_lab = 2
    batch_size = 2
    data_path = {path!r}
    label_path = {path!r}
    d_files = [({name!r}, 'raw')]
    l_files = [({name!r}, 'barrier')]
    warp_on = False
"""


def test_v1_volumes_in_xyz_order_are_read_as_zyx(v1_config, barrier_file, tmp_path):
    """Real EM volumes (gala, z, y, x) stored transposed as v1's (x, y, z): with
    zchxy_order = False they give the same cubes and batches as the z, y, x file."""
    with h5py.File(barrier_file, 'r') as f:
        raw, barrier = f['raw'][()], f['barrier'][()]
    with h5py.File(tmp_path / 'xyz.h5', 'w') as f:
        f['raw'], f['barrier'] = raw.transpose(2, 1, 0), barrier.transpose(2, 1, 0)
    zyx = ExperimentConfig(v1_config(V1_3D.format(path=str(barrier_file.parent),
                                                  name=barrier_file.name), 'zyx.py'))
    xyz = ExperimentConfig(v1_config(V1_3D.format(path=str(tmp_path), name='xyz.h5')
                                     + '    zchxy_order = False\n', 'xyz.py'))
    assert xyz.data_init_kwargs['zxy'] is False and 'zxy' not in zyx.data_init_kwargs
    model = build_model(zyx)
    batches = []
    for exp in (zyx, xyz):
        data = build_data(exp, model)
        assert data.cubes[0].image_shape == raw.shape == (50, 100, 200)
        data.reseed(7)
        batches.append(data.getbatch(2, **exp.data_batch_args))
    for mine, theirs in zip(*batches):
        np.testing.assert_array_equal(mine, theirs)
    assert batches[0][0].std() > 0


def test_v1_zchxy_order_true_refuses_channels_after_z(v1_config, tmp_path):
    with h5py.File(tmp_path / 'zcxy.h5', 'w') as f:
        f['raw'] = np.zeros((8, 2, 30, 30), np.uint8)
        f['barrier'] = np.zeros((8, 30, 30), np.uint8)
    text = V1_3D.format(path=str(tmp_path), name='zcxy.h5') + '    zchxy_order = True\n'
    with pytest.raises(ConfigError, match=r'\(z, ch, x, y\)'):
        ExperimentConfig(v1_config(text))
