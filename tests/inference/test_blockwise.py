"""Blockwise prediction equals in-memory predict_dense; back-end choice; writers and resuming."""
import json
import logging

import h5py
import numpy as np
import pytest
import zarr

import elektronn2.neuromancer as nm
from elektronn2.data.knossos import write_knossos_dataset
from elektronn2.data.sources import ArraySource
from elektronn2.errors import ConfigError, DataError, ShapeError
from elektronn2.inference import (
    Box,
    SerialExecutor,
    ZarrBlockWriter,
    plan_prediction,
    predict_to_file,
    predict_volume,
    run_prediction,
)
from elektronn2.inference.blockwise import BlockJob, read_ahead, read_block_input
from elektronn2.inference.ome_zarr import read_multiscales
from elektronn2.inference.outputs import MARKER_DIR, HDF5BlockWriter, output_attributes
from elektronn2.inference.predictors import resolve_spec


@pytest.fixture(scope='module')
def volume(fib25_raw):
    return fib25_raw[:21, 40:90, 30:95]


@pytest.fixture(scope='module')
def reference(boundary_model, volume, dense_reference):
    return dense_reference(boundary_model, volume)


@pytest.mark.parametrize('mfp, block', [('on', (8, 20, 24)), ('off', (16, 32, 32)),
                                        ('auto', (64, 64, 64))])
def test_blockwise_equals_predict_dense(boundary_model, volume, reference, mfp, block):
    out = predict_volume(boundary_model, volume, block_shape=block, mfp=mfp)
    assert out.shape == (2,) + volume.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=2e-6)


def test_valid_region_and_uint8(boundary_model, volume, dense_reference):
    valid = dense_reference(boundary_model, volume, pad_raw=False)
    out = predict_volume(boundary_model, volume, block_shape=(8, 16, 16), valid_only=True)
    np.testing.assert_allclose(out, valid, rtol=1e-5, atol=2e-6)
    as_uint8 = predict_volume(boundary_model, volume, block_shape=(8, 16, 16), valid_only=True,
                              dtype='uint8')
    assert as_uint8.dtype == np.uint8
    assert np.abs(as_uint8 / 255.0 - valid).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize('mfp', ['on', 'off'])
def test_planar_net_predicts_slices(planar_model, volume, dense_reference, mfp):
    spec, block = resolve_spec(planar_model, (2, 32, 32), Box((0, 0, 0), volume.shape), mfp=mfp)
    assert block[0] == 2 and spec.backend == {'on': 'mfp', 'off': 'tiling'}[mfp]
    crop = volume[:3, :40, :45]
    out = predict_volume(planar_model, crop, block_shape=(2, 32, 32), mfp=mfp)
    np.testing.assert_allclose(out, dense_reference(planar_model, crop), rtol=1e-5, atol=2e-6)


def test_unet_blocks_keep_the_pooling_phase(unet_model, fib25_raw):
    """A U-Net's outputs depend on where patches start modulo its internal stride: blockwise
    prediction keeps patches on that grid and equals one evaluation of the whole volume."""
    whole = nm.modelload(unet_model, imposed_patch_size=(6, 70, 70))
    patch = whole.input_node.shape.spatial_shape
    out = whole.prediction_node.shape.spatial_shape
    before = [int(o) for o in whole.prediction_node.shape.offsets]
    volume = fib25_raw[:out[0], :out[1], :out[2]]
    padded = np.pad(volume, [(b, p - o - b) for b, p, o in zip(before, patch, out)], 'symmetric')
    expected = whole.predict(padded[None, None].astype(np.float32) / 255)[0]
    for block in ((4, 16, 16), (3, 28, 20)):
        for mfp in ('auto', 'off'):  # a patch of one block (the blocks' phase kept), tiling
            np.testing.assert_allclose(predict_volume(unet_model, volume, block_shape=block,
                                                      mfp=mfp),
                                       expected, rtol=1e-5, atol=2e-6)


def test_unet_is_evaluated_with_a_patch_of_one_block(unet_model, caplog):
    """A stride-1 net is rebuilt with a patch whose output covers the block (a multiple of
    its internal stride): one evaluation per block, fewer multiply-adds than tiling its
    saved patch (4 x 30 x 30 -> 2 x 8 x 8 here)."""
    region = Box((0, 0, 0), (40, 100, 100))
    with caplog.at_level(logging.INFO, logger='elektronn2'):
        spec, block = resolve_spec(unet_model, (8, 30, 30), region)
    assert spec.backend == 'patch' and block == (8, 32, 32)  # multiples of the phase (1, 4, 4)
    assert 'an input patch of one block' in caplog.text
    predictor = spec.build()
    out_box = Box.from_shape(block, (0, 0, 0))
    assert predictor.geometry.evaluations(block) == 1
    assert all(o >= b for o, b in zip(predictor.geometry.out, block))
    tiled = resolve_spec(unet_model, (8, 30, 30), region, mfp='off')[0].build()
    assert predictor.executed_macs(out_box) < tiled.executed_macs(out_box) / 2
    assert spec.describe()['patch'] == list(predictor.node.input_nodes[0].shape.spatial_shape)
    with pytest.raises(ConfigError, match='nothing to fragment'):
        resolve_spec(unet_model, (8, 30, 30), region, mfp='on')


