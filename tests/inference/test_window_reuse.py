"""Blended windows of a 'same'-padded chain from one evaluation of their union (window_reuse)."""
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.inference import Box
from elektronn2.inference.blending import BlendingPredictor
from elektronn2.inference.window_reuse import WindowReuse, same_padded_chain
from elektronn2.neuromancer.footprint import Footprint


def random_weights(model, seed=0):
    """Weights large enough that every layer's padding shows in the outputs."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for node in model.nodes.values():
            for value in node.params.values():
                value.copy_(torch.as_tensor(rng.normal(0, 0.5, tuple(value.shape)),
                                            dtype=value.dtype))


def anisotropic_chain(patch=(24, 48, 48)):
    """'same' convolutions with different reaches per axis, tags z,x,y (not data order),
    a tanh layer, a 1 x 1 x 1 classifier and a softmax."""
    nm.model_manager.newmodel('chain')
    inp = nm.Input((None, 2) + patch, 'b,f,z,x,y', name='raw')
    conv = nm.Conv(inp, 4, 3, conv_mode='same')
    conv = nm.Conv(conv, 6, (1, 5, 3), conv_mode='same')
    conv = nm.Conv(conv, 5, (3, 1, 5), conv_mode='same', activation_func='tanh')
    probs = nm.Softmax(nm.Conv(conv, 3, 1, activation_func='lin'))
    random_weights(nm.model_manager.getmodel())
    return probs


def test_chain_reaches_follow_the_filters():
    probs = anisotropic_chain()
    layers = same_padded_chain(probs)
    assert [(layer.before, layer.after) for layer in layers] == [
        ((1, 1, 1), (1, 1, 1)), ((0, 2, 1), (0, 2, 1)), ((1, 0, 2), (1, 0, 2)),
        ((0, 0, 0), (0, 0, 0)), ((0, 0, 0), (0, 0, 0))]


@pytest.mark.parametrize('build', ['valid', 'pooled', 'merged'])
def test_other_nets_are_not_chains(build):
    nm.model_manager.newmodel(build)
    inp = nm.Input((None, 1, 8, 16, 16), 'b,f,z,y,x', name='raw')
    if build == 'valid':
        out = nm.Conv(inp, 2, 3)
    elif build == 'pooled':
        out = nm.Conv(inp, 2, 3, (1, 2, 2), conv_mode='same')
    else:
        out = nm.Concat([nm.Conv(inp, 2, 3, conv_mode='same'), inp])
    assert same_padded_chain(out) is None
    assert WindowReuse.of(out, Footprint.of(out)) is None


def test_planar_nets_are_left_to_the_windows():
    nm.model_manager.newmodel('planar')
    inp = nm.Input((None, 1, 16, 16), 'b,f,x,y', name='raw')
    out = nm.Conv(inp, 2, 3, conv_mode='same')
    assert same_padded_chain(out) is not None
    assert WindowReuse.of(out, Footprint.of(out)) is None


@pytest.mark.parametrize('precision, tolerance', [('fp32', 1e-5), ('bf16', 2e-2)])
def test_reused_windows_equal_separate_windows(precision, tolerance):
    probs = anisotropic_chain()
    rng = np.random.default_rng(1)
    raw = rng.random((2, 44, 80, 80)).astype(np.float32)
    region = Box((0, 0, 0), raw.shape[1:])
    reused = BlendingPredictor(probs, region, precision=precision)
    alone = BlendingPredictor(probs, region, precision=precision, reuse=False)
    for block in (region, Box((5, 9, 13), (30, 60, 55))):
        assert reused.reuses(block) and not alone.reuses(block)
        assert reused.executed_macs(block) < alone.executed_macs(block)
        inp = raw[(slice(None),) + reused.input_box(block).slices_in(region)]
        expected = alone.predict(inp, block)
        np.testing.assert_allclose(reused.predict(inp, block), expected, atol=tolerance)


def test_shell_work_by_hand():
    """One 3^3 'same' layer, two windows of 4^3 side by side along x in a 4 x 4 x 8 region:
    the region once (128 voxels) and per window the x-plane next to the other, from two."""
    nm.model_manager.newmodel('one')
    inp = nm.Input((None, 1, 4, 4, 4), 'b,f,z,y,x', name='raw')
    conv = nm.Conv(inp, 1, 3, conv_mode='same', activation_func='lin')
    reuse = WindowReuse.of(conv, Footprint.of(conv))
    windows = [Box((0, 0, 0), (4, 4, 4)), Box((0, 0, 4), (4, 4, 8))]
    slabs = [reuse.slabs(w, (4, 4, 8)) for w in windows]
    assert [(s.axis, s.source, s.kept) for s in slabs[0]] == [(2, (2, 4), (3, 4))]
    assert [(s.axis, s.source, s.kept) for s in slabs[1]] == [(2, (0, 2), (0, 1))]
    assert reuse.macs(windows, (4, 4, 8)) == (27 * 128, 27 * 2 * 16)


def test_small_windows_are_evaluated_alone():
    """Windows little larger than the net's reach: the slabs would cost more than they save."""
    probs = anisotropic_chain((12, 24, 20))
    region = Box((0, 0, 0), (30, 53, 47))
    predictor = BlendingPredictor(probs, region)
    assert predictor.reuse is not None and not predictor.reuses(region)
    assert predictor.executed_macs(region) == BlendingPredictor(
        probs, region, reuse=False).executed_macs(region)
