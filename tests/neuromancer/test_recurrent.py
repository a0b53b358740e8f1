"""GRU / LSTM steps iterated by Scan learn a sequence task; the one-step function."""
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.errors import GraphError, ShapeError


def running_sum_task(n=64, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    seq = rng.normal(size=(n, steps, 1)).astype(np.float32)
    return seq, np.cumsum(seq, axis=1)[:, -1].astype(np.float32) / 2


def build_rnn(cell, steps=6, n_hidden=8):
    seq = nm.Input((None, steps, 1), 'b,r,f', name='seq')
    x0 = nm.split(seq, 'r', index=1, strip_singleton_dims=True)[0]
    width = n_hidden * (2 if cell == 'lstm' else 1)
    memory = nm.InitialState_like(x0, width, name='h0')
    if cell == 'gru':
        step = nm.GRU(x0, memory, n_hidden)
        hidden = step
    else:
        step = nm.LSTM(x0, memory, n_hidden)
        hidden = nm.split(step, 'f', n_out=2)[0]
    scan = nm.Scan(step, in_memory=memory, in_iterate=seq, in_iterate_0=x0, last_only=True)
    h = nm.split(scan, 'f', n_out=2)[0] if cell == 'lstm' else scan
    pred = nm.Perceptron(h, 1, activation_func='lin', name='readout')
    target = nm.Input((None, 1), 'b,f', name='target')
    loss = nm.AggregateLoss(nm.SquaredLoss(pred, target))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=seq, target_node=target, loss_node=loss, prediction_node=pred)
    return model, scan, hidden


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_rnn_learns_running_sum(cell):
    model, scan, _ = build_rnn(cell)
    assert scan.shape.shape == ((None, 8) if cell == 'gru' else (None, 16))
    seq, target = running_sum_task()
    model.lr = 0.01
    before = model.loss(seq, target)
    for _ in range(150):
        model.trainingstep(seq, target)
    assert model.loss(seq, target) < 0.25 * before


def test_scan_full_sequence_and_step_function(tmp_path):
    seq = nm.Input((None, 5, 2), 'b,r,f', name='seq')
    x0 = nm.split(seq, 'r', index=1, strip_singleton_dims=True)[0]
    h0 = nm.InitialState_like(x0, 3, name='h0', value=0.1)
    step = nm.GRU(x0, h0, 3)
    scan = nm.Scan(step, in_memory=h0, in_iterate=seq, in_iterate_0=x0)
    assert scan.shape.shape == (None, 5, 3) and scan.shape.tags == ('b', 'r', 'f')
    x = np.random.randn(4, 5, 2).astype(np.float32)
    outs = scan(x)
    # the step node alone computes the first step
    np.testing.assert_allclose(step(x), outs[:, 0], rtol=1e-5)
    # feeding the state back one step at a time with the step function gives the same
    fn = scan.step_function()
    assert [n.name for n in fn.inputs] == [x0.name, 'h0']
    h = np.full((4, 3), 0.1, np.float32)
    for t in range(5):
        h = fn.numpy(x[:, t], h)[0]
        np.testing.assert_allclose(h, outs[:, t], rtol=1e-5, atol=1e-6)
    # Scan models save and restore through descriptors
    model = scan.model
    model.designate_nodes(input_node=seq, prediction_node=scan)
    model.save(tmp_path / 'rnn.mdl')
    np.testing.assert_allclose(nm.modelload(tmp_path / 'rnn.mdl').predict(x), outs, rtol=1e-6)


def test_scan_without_iteration_and_errors():
    inp = nm.Input((None, 4), 'b,f', name='x')
    h0 = nm.InitialState_like(inp, 4, name='h0')
    step = nm.GRU(inp, h0, 4)
    scan = nm.Scan(step, in_memory=h0, n_steps=3)
    assert scan.shape.shape == (None, 3, 4)
    assert scan(np.random.randn(2, 4).astype(np.float32)).shape == (2, 3, 4)
    with pytest.raises(GraphError, match='n_steps'):
        nm.Scan(step, in_memory=h0)
    other = nm.Perceptron(inp, 4)
    with pytest.raises(GraphError, match='does not depend'):
        nm.Scan(other, in_memory=h0, n_steps=2)
    with pytest.raises(ShapeError, match="tagged 'b,f'"):
        nm.GRU(nm.Input((None, 2, 3), 'b,r,f', name='bad'), h0, 4)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_scan_step_weights_are_trained(cell):
    """A Scan's step nodes are evaluated inside its forward: their parameters belong to the
    loss's parameters, so a training step changes them."""
    nm.model_manager.newmodel('scan_training')
    model, scan, _ = build_rnn(cell)
    step = next(n for n in scan.inner_nodes if n.params)    # the GRU / LSTM cell
    params = model.loss_node.all_trainable_params
    step_params = {f"{step.name}.{k}" for k in step.params}
    assert step_params and step_params <= set(params)
    before = {k: v.detach().clone() for k, v in params.items()}
    seq, target = running_sum_task()
    model.trainingstep(seq, target)
    assert all(not torch.equal(params[k], before[k]) for k in step_params)
