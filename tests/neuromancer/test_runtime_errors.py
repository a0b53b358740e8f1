"""Run-time errors name the node that failed; nodes answer probes by property; plain numbers."""
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.config import config
from elektronn2.errors import GraphError, NodeError, ShapeError
from elektronn2.neuromancer.dense import predict_dense
from elektronn2.neuromancer.footprint import is_exact


def small_net():
    """Input (b, 4) -> Perceptron 'hidden' -> Perceptron 'logits' -> Softmax -> Errors."""
    inp = nm.Input((None, 4), 'b,f', name='raw')
    hidden = nm.Perceptron(inp, 3, name='hidden')
    logits = nm.Perceptron(hidden, 2, activation_func='lin', name='logits')
    probs = nm.Softmax(logits)
    target = nm.Input_like(probs, override_f=1, name='target')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    return inp, logits, probs, errors


def test_a_torch_error_in_forward_names_the_node_its_class_and_inputs(monkeypatch):
    inp, logits, probs, _ = small_net()
    monkeypatch.setattr(logits, 'forward', lambda x, training=False: x @ torch.ones(5, 2))
    with pytest.raises(NodeError) as info:
        probs(np.zeros((2, 4), np.float32))
    message = str(info.value)
    assert "Perceptron 'logits'" in message and '[(2, 3) float32]' in message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) in message


def test_keyboard_interrupt_and_elektronn2_errors_pass_unchanged(monkeypatch):
    _, logits, probs, _ = small_net()

    def interrupted(x, training=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(logits, 'forward', interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        probs(np.zeros((2, 4), np.float32))
    assert type(info.value) is KeyboardInterrupt and info.value.__cause__ is None


def test_a_failure_in_a_compiled_graph_names_its_outputs(monkeypatch):
    _, logits, probs, _ = small_net()
    monkeypatch.setattr(config, 'compile', 'on')
    monkeypatch.setattr(logits, 'forward', lambda x, training=False: x @ torch.ones(5, 2))
    with pytest.raises(GraphError, match=r"'logits'|\['softmax'\]") as info:
        probs(np.zeros((2, 4), np.float32))
    assert info.value.__cause__ is not None


def test_error_nodes_and_padding_are_properties():
    inp, logits, probs, errors = small_net()
    assert errors.is_error and not probs.is_error and not logits.is_error
    image = nm.Input((None, 1, 8, 8), 'b,f,x,y', name='image')
    valid = nm.Conv(image, 2, (3, 3))
    assert not valid.sees_padding and is_exact(valid)
    assert nm.Pad(valid, 1).sees_padding and not is_exact(nm.Pad(valid, 1))
    assert nm.Conv(valid, 2, (3, 3), conv_mode='same').sees_padding
    pooled = nm.Conv(image, 2, (1, 1), (2, 2))
    assert nm.UpConv(pooled, 2, (2, 2), filter_shape=(3, 3)).sees_padding
    assert not nm.UpConv(pooled, 2, (2, 2)).sees_padding


def test_softmax_infer_shape_has_no_side_effects():
    inp = nm.Input((None, 6), 'b,f', name='raw')
    softmax = nm.Softmax(inp, n_indep=2)
    assert softmax.n_class == 3
    state = dict(vars(softmax))
    other = nm.Input((None, 8), 'b,f', name='other').shape
    assert softmax._infer_shape(other) == softmax._infer_shape(other) == other
    assert vars(softmax) == state and softmax.n_class == 3


def test_messages_print_plain_numbers():
    image = nm.Input((None, 1, 8, 8, 8), 'b,f,z,x,y', name='image')
    with pytest.raises(ShapeError) as info:
        nm.Pad(image, np.array([1, 2]))
    assert '[1, 2] has 2 entries' in str(info.value)
    with pytest.raises(ShapeError) as info:
        predict_dense(nm.Conv(image, 2, (3, 3, 3)), np.zeros((1, 2, 4, 4), np.float32))
    assert 'field of view (3, 3, 3)' in str(info.value) and 'np.' not in str(info.value)
