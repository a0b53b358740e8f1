"""Training batches, predict_dense and blockwise prediction agree on where every example
net reads its input and where its outputs lie (input box and tiling phase).

For each volume example net: the batch creator's target voxels sit under the input voxels
its footprint names (checked on a random label pattern that the raw image repeats), and
``predict_dense`` (the network's axis order, whole image) equals blockwise prediction
(data order, blocks on the phase grid, several blocks) on the same volume.
"""
from pathlib import Path

import numpy as np
import pytest

from elektronn2.data import BatchCreatorImage
from elektronn2.inference import predict_volume
from elektronn2.neuromancer.dense import predict_dense
from elektronn2.neuromancer.footprint import Footprint
from elektronn2.training.experiment import ExperimentConfig, build_model

EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'
VOLUME_NETS = ['isbi2d.py', 'neuro3d.py', 'neuro3d_lite.py', 'unet3d_iso.py', 'unet3d_lite.py']
#: strided nets are tiled at every output shift (32 per placement): minutes on 2 cores
STRIDED = ('neuro3d.py', 'neuro3d_lite.py')


@pytest.fixture(scope='module')
def example_model(request, tmp_path_factory):
    exp = ExperimentConfig(EXAMPLES / request.param)
    model = build_model(exp)
    path = model.save(tmp_path_factory.mktemp('models') / f'{request.param}.mdl')
    return model, path


@pytest.mark.parametrize('example_model', VOLUME_NETS, indirect=True)
def test_batch_creator_targets_lie_under_the_footprint(example_model):
    model, _ = example_model
    footprint = Footprint.of(model.prediction_node)
    rng = np.random.default_rng(0)
    shape = tuple(p + 3 for p in footprint.patch)
    labels = rng.integers(0, 2, shape).astype(np.int16)
    creator = BatchCreatorImage(model.input_node, model.target_node,
                                d_files=[(labels * 255).astype(np.uint8)], l_files=[labels])
    assert creator.geometry.patch == footprint.patch and creator.geometry.out == footprint.out
    assert creator.geometry.offsets == footprint.offsets
    assert creator.geometry.strides == footprint.strides
    corner = (min(2, shape[0] - footprint.patch[0]), 1, 3)
    image, target = creator.example_at(0, corner)
    box = tuple(slice(c, c + p) for c, p in zip(corner, footprint.patch))
    np.testing.assert_array_equal(image, footprint.patch_to_net(labels[None][(slice(None),) + box]
                                                                .astype(np.float32)))
    first = [c + int(o) for c, o in zip(corner, footprint.offsets)]
    under = labels[tuple(slice(f, f + o * s, s) for f, o, s in
                         zip(first, footprint.out, footprint.strides))]
    np.testing.assert_array_equal(target, footprint.patch_to_net(under[None]))


@pytest.mark.parametrize('example_model', [
    pytest.param(n, marks=pytest.mark.slow) if n in STRIDED else n for n in VOLUME_NETS],
    indirect=True)
def test_predict_dense_equals_blockwise_prediction(example_model):
    model, path = example_model
    node = model.prediction_node
    footprint = Footprint.of(node)
    rng = np.random.default_rng(1)
    # two blocks per axis (one less in z for 3-D nets), the last overhanging the volume
    block = tuple(max(q, o * s // q * q) for q, o, s in
                  zip(footprint.phase, footprint.out, footprint.strides))
    valid = tuple(b + b // 2 + 1 for b in block)
    if not footprint.planar:
        valid = (block[0] + 1,) + valid[1:]
    else:
        valid = (2,) + valid[1:]
    volume = rng.random(tuple(v + b for v, b in zip(valid, footprint.border)), np.float32)
    dense = footprint.from_net(predict_dense(node, footprint.to_net(volume[None]), progress=False))
    blockwise = predict_volume(path, volume, block_shape=block, mfp='off', valid_only=True)
    assert dense.shape == blockwise.shape == (footprint.n_outputs,) + valid
    np.testing.assert_allclose(dense, blockwise, rtol=1e-4, atol=1e-5)
