"""What ELEKTRONN2's example configs rely on (issue 22), each checked with a config or net
of our own: older config keys, node arguments and data layouts of the originals."""
import importlib.util
import logging
import sys
import textwrap

import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.data.mnist import read_idx
from elektronn2.errors import ConfigError, ShapeError
from elektronn2.training.experiment import ExperimentConfig, build_model

MINIMAL_MODEL = '''
def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 4), 'b,f', name='raw')
    out = nm.Softmax(nm.Perceptron(inp, 2, activation_func='lin'))
    target = nm.Input_like(out, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(out, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=out)
    return model
'''


def _config(tmp_path, body: str):
    path = tmp_path / 'e2.py'
    path.write_text(textwrap.dedent(body) + MINIMAL_MODEL)
    return path


def test_per_variable_schedule_settings_become_schedules(tmp_path, caplog):
    """3d_cnn.py's ``lr_schedule``/``mom_schedule`` (None there) are settings, not unknown
    names; a dict is the schedule of that variable, unless ``schedules`` sets it."""
    path = _config(tmp_path, """
        data_class = 'MNISTData'
        lr_schedule = {'updates': [(3, 1e-4)]}
        mom_schedule = None
        wd_schedule = {'dec': 0.5}
        schedules = {'wd': {'dec': 0.9}}
    """)
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        exp = ExperimentConfig(path)
    assert exp.schedules == {'lr': {'updates': [(3, 1e-4)]}, 'wd': {'dec': 0.9}}
    assert [r.getMessage() for r in caplog.records] == [
        "Config e2.py: wd_schedule is ignored; schedules['wd'] is set"]


def _one_vs_all_digits(data_dir, n: int = 64):
    """(images (n, 784) in [0, 1], targets (n, 10): 1 where the digit is k) of real MNIST."""
    images = read_idx(data_dir / 'mnist' / 't10k-images-idx3-ubyte.gz')[:n]
    labels = read_idx(data_dir / 'mnist' / 't10k-labels-idx1-ubyte.gz')[:n]
    return (images.reshape(n, -1) / 255).astype(np.float32), \
        (labels[:, None] == np.arange(10)).astype(np.int16)


def test_value_node_takes_the_shape_of_a_value_that_does_not_fit(data_dir, caplog):
    """gru.py/lstm.py: ``ValueNode((116,), 'f', value=(0.2, 1.8))`` as class weights of 58
    two-class softmax groups; as in ELEKTRONN2 the value's shape wins, and the weights are
    shared by the groups (the same loss as the per-feature weights repeated)."""
    x, y = _one_vs_all_digits(data_dir)
    inp = nm.Input((None, 784), 'b,f', name='raw')
    probs = nm.Softmax(nm.Perceptron(inp, 20, activation_func='lin'), n_indep=10)
    target = nm.Input((None, 10), 'b,f', dtype='int16', name='target')
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        shared = nm.ValueNode((20,), 'f', value=(0.2, 1.8), name='shared')
    assert shared.shape.shape == (2,) and 'shared' in caplog.text
    repeated = nm.ValueNode((20,), 'f', value=[0.2, 1.8] * 10, name='repeated')
    assert repeated.shape.shape == (20,)
    loss_shared = nm.MultinoulliNLL(probs, target, target_is_sparse=True, class_weights=shared)
    loss_repeated = nm.MultinoulliNLL(probs, target, target_is_sparse=True,
                                      class_weights=repeated)
    a, b = loss_shared(x, y), loss_repeated(x, y)
    assert np.isfinite(a).all() and a.shape == (64, 1)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_value_node_refuses_a_value_with_other_axes():
    with pytest.raises(ShapeError, match='does not broadcast'):
        nm.ValueNode((4, 3), 'b,f', value=np.ones(5))


def test_sparse_target_of_softmax_groups_has_a_label_per_group(data_dir):
    """gru.py/lstm.py/piano_perceptron.py declare the target of 58 two-class softmax groups as
    ``Input_like(out, override_f=1)`` and feed one label per group (b, 58): the target has
    'f' = n_indep. A target with another 'f' is refused, naming the axes it needs."""
    x, y = _one_vs_all_digits(data_dir)
    inp = nm.Input((None, 784), 'b,f', name='raw')
    probs = nm.Softmax(nm.Perceptron(inp, 20, activation_func='lin'), n_indep=10)
    target = nm.Input_like(probs, override_f=1, name='target')
    assert target.shape.shape == (None, 10)
    nll = nm.MultinoulliNLL(probs, target, target_is_sparse=True)
    assert np.isfinite(nll(x, y)).all()
    wrong = nm.Input((None, 1), 'b,f', name='wrong')
    with pytest.raises(ShapeError, match=r"expected 2 axes \(b,f\) with 'f'=10"):
        nm.MultinoulliNLL(probs, wrong, target_is_sparse=True)


