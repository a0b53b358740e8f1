"""Model files and FIB-25 data for the inference tests."""
from pathlib import Path

import h5py
import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.data.labels import ids2barriers

FIB25 = Path('em') / 'fib25_training_sample2.h5'


def designate(inp, probs, name: str):
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    return model


def boundary_net(patch=(9, 27, 27)):
    """A strided 3-D valid-convolution boundary net; tags z,x,y (not the data's z,y,x)."""
    nm.model_manager.newmodel('boundary')
    inp = nm.Input((None, 1) + tuple(patch), 'b,f,z,x,y', name='raw')
    conv = nm.Conv(inp, 6, (3, 4, 4), (1, 2, 2))
    conv = nm.Conv(conv, 6, (3, 3, 3))
    probs = nm.Softmax(nm.Conv(conv, 2, 1, activation_func='lin'))
    target = nm.Input_like(probs, override_f=1, dtype='int64', name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    return model


def train_on_fib25(model, data_path: Path, steps: int = 3):
    """A few Adam steps on FIB-25 patches with boundary targets (net axis order z,x,y)."""
    patch = model.input_node.shape.spatial_shape
    out = model.prediction_node.shape
    with h5py.File(data_path) as f:
        raw = f['volumes/raw'][:40, :120, :120].transpose(0, 2, 1)
        barriers = ids2barriers(f['volumes/labels/neuron_ids'][:40, :120, :120]).transpose(0, 2, 1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        start = [int(rng.integers(0, n - p)) for n, p in zip(raw.shape, patch)]
        window = raw[tuple(slice(s, s + p) for s, p in zip(start, patch))]
        labels = barriers[tuple(slice(s + int(o), s + int(o) + n * st, st) for s, o, n, st in
                                zip(start, out.offsets, out.spatial_shape, out.strides))]
        model.trainingstep(window[None, None].astype(np.float32) / 255,
                           labels[None, None].astype(np.int64))


@pytest.fixture(scope='session')
def fib25(data_dir) -> Path:
    path = data_dir / FIB25
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope='session')
def boundary_model(tmp_path_factory, fib25) -> Path:
    """Saved strided boundary net, trained for a few steps on FIB-25."""
    model = boundary_net()
    train_on_fib25(model, fib25)
    return Path(model.save(tmp_path_factory.mktemp('models') / 'boundary.mdl'))


@pytest.fixture(scope='session')
def same_model(tmp_path_factory) -> Path:
    """A 'same'-padded 3-D net (random weights): needs blending."""
    nm.model_manager.newmodel('same')
    inp = nm.Input((None, 1, 8, 16, 16), 'b,f,z,y,x', name='raw')
    conv = nm.Conv(inp, 4, 3, conv_mode='same')
    probs = nm.Softmax(nm.Conv(conv, 2, 3, conv_mode='same', activation_func='lin'))
    designate(inp, probs, 'same')
    return Path(nm.model_manager.getmodel().save(tmp_path_factory.mktemp('models') / 'same.mdl'))


@pytest.fixture(scope='session')
def planar_model(tmp_path_factory) -> Path:
    """A strided 2-D net (tags x,y) applied slice by slice."""
    nm.model_manager.newmodel('planar')
    inp = nm.Input((None, 1, 21, 25), 'b,f,x,y', name='raw')
    conv = nm.Conv(inp, 4, 4, 2)
    probs = nm.Softmax(nm.Conv(nm.Conv(conv, 4, 4, 2), 2, 1, activation_func='lin'))
    designate(inp, probs, 'planar')
    return Path(nm.model_manager.getmodel().save(tmp_path_factory.mktemp('models') / 'planar.mdl'))


@pytest.fixture(scope='session')
def unet_model(tmp_path_factory) -> Path:
    """A valid-convolution U-Net pooling twice in-plane: output stride 1, phase (1, 4, 4)."""
    nm.model_manager.newmodel('unet')
    inp = nm.Input((None, 1, 4, 30, 30), 'b,f,z,y,x', name='raw')
    c0 = nm.Conv(inp, 3, (1, 3, 3))
    c1 = nm.Conv(nm.Pool(c0, (1, 2, 2)), 3, (1, 3, 3))
    c2 = nm.Conv(nm.Pool(c1, (1, 2, 2)), 3, (1, 3, 3))
    up = nm.UpConvMerge(c0, nm.UpConvMerge(c1, c2, 3), 3)
    probs = nm.Softmax(nm.Conv(up, 2, (1, 3, 3), activation_func='lin'))
    designate(inp, probs, 'unet')
    return Path(nm.model_manager.getmodel().save(tmp_path_factory.mktemp('models') / 'unet.mdl'))


@pytest.fixture(scope='session')
def fib25_raw(fib25) -> np.ndarray:
    with h5py.File(fib25) as f:
        return f['volumes/raw'][:]


def predict_dense_zyx(model_path: Path, raw_zyx: np.ndarray, pad_raw: bool = True) -> np.ndarray:
    """In-memory predict_dense of a (z,y,x) volume, returned in (f, z, y, x) order."""
    model = nm.modelload(model_path)
    tags = model.input_node.shape.spatial_tags
    if len(tags) == 2:
        tags = ('z',) + tags
    order = ['zyx'.index(t) for t in tags]
    dense = model.predict_dense(raw_zyx.transpose(order)[None], pad_raw=pad_raw)
    return dense.transpose([0] + [1 + tags.index(a) for a in 'zyx'])


@pytest.fixture(scope='session')
def dense_reference():
    """``predict_dense_zyx(model_path, raw_zyx, pad_raw=True)``: the in-memory reference."""
    return predict_dense_zyx
