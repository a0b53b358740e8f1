"""Model surgery through descriptors: modelload / rebuild_model options."""
import logging

import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.errors import ConfigError, GraphError, ModelFileError


def trained_strided_model(bn=False):
    inp = nm.Input((None, 1, 21, 25), 'b,f,x,y', name='raw')
    c1 = nm.Conv(inp, 3, 4, 2, batch_normalisation='train' if bn else False)
    c2 = nm.Conv(c1, 4, 4, 2)
    probs = nm.Softmax(nm.Conv(c2, 2, 1, activation_func='lin'))
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, probs])
    rng = np.random.default_rng(1)
    for _ in range(5):
        model.trainingstep(rng.random((4, 1, 21, 25), dtype=np.float32),
                           rng.integers(0, 2, (4, 1, 3, 4)))
    return model


def test_mfp_model_with_larger_patch_predicts_like_the_original(tmp_path, caplog):
    model = trained_strided_model()
    raw = np.random.rand(1, 60, 71).astype(np.float32)
    expected = model.predict_dense(raw)
    model.save(tmp_path / 'strided.mdl')
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        fast = nm.modelload(tmp_path / 'strided.mdl', override_mfp_to_active=True,
                            imposed_patch_size=(40, 50))
    assert 'nearest valid size (40, 48)' in caplog.text
    assert fast.input_node.shape.spatial_shape == (40, 48)
    assert type(fast.prediction_node).__name__ == 'FragmentsToDense'
    assert fast.prediction_node.shape.strides == (1, 1)
    assert [n.name for n in fast.prediction_ext] == ['loss', fast.prediction_node.name]
    np.testing.assert_allclose(fast.predict_dense(raw), expected, rtol=1e-5, atol=1e-6)


def test_imposed_patch_size_and_batch_size():
    model = trained_strided_model()
    bigger = nm.rebuild_model(model, imposed_patch_size=(45, 49), imposed_batch_size=2)
    assert bigger.input_node.shape.shape == (2, 1, 45, 49)
    assert bigger.prediction_node.shape.spatial_shape == (9, 10)
    assert bigger.target_node.shape.shape == (2, 1, 9, 10)
    x = np.random.rand(2, 1, 45, 49).astype(np.float32)
    assert bigger.predict(x).shape == (2, 2, 9, 10)
    with pytest.raises(Exception, match='entries'):
        nm.rebuild_model(model, imposed_patch_size=(45,))


@pytest.mark.parametrize('mode', ['remove', 'predict', 'const'])
def test_replace_bn(mode):
    model = trained_strided_model(bn=True)
    raw = np.random.rand(1, 40, 44).astype(np.float32)
    expected = model.predict_dense(raw)
    new = nm.rebuild_model(model, replace_bn=mode)
    conv = new['conv']
    np.testing.assert_allclose(new.predict_dense(raw), expected, rtol=1e-4, atol=1e-5)
    if mode == 'remove':
        assert conv.batch_normalisation is False and set(conv.params) == {'w', 'b'}
    else:
        assert conv.batch_normalisation == 'predict'
        assert conv.params['gamma'].requires_grad == (mode == 'predict')
        assert not new.batch_normalisation_active
    with pytest.raises(ConfigError, match="replace_bn='fold'"):
        nm.rebuild_model(model, replace_bn='fold')


def test_locking_and_constant_weights():
    model = trained_strided_model()
    locked = nm.rebuild_model(model, lock_trainable_params=['conv', 'conv1'])
    trainable = {k for k, p in locked.all_params().items() if p.requires_grad}
    assert trainable == {'conv2.w', 'conv2.b'}
    before = locked['conv'].get_param_values()['w']
    locked.trainingstep(np.random.rand(2, 1, 21, 25).astype(np.float32), np.zeros((2, 1, 3, 4)))
    np.testing.assert_array_equal(locked['conv'].get_param_values()['w'], before)
    frozen = nm.rebuild_model(model, make_weights_constant=True)
    assert not any(p.requires_grad for p in frozen.all_params().values())
    with pytest.raises(GraphError, match="no trainable"):
        frozen.trainingstep(np.random.rand(2, 1, 21, 25).astype(np.float32), np.zeros((2, 1, 3, 4)))
    with pytest.raises(GraphError, match='unknown nodes'):
        nm.rebuild_model(model, lock_trainable_params=['nope'])


def test_surgery_needs_designations():
    inp = nm.Input((None, 1, 8), 'b,f,x', name='raw')
    nm.Conv(inp, 2, 3)
    model = inp.model
    with pytest.raises(ModelFileError, match='Input node'):
        nm.rebuild_model(model, imposed_patch_size=(10,))
    with pytest.raises(ModelFileError, match='prediction_node'):
        nm.rebuild_model(model, override_mfp_to_active=True)


def test_failed_rebuild_leaves_current_model():
    model = trained_strided_model()
    n_models = len(nm.model_manager.models)
    with pytest.raises(GraphError):
        nm.rebuild_model(model, lock_trainable_params=['nope'])
    with pytest.raises(ConfigError):
        nm.rebuild_model(model, imposed_patch_size=(40, 40), replace_bn='fold')
    assert nm.model_manager.getmodel() is model and len(nm.model_manager.models) == n_models
