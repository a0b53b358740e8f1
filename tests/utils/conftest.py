"""A small model with every kind of node the drawings and introspection plots distinguish."""
import numpy as np
import pytest

import elektronn2.neuromancer as nm


@pytest.fixture
def small_model(fresh_model):
    """raw -> conv -> conv1 (same) -> concat -> pool -> conv2 -> perceptron -> softmax -> losses."""
    inp = nm.Input((None, 1, 16, 16), 'b,f,x,y', name='raw')
    conv = nm.Conv(inp, 4, (3, 3))
    same = nm.Conv(conv, 4, (3, 3), conv_mode='same')
    merged = nm.Concat([conv, same])
    pooled = nm.Pool(merged, (2, 2))
    conv2 = nm.Conv(pooled, 6, (2, 2))
    out = nm.Perceptron(conv2, 2, activation_func='lin', flatten=True)
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    fresh_model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                                prediction_node=probs, prediction_ext=[loss, errors, probs])
    return fresh_model


@pytest.fixture
def small_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 2, (3, 1)).astype(np.int16)
    return x, y


@pytest.fixture
def tube_volume():
    """A function making an id volume with one straight tube (see :func:`_tube_volume`)."""
    return _tube_volume


def _tube_volume(shape, direction, radius, voxel_size=(1.0, 1.0, 1.0), label=7):
    """An id volume holding one straight tube through the centre along ``direction``
    (physical z, y, x), and the unit axis."""
    axis = np.asarray(direction, float) / np.linalg.norm(direction)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing='ij'), -1).astype(float)
    rel = (grid - (np.asarray(shape) - 1) / 2) * np.asarray(voxel_size)
    off_axis = rel - (rel @ axis)[..., None] * axis
    return np.where(np.linalg.norm(off_axis, axis=-1) <= radius, label, 0).astype(np.int32), axis


@pytest.fixture
def fib_volumes(data_dir):
    """(raw uint8, labels int32) of the FIB test block; labels 0 are boundaries."""
    import h5py
    path = data_dir / 'em' / 'fib_gala_small.h5'
    if not path.exists():
        pytest.skip(f"{path} not found")
    with h5py.File(path, 'r') as f:
        return f['test/raw'][:], f['test/labels'][:]
