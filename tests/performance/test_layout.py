"""Channels-last activations give the same values and gradients as contiguous ones,
also through nodes that reshape, concatenate, split, flatten or re-assemble fragments."""
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.config import config


def mixed_graph():
    """Conv (z-folded, pointwise, 3-D, maxout, BN), pooling, UpConvMerge (crop + concat),
    split, Concat, Perceptron on 5-D and flattening, LRN, Reshape, Add."""
    inp = nm.Input((None, 2, 6, 22, 22), 'b,f,z,x,y', name='raw')
    fine = nm.Conv(inp, 6, (1, 3, 3), batch_normalisation='train')          # 6, 20, 20
    coarse = nm.Conv(fine, 8, (3, 3, 3), (1, 2, 2))                         # 4, 9, 9
    merged = nm.UpConvMerge(fine, coarse, 4)                                # 10 f, 4, 18, 18
    maxout = nm.Conv(merged, 6, 1, activation_func='maxout 2')              # 3 f
    first, rest = nm.split(maxout, 'f', index=1)
    swapped = nm.Concat([rest, first])
    mixed = nm.Add(nm.Perceptron(swapped, 3, activation_func='tanh'), maxout)
    normed = nm.LRN(mixed, 3, mode='spatial')
    pooled = nm.Pool(normed, (2, 2, 2), mode='average')                     # 2, 9, 9
    flat = nm.Perceptron(pooled, 5, flatten=True)
    columns = nm.Reshape(pooled, (None, 3, -1), 'b,f,x')
    out = nm.Add(nm.Perceptron(flat, 4, activation_func='lin'),
                 nm.Perceptron(nm.Reshape(columns, (None, 3 * 162), 'b,f'), 4, activation_func='lin'))
    return inp, [merged, maxout, swapped, pooled, columns, out]


def mfp_graph():
    inp = nm.Input((None, 3, 3, 22, 22), 'b,f,z,x,y', name='raw')
    conv = nm.Conv(inp, 4, (1, 4, 4), (1, 2, 2), mfp=True)
    conv = nm.Conv(conv, 5, (2, 3, 3), (1, 1, 1))
    return inp, [nm.FragmentsToDense(nm.Conv(conv, 2, 1, activation_func='lin'))]


def evaluate(outputs, x, memory_format):
    config.memory_format, config.precision = memory_format, 'fp32'
    model = outputs[0].model
    fn = model.function(outputs, training=True)
    values = fn(*fn.to_tensors(x))
    total = sum((v * torch.cos(torch.arange(v.numel()).reshape(v.shape))).sum() for v in values)
    params = {k: p for k, p in model.all_params().items() if p.requires_grad}
    grads = torch.autograd.grad(total, list(params.values()))
    return [v.detach().numpy() for v in values], dict(zip(params, grads))


@pytest.mark.parametrize('graph', [mixed_graph, mfp_graph])
def test_channels_last_equals_contiguous(graph):
    inp, outputs = graph()
    x = np.random.rand(2, *inp.shape.shape[1:]).astype(np.float32)
    state = {k: p.detach().clone() for k, p in outputs[0].model.all_params().items()}
    plain_values, plain_grads = evaluate(outputs, x, 'contiguous')
    with torch.no_grad():   # batch normalisation updated its statistics: start again
        for k, p in outputs[0].model.all_params().items():
            p.copy_(state[k])
    cl_values, cl_grads = evaluate(outputs, x, 'channels_last')
    for node, a, b in zip(outputs, cl_values, plain_values):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=node.name)
    for key in plain_grads:
        np.testing.assert_allclose(cl_grads[key], plain_grads[key], rtol=1e-3, atol=1e-5,
                                   err_msg=key)


def test_filters_are_stored_channels_last_and_checkpoints_keep_their_optimiser_state(tmp_path):
    from elektronn2.training import checkpoint
    config.memory_format = 'channels_last'
    inp = nm.Input((None, 2, 4, 12, 12), 'b,f,z,x,y', name='raw')
    probs = nm.Softmax(nm.Conv(nm.Conv(inp, 4, (2, 3, 3)), 2, 1, activation_func='lin'))
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss)
    model.trainingstep(np.random.rand(2, 2, 4, 12, 12).astype(np.float32),
                       np.random.randint(0, 2, (2, 1, 3, 10, 10)).astype(np.int16))
    assert model['conv'].params['w'].is_contiguous(memory_format=torch.channels_last_3d)
    checkpoint.save(tmp_path, model, {'step': 1})
    saved = checkpoint.load_state(checkpoint.list_checkpoints(tmp_path)[-1])
    before = model.optimisers.state_dict()['optimisers']['Adam']['state']
    after = saved['optimisers']['optimisers']['Adam']['state']
    for index, state in before.items():
        for key in ('exp_avg', 'exp_avg_sq'):
            torch.testing.assert_close(after[index][key], state[key], rtol=0, atol=0)
    config.memory_format = 'contiguous'     # switching back restores plain filters
    model.loss(np.random.rand(1, 2, 4, 12, 12).astype(np.float32),
               np.zeros((1, 1, 3, 10, 10), np.int16))
    assert model['conv'].params['w'].is_contiguous()
