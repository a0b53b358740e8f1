"""Ensembles of models: blockwise, in memory, on the command line and resumed, their mean."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr

import elektronn2.neuromancer as nm
from elektronn2.errors import ShapeError
from elektronn2.inference import Box, plan_prediction, predict_volume
from elektronn2.inference.ensemble import EnsembleSpec, resolve_ensemble_spec
from elektronn2.inference.predictors import model_digest

PREDICT = [sys.executable, '-m', 'elektronn2.inference.cli']


@pytest.fixture(scope='module')
def volume(fib25_raw):
    return fib25_raw[30:50, 20:75, 40:90]


@pytest.fixture(scope='module')
def wide_model(tmp_path_factory):
    """A valid 3-D net with another field of view (7 x 9 x 9) and stride 1 than the
    boundary net (5 x 8 x 8 context, strided), random weights."""
    nm.model_manager.newmodel('wide')
    inp = nm.Input((None, 1, 11, 21, 21), 'b,f,z,y,x', name='raw')
    conv = nm.Conv(nm.Conv(inp, 3, (3, 5, 5)), 3, (3, 3, 3))
    probs = nm.Softmax(nm.Conv(conv, 2, (3, 3, 3), activation_func='lin'))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    return model.save(tmp_path_factory.mktemp('models') / 'wide.mdl')


@pytest.fixture(scope='module')
def three_class_model(tmp_path_factory):
    nm.model_manager.newmodel('three')
    inp = nm.Input((None, 1, 5, 9, 9), 'b,f,z,y,x', name='raw')
    probs = nm.Softmax(nm.Conv(inp, 3, 3, activation_func='lin'))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    return model.save(tmp_path_factory.mktemp('models') / 'three.mdl')


@pytest.mark.parametrize('block', [(8, 20, 24), (64, 64, 64)])
def test_an_ensemble_is_the_mean_of_its_members(boundary_model, wide_model, unet_model,
                                                volume, block):
    """Members with different back ends (MFP, a rebuilt U-Net, a stride-1 net) and fields
    of view: each block's mean equals the mean of the members' own predictions."""
    models = [boundary_model, wide_model, unet_model]
    alone = [predict_volume(m, volume, block_shape=(16, 32, 32)) for m in models]
    mean = predict_volume(models, volume, block_shape=block)
    assert mean.shape == (2,) + volume.shape and mean.dtype == np.float32
    np.testing.assert_allclose(mean, sum(alone) / 3, rtol=1e-5, atol=2e-6)


def test_the_block_shape_suits_every_member(boundary_model, unet_model, volume):
    region = Box((0, 0, 0), volume.shape)
    spec, block = resolve_ensemble_spec([boundary_model, unet_model], (7, 19, 23), region)
    assert isinstance(spec, EnsembleSpec) and spec.backend == 'ensemble(mfp, patch)'
    for member in spec.members:   # each, asked for the common shape, keeps it
        from elektronn2.inference.predictors import resolve_spec
        assert resolve_spec(member.model_path, block, region)[1] == block


def test_valid_only_takes_the_widest_context(boundary_model, wide_model, volume):
    """The valid part of the volume is where every member's field of view lies inside."""
    from elektronn2.data.sources import ArraySource
    plan = plan_prediction([boundary_model, wide_model], ArraySource(volume),
                           block_shape=(8, 16, 16), valid_only=True)
    # boundary net: context (2, 4, 4) before; wide net: (3, 4, 4) before and after
    assert plan.region == Box((3, 4, 4), (volume.shape[0] - 3, volume.shape[1] - 4,
                                          volume.shape[2] - 4))


def test_members_must_agree_in_outputs(boundary_model, three_class_model, volume):
    with pytest.raises(ShapeError, match=r"three\.mdl has n_outputs=3.*boundary\.mdl has 2"):
        predict_volume([boundary_model, three_class_model], volume)


def run(*args, check=True):
    result = subprocess.run(PREDICT + [str(a) for a in args], capture_output=True, text=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stderr}")
    return result


def test_cli_ensemble_resumes_only_with_the_same_models(boundary_model, wide_model, volume,
                                                        tmp_path):
    """``elektronn2-predict A B IN OUT``: the mean of both; the manifest names both files'
    digests, so a rerun with one of them is refused and one with both resumes."""
    raw = tmp_path / 'raw.h5'
    with h5py.File(raw, 'w') as f:
        f['raw'] = volume
    out = tmp_path / 'mean.zarr'
    result = run(boundary_model, wide_model, raw, out, '--key', 'raw', '--block-shape', 10, 32,
                 32, '--quiet')
    assert 'backend ensemble(mfp, patch)' in result.stdout
    array = zarr.open_array(store=str(out), path='probabilities', mode='r')
    expected = predict_volume([boundary_model, wide_model], volume, block_shape=(10, 32, 32))
    np.testing.assert_allclose(array[:], expected, rtol=1e-5, atol=2e-6)
    manifest = json.loads(json.dumps(dict(array.attrs)))
    text = json.dumps(manifest)
    assert model_digest(boundary_model) in text and model_digest(wide_model) in text
    alone = run(boundary_model, raw, out, '--key', 'raw', '--block-shape', 10, 32, 32,
                '--quiet', check=False)
    assert alone.returncode == 2 and 'model_sha256' in alone.stderr
    again = run(boundary_model, wide_model, raw, out, '--key', 'raw', '--block-shape', 10, 32,
                32, '--quiet')
    assert '(8 done before)' in again.stdout