def test_planar_unet_patch_backend_equals_tiling(tmp_path, fib25_raw):
    """A 2-D U-Net (tags x,y; output stride 1) over a stack: one rebuilt patch per slice and
    block gives what tiling its saved patch gives, blocks of any z."""
    nm.model_manager.newmodel('unet2d')
    inp = nm.Input((None, 1, 30, 30), 'b,f,x,y', name='raw')
    c0 = nm.Conv(inp, 3, (3, 3))
    c1 = nm.Conv(nm.Pool(c0, (2, 2)), 3, (3, 3))
    probs = nm.Softmax(nm.Conv(nm.UpConvMerge(c0, c1, 3), 2, (3, 3), activation_func='lin'))
    nm.model_manager.getmodel().designate_nodes(input_node=inp, prediction_node=probs)
    path = nm.model_manager.getmodel().save(tmp_path / 'unet2d.mdl')
    volume = fib25_raw[:3, :70, :61]
    spec, block = resolve_spec(path, (2, 40, 40), Box((0, 0, 0), volume.shape))
    assert spec.backend == 'patch' and block == (2, 40, 40)
    expected = predict_volume(path, volume, block_shape=(2, 40, 40), mfp='off')
    np.testing.assert_allclose(predict_volume(path, volume, block_shape=(2, 40, 40)), expected,
                               rtol=1e-5, atol=2e-6)


def test_backend_rule(boundary_model, same_model, planar_model, caplog):
    region = Box((0, 0, 0), (100, 100, 100))
    with caplog.at_level(logging.INFO, logger='elektronn2'):
        spec, block = resolve_spec(boundary_model, (32, 32, 32), region)
    assert spec.backend == 'mfp' and block == (32, 32, 32) and 'MACs per output voxel' in caplog.text
    spec, block = resolve_spec(boundary_model, (3, 5, 4), region, mfp='off')
    assert spec.backend == 'tiling' and block == (3, 6, 4)  # multiples of the strides
    assert resolve_spec(same_model, (16, 16, 16), region)[0].backend == 'blend'
    assert resolve_spec(same_model, (16, 16, 16), region, blend='constant')[0].blend_mode == 'constant'
    with pytest.raises(ShapeError, match='Blending needs an output stride of 1'):
        resolve_spec(boundary_model, (32, 32, 32), region, blend='gaussian')
    with pytest.raises(ConfigError, match="mfp='fast'"):
        resolve_spec(boundary_model, (32, 32, 32), region, mfp='fast')


def test_input_errors(boundary_model):
    with pytest.raises(ShapeError, match='has 2 channel'):
        plan_prediction(boundary_model, ArraySource(np.zeros((2, 20, 40, 40), np.uint8)))
    with pytest.raises(ShapeError, match='no valid output voxels'):
        plan_prediction(boundary_model, ArraySource(np.zeros((4, 40, 40), np.uint8)), valid_only=True)
    with pytest.raises(ConfigError, match="dtype='float16'"):
        predict_volume(boundary_model, np.zeros((10, 40, 40), np.uint8), dtype='float16')


def _zarr_run(model, source, path, block=(8, 20, 20)):
    plan = plan_prediction(model, source, block_shape=block, mfp='on')
    writer = ZarrBlockWriter(path, 'prob', plan.grid, 2, 'float32', {'resolution': [1, 2, 3]},
                             plan.manifest(source, 'float32'))
    return plan, writer


def test_zarr_resume_skips_marked_blocks_and_refuses_other_settings(boundary_model, volume,
                                                                    reference, tmp_path):
    source = ArraySource(volume, name='fib25 crop')
    path = tmp_path / 'out.zarr'
    plan, writer = _zarr_run(boundary_model, source, path)
    report = run_prediction(plan, source, writer, progress=False)
    array = zarr.open_array(store=str(path), path='prob', mode='r')
    assert array.attrs['complete'] and array.attrs['resolution'] == [1, 2, 3]
    assert array.chunks == (2,) + plan.grid.block_shape
    np.testing.assert_allclose(array[:], reference, rtol=1e-5, atol=2e-6)
    # a crash after some blocks: their data stays, the rest is garbage and unmarked
    markers = sorted((path / 'prob' / MARKER_DIR).iterdir())
    assert len(markers) == report.n_blocks == len(plan.grid)
    lost = plan.grid.block((0, 1, 1))
    zarr.open_array(store=str(path), path='prob', mode='r+')[
        (slice(None),) + lost.write.slices_in(plan.region)] = -1
    (path / 'prob' / MARKER_DIR / lost.name).unlink()
    _, writer = _zarr_run(boundary_model, source, path)
    resumed = run_prediction(plan, source, writer, progress=False)
    assert (resumed.n_predicted, resumed.n_resumed) == (1, report.n_blocks - 1)
    np.testing.assert_allclose(array[:], reference, rtol=1e-5, atol=2e-6)
    with pytest.raises(ConfigError, match=r"differs in \['block_shape'"):
        _zarr_run(boundary_model, source, path, block=(16, 20, 20))
    zarr.open_array(store=str(tmp_path / 'foreign.zarr'), path='prob', mode='w', shape=(3,))
    with pytest.raises(DataError, match='not written by elektronn2-predict'):
        _zarr_run(boundary_model, source, tmp_path / 'foreign.zarr')


