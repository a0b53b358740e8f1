"""Known answers of ELEKTRONN2's example networks (shapes, strides, fov)."""
import numpy as np

import elektronn2.neuromancer as nm


def conv_stack(inp, layers):
    out = inp
    for n_f, filt, pool in layers:
        out = nm.Conv(out, n_f, filt, pool)
    out = nm.Conv(out, 2, (1, 1, 1), (1, 1, 1), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, errors, probs])
    return model


NEURO3D = [(20, (1, 6, 6), (1, 2, 2)), (30, (1, 5, 5), (1, 2, 2)), (40, (1, 5, 5), (1, 1, 1)),
           (80, (4, 4, 4), (2, 1, 1)), (100, (3, 4, 4), (1, 1, 1)), (100, (3, 4, 4), (1, 1, 1)),
           (150, (2, 4, 4), (1, 1, 1)), (200, (1, 4, 4), (1, 1, 1)), (200, (1, 4, 4), (1, 1, 1)),
           (200, (1, 1, 1), (1, 1, 1))]
NEURO3D_LITE = [(20, (1, 4, 4), (1, 2, 2)), (40, (3, 3, 3), (1, 2, 2)), (150, (2, 4, 4), (2, 1, 1)),
                (200, (1, 3, 3), (1, 1, 1)), (200, (1, 3, 3), (1, 1, 1)), (200, (1, 1, 1), (1, 1, 1))]


def test_neuro3d():
    inp = nm.Input((None, 1, 23, 185, 185), 'b,f,z,x,y', name='raw')
    model = conv_stack(inp, NEURO3D)
    sh = model.prediction_node.shape
    assert sh.spatial_shape == (5, 21, 21)
    assert sh.strides == (2, 4, 4)
    assert sh.fov == (15, 105, 105)
    assert sh.offsets == (7, 52, 52)
    assert model.target_node.shape.shape == (None, 1, 5, 21, 21)
    # about 20 GMAC per forward pass (the figure quoted for this net)
    assert 19e9 < model.loss_node.all_computational_cost < 21e9


def test_neuro3d_lite_trains_a_step():
    inp = nm.Input((None, 1, 11, 155, 155), 'b,f,z,x,y', name='raw')
    model = conv_stack(inp, NEURO3D_LITE)
    sh = model.prediction_node.shape
    assert sh.spatial_shape == (4, 30, 30) and sh.fov == (5, 39, 39) and sh.strides == (2, 4, 4)
    x = np.random.rand(1, 1, 11, 155, 155).astype(np.float32)
    y = np.random.randint(0, 2, (1, 1, 4, 30, 30)).astype(np.int16)
    loss, t, _ = model.trainingstep(x, y, optimiser='Adam')
    assert np.isfinite(loss)
    out, _ = model.test_run_prediction()
    assert out.shape == (1, 2, 4, 30, 30)


def test_mnist_cnn_flattens_to_576():
    inp = nm.Input((None, 1, 26, 26), 'b,f,y,x', name='raw')
    out = nm.Conv(inp, 12, (3, 3), (2, 2), batch_normalisation='train')
    out = nm.Conv(out, 36, (3, 3), (2, 2), batch_normalisation='train')
    out = nm.Conv(out, 64, (3, 3), (1, 1), batch_normalisation='train')
    assert out.shape.spatial_shape == (3, 3)
    dot = nm.Perceptron(out, 200, flatten=True)
    assert dot.params['w'].shape == (576, 200)