def test_model_indexes_its_nodes_by_name_and_position():
    """docs/examples.rst: the model has a dict interface to its nodes and shows their
    names; as ELEKTRONN2's GraphManager, ints and slices index the nodes in order."""
    inp = nm.Input((None, 1, 26, 26), 'b,f,y,x', name='raw')
    conv = nm.Conv(inp, 4, (3, 3), (2, 2))
    probs = nm.Softmax(nm.Perceptron(conv, 10, activation_func='lin', flatten=True))
    model = nm.model_manager.getmodel()
    assert model['raw'] is inp and model[1] is conv and model[-1] is probs
    assert list(model) == list(model.nodes.values()) and model[:2] == [inp, conv]
    assert 'softmax' in model and 'nll' not in model
    assert "['raw', 'conv', 'dot', 'softmax']" in repr(model)


THEANO_MODEL = '''
def create_model():
    import theano.tensor as T
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 4), 'b,f', name='raw')
    out = nm.Softmax(nm.Perceptron(inp, 2, activation_func='lin'))
    target = nm.Input_like(out, override_f=1, name='target')
    nll = nm.MultinoulliNLL(out, target, target_is_sparse=True)
    debug = [nm.ApplyFunc(nll, T.mean, name='mnll'), nm.ApplyFunc(out, T.max, kwargs={'axis': 1})]
    if _USE:
        debug.append(nm.ApplyFunc(out, getattr(T.nnet, _USE)))
    loss = nm.AggregateLoss(nll)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=out, debug_outputs=debug)
    return model
'''


@pytest.mark.skipif(importlib.util.find_spec('theano') is not None, reason='Theano is installed')
@pytest.mark.parametrize('use', [None, 'sigmoid', 'conv3d'])
def test_configs_may_import_theano(tmp_path, use):
    """unet_3d.py imports theano.tensor in create_model() without using it; U-net3d.py and
    unet_2d.py monitor ``ApplyFunc(loss_pix, T.mean)``: Theano functions with a torch
    equivalent are that function (reductions without an axis reduce all axes, as Theano's),
    any other gets a ConfigError naming what was used."""
    path = tmp_path / 'theano_config.py'
    path.write_text(f"import theano\ndata_class = 'MNISTData'\n_USE = {use!r}\n" + THEANO_MODEL)
    exp = ExperimentConfig(path)
    if use == 'conv3d':
        with pytest.raises(ConfigError, match=r'theano\.tensor\.nnet\.conv3d.*Theano is not installed'):
            build_model(exp)
    else:
        model = build_model(exp)
        mnll, amax = model['mnll'], model.debug_outputs[1]
        assert mnll.shape.shape == () and amax.shape.shape == (None,)
        x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        y = np.array([[0], [1], [1], [0], [1]], dtype=np.int16)
        outputs = [model.prediction_node, model['nll'], mnll, amax]
        probs, pix, mean, top = (np.asarray(v) for v in model.function(outputs).numpy(x, y))
        np.testing.assert_allclose(mean, pix.mean(), rtol=1e-6)
        np.testing.assert_allclose(top, probs.max(axis=1), rtol=1e-6)
    assert not [m for m in sys.modules if m.split('.')[0] == 'theano']


def test_feature_names_can_be_set():
    """U-net2d.py/U-net3d.py name the features of their prediction: ``pred.feature_names =
    [...]``, one string per feature."""
    inp = nm.Input((None, 1, 12, 12), 'b,f,x,y', name='raw')
    a = nm.Softmax(nm.Conv(inp, 2, (3, 3), activation_func='lin', name='a'))
    b = nm.Softmax(nm.Conv(inp, 3, (3, 3), activation_func='lin', name='b'))
    pred = nm.Concat([a, b], axis='f')
    assert pred.feature_names == [f"{pred.name}:{i}" for i in range(5)]
    pred.feature_names = ['a_bg', 'a_fg', 'b_bg', 'b_1', 'b_2']
    assert pred.feature_names == ['a_bg', 'a_fg', 'b_bg', 'b_1', 'b_2']
    with pytest.raises(ShapeError, match='5 strings'):
        pred.feature_names = ['too', 'few']


def test_adversarial_example_is_refused_with_the_reason(tmp_path):
    """examples/adversarial.py needs code ELEKTRONN2 never released (nm.advmerge, trainer
    keys and nodes the example does not define): both say so instead of failing later."""
    with pytest.raises(AttributeError, match='advmerge.*not part of .*released'):
        nm.advmerge
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
        nm.nonsense
    path = tmp_path / 'adversarial.py'
    path.write_text("data_class = 'MNISTData'\nnetwork_arch = {'adversarial': {'permut_steps': 10}}\n"
                    "def create_model():\n    pass\n")
    with pytest.raises(ConfigError, match=r"adversarial.py: network_arch=.*not supported"):
        ExperimentConfig(path)
    path.write_text("data_class = 'MNISTData'\nnetwork_arch = {}\ndef create_model():\n    pass\n")
    assert ExperimentConfig(path).network_arch == {}
