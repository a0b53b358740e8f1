"""Fixtures of the data tests: real EM volumes and the networks that consume them."""
from pathlib import Path

import h5py
import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.data import ids2barriers

# ELEKTRONN2's "neuro3d_lite" example: input (11, 155, 155) -> output (4, 30, 30),
# strides (2, 4, 4), fov (5, 39, 39).
NEURO3D_LITE = [(20, (1, 4, 4), (1, 2, 2)), (40, (3, 3, 3), (1, 2, 2)),
                (150, (2, 4, 4), (2, 1, 1)), (200, (1, 3, 3), (1, 1, 1)),
                (200, (1, 3, 3), (1, 1, 1)), (200, (1, 1, 1), (1, 1, 1))]
# A small strided 2-D net: input (127, 127) -> output (28, 28), strides (4, 4), fov (19, 19).
PLANAR = [(8, (4, 4), (2, 2)), (8, (3, 3), (2, 2)), (8, (3, 3), (1, 1))]


def classifier(inp, layers, n_class=2):
    """Conv stack + Softmax; returns (input, target) nodes of a designated model."""
    out = inp
    for n_f, filt, pool in layers:
        out = nm.Conv(out, n_f, filt, pool)
    out = nm.Conv(out, n_class, (1,) * len(layers[0][1]), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target', dtype='int16')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    nm.model_manager.getmodel().designate_nodes(input_node=inp, target_node=target,
                                                loss_node=loss, prediction_node=probs)
    return inp, target


@pytest.fixture
def neuro3d_lite():
    """(input, target) of neuro3d_lite, tags b,f,z,x,y."""
    return classifier(nm.Input((None, 1, 11, 155, 155), 'b,f,z,x,y', name='raw'), NEURO3D_LITE)


@pytest.fixture
def planar_net():
    """(input, target) of a strided 2-D net, tags b,f,x,y."""
    return classifier(nm.Input((None, 1, 127, 127), 'b,f,x,y', name='raw'), PLANAR)


@pytest.fixture(scope='session')
def fib25(data_dir) -> Path:
    return data_dir / 'em' / 'fib25_training_sample2.h5'


@pytest.fixture(scope='session')
def isbi(data_dir) -> Path:
    return data_dir / 'em' / 'isbi2012.h5'


@pytest.fixture(scope='session')
def fib25_barriers(fib25, tmp_path_factory) -> Path:
    """FIB-25 boundary labels (ids2barriers of the neuron ids) in an HDF5 file."""
    path = tmp_path_factory.mktemp('fib25') / 'barriers.h5'
    with h5py.File(fib25, 'r') as f:
        ids = f['volumes/labels/neuron_ids'][:]
    with h5py.File(path, 'w') as f:
        f.create_dataset('barriers', data=ids2barriers(ids), chunks=(50, 125, 125))
    return path


@pytest.fixture(scope='session')
def isbi_boundaries(isbi, tmp_path_factory) -> Path:
    """ISBI 2012 labels as classes: 1 = membrane (0 in the file), 0 = interior (255)."""
    path = tmp_path_factory.mktemp('isbi') / 'boundaries.h5'
    with h5py.File(isbi, 'r') as f:
        labels = f['train/labels'][:]
    with h5py.File(path, 'w') as f:
        f.create_dataset('boundaries', data=(labels == 0).astype(np.uint8), chunks=(1, 512, 512))
    return path