def test_hdf5_writer_is_atomic(boundary_model, volume, reference, tmp_path):
    source = ArraySource(volume)
    plan = plan_prediction(boundary_model, source, block_shape=(16, 24, 24))
    target = tmp_path / 'out.h5'
    attrs = output_attributes({'resolution': [10, 10, 10], 'offset': [0, 100, 0]}, plan.region.lo)
    writer = HDF5BlockWriter(target, 'prob', plan.grid, 2, 'uint8', attrs,
                             plan.manifest(source, 'uint8'))
    assert (tmp_path / 'out.h5.partial').exists() and not target.exists()
    run_prediction(plan, source, writer, 'uint8', progress=False)
    assert target.exists() and not (tmp_path / 'out.h5.partial').exists()
    with h5py.File(target) as f:
        assert f['prob'].dtype == np.uint8 and f['prob'].shape == reference.shape
        assert list(f['prob'].attrs['offset']) == [0, 100, 0]
        assert json.loads(f['prob'].attrs['elektronn2_predict'])['dtype'] == 'uint8'
        assert np.abs(f['prob'][:] / 255.0 - reference).max() <= 0.5 / 255 + 1e-5
    with pytest.raises(DataError, match='never overwritten'):
        HDF5BlockWriter(target, 'prob', plan.grid, 2, 'uint8', attrs, {})


def test_output_attributes_offset_in_world_units():
    attrs = output_attributes({'resolution': [40, 4, 4], 'offset': [400, 0, 8]}, (2, 3, 4))
    assert attrs['offset'] == [480, 12, 24] and attrs['voxel_offset'] == [2, 3, 4]
    assert 'offset' not in output_attributes({}, (0, 0, 0))


def test_serial_executor_retries_then_gives_up():
    calls = []

    def flaky(item):
        calls.append(item)
        if calls.count(item) < 2 or item == 'bad':
            raise OSError(f"transient failure of {item}")
        return item.upper()

    assert list(SerialExecutor().map(flaky, ['a', 'b'], retries=1)) == ['A', 'B']
    with pytest.raises(OSError, match='transient failure of bad'):
        list(SerialExecutor().map(flaky, ['bad'], retries=2))
    assert calls.count('bad') == 3



def test_zarr_and_knossos_inputs_keep_their_geometry(boundary_model, volume, reference, tmp_path):
    store = zarr.open_group(str(tmp_path / 'in.zarr'), mode='w')
    store.create_array('raw', data=volume, chunks=(8, 32, 32))
    store['raw'].attrs.update({'resolution': [8, 4, 4], 'offset': [80, 40, 40]})
    write_knossos_dataset(tmp_path / 'knossos', volume, scale=(20.0, 5.0, 5.0))
    for source, key, attrs in ((tmp_path / 'in.zarr', 'raw', {'resolution': [8, 4, 4],
                                                              'offset': [80, 40, 40]}),
                               (tmp_path / 'knossos', None, {'resolution': [20.0, 5.0, 5.0],
                                                             'offset': [0.0, 0.0, 0.0]})):
        out = tmp_path / f'{source.name}.out.zarr'
        predict_to_file(boundary_model, source, out, input_key=key, block_shape=(16, 32, 32),
                        progress=False)
        array = zarr.open_array(store=str(out), path='probabilities', mode='r')
        np.testing.assert_allclose(array[:], reference, rtol=1e-5, atol=2e-6)
        assert {k: array.attrs[k] for k in attrs} == attrs
        ngff = read_multiscales(zarr.open_group(str(out), mode='r'))  # viewers read this
        assert [a['name'] for a in ngff['axes']] == ['c', 'z', 'y', 'x']
        scale = ngff['datasets'][0]['coordinateTransformations'][0]['scale']
        assert scale[1:] == attrs['resolution']


def test_inputs_read_ahead_are_those_of_each_block(boundary_model, volume):
    """Serial runs read the next block's input in a thread while one is predicted."""
    plan = plan_prediction(boundary_model, ArraySource(volume), block_shape=(8, 16, 16))
    job = BlockJob(plan.spec, ArraySource(volume), 'float32')
    blocks = list(plan.grid)[:5]
    items = list(read_ahead(job, blocks))
    assert [item.block for item in items] == blocks
    for item in items:
        np.testing.assert_array_equal(item.raw, read_block_input(job, item.block))
    assert list(read_ahead(job, [])) == []
