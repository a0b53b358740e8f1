"""ELEKTRONN2 behaviours restored: BatchCreatorImage's original arguments, predict_dense on
images smaller than a patch."""
import h5py
import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.data import BatchCreatorImage
from elektronn2.data.cnndata import BatchCreatorImage as OriginalPath
from elektronn2.errors import ConfigError, DataError, ShapeError


def regression_net(n_out=3):
    """A small 3-D net with a float target of ``n_out`` channels (tags b,f,z,x,y)."""
    nm.model_manager.newmodel('vectors')
    inp = nm.Input((None, 1, 5, 15, 15), 'b,f,z,x,y', name='raw')
    out = nm.Conv(nm.Conv(inp, 4, (3, 3, 3)), n_out, (1, 3, 3), activation_func='lin')
    return inp, nm.Input_like(out, name='target')


def test_batch_creator_is_found_at_its_original_path():
    assert OriginalPath is BatchCreatorImage


def test_zxy_false_reads_xyz_files_as_zyx(tmp_path):
    inp, target = regression_net(1)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (9, 20, 22), dtype=np.uint8)       # (z, y, x)
    labels = rng.random((9, 20, 22)).astype(np.float32)
    with h5py.File(tmp_path / 'xyz.h5', 'w') as f:
        f['raw'], f['labels'] = raw.transpose(2, 1, 0), labels.transpose(2, 1, 0)
    xyz = BatchCreatorImage(inp, target, d_files=[(tmp_path / 'xyz.h5', 'raw')],
                            l_files=[(tmp_path / 'xyz.h5', 'labels')], zxy=False, h5stream=True)
    zyx = BatchCreatorImage(inp, target, d_files=[raw], l_files=[labels])
    for corner in [(0, 0, 0), (2, 3, 5)]:
        for a, b in zip(xyz.example_at(0, corner), zyx.example_at(0, corner)):
            np.testing.assert_array_equal(a, b)


def test_target_vectors_turn_with_the_warp():
    """A field of unit vectors along x: a 90 degree turn in the y-x plane makes them point
    along the patch's y axis; without target_vec_ix they would stay as stored."""
    inp, target = regression_net(3)
    raw = np.random.default_rng(1).random((9, 40, 40)).astype(np.float32)
    field = np.zeros((3, 9, 40, 40), np.float32)
    field[2] = 1.0                                             # (z, y, x) components: +x
    creator = BatchCreatorImage(inp, target, d_files=[raw], l_files=[field],
                                target_vec_ix=[(0, 1, 2)])
    plain = BatchCreatorImage(inp, target, d_files=[raw], l_files=[field])
    turn = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    _, vectors = creator.example_at(0, (2, 10, 10), transform=turn)   # (3, z, x, y)
    _, stored = plain.example_at(0, (2, 10, 10), transform=turn)
    expected = turn[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(vectors.reshape(3, -1).T, np.broadcast_to(expected, (vectors[0].size, 3)),
                               atol=1e-5)
    np.testing.assert_allclose(stored[2], 1.0)
    _, unwarped = creator.example_at(0, (2, 10, 10))
    np.testing.assert_allclose(unwarped[2], 1.0)


def test_original_defaults_and_clear_errors():
    inp, target = regression_net(3)
    data = np.zeros((9, 20, 20), np.float32)
    creator = BatchCreatorImage(inp, target, d_files=[data], l_files=[np.zeros((3, 9, 20, 20))],
                                valid_cubes=None)
    assert creator.valid_cubes == []
    with pytest.raises(ConfigError, match='needs the target node'):
        BatchCreatorImage(inp, d_files=[data], l_files=[data])
    with pytest.raises(ConfigError, match='target_vec_ix'):
        BatchCreatorImage(inp, target, d_files=[data], l_files=[np.zeros((3, 9, 20, 20))],
                          target_vec_ix=[(0, 1)])


def test_tagged_shape_takes_the_original_arguments_and_methods():
    sh = nm.TaggedShape((None, 2, 10, 20), 'b,f,x,y', (2, 2), None, (5, 7))
    assert sh.fov == (5, 7) and sh.strides == (2, 2) and sh.offsets == (2.0, 3.0)
    assert sh.ndim == 2 and len(sh.shape) == 4
    assert sh.hastag('x') and not sh.hastag('z')
    assert sh.copy() == sh
    wider = sh.updatefov('y', 9)
    assert wider.fov == (5, 9) and wider.offsets == (2.0, 4.0) and sh.fov == (5, 7)
    with pytest.raises(ShapeError, match='mfp_offsets'):
        nm.TaggedShape((None, 2), 'b,f', None, [(0, 0)])
    from elektronn2.neuromancer.graphutils import TaggedShape as OriginalPath
    assert OriginalPath is nm.TaggedShape


def test_mfp_offsets_list_where_each_fragment_lies_in_the_dense_output():
    """Two max-fragment-pooling layers (pools 2 then 3 along x): fragment k of the batch axis
    fills the dense positions j * 6 + offset; the offsets agree with FragmentsToDense."""
    nm.model_manager.newmodel('mfp_offsets')
    inp = nm.Input((None, 1, 25), 'b,f,x', name='raw')
    c1 = nm.Conv(inp, 1, 3, 2, mfp=True, activation_func='lin')
    c2 = nm.Conv(c1, 1, 1, 3, mfp=True, activation_func='lin')
    offsets = c2.shape.mfp_offsets
    assert len(offsets) == c2.shape.n_fragments == 6
    assert sorted(o[0] for o in offsets) == list(range(6))
    x = np.random.default_rng(0).random((1, 1, 25)).astype(np.float32)
    fragments = c2(x)                         # (6, 1, n)
    dense = nm.FragmentsToDense(c2)(x)[0, 0]  # (6 n,)
    for k, (offset,) in enumerate(offsets):
        np.testing.assert_allclose(fragments[k, 0], dense[offset::6], rtol=1e-6)


@pytest.fixture
def strided_model_file(tmp_path):
    """A 2-D net (filters 4, 3, 3; pools 2, 2) saved with an input of 47 x 47."""
    nm.model_manager.newmodel('strided')
    inp = nm.Input((None, 1, 47, 47), 'b,f,x,y', name='raw')
    out = nm.Conv(nm.Conv(inp, 4, (4, 4), (2, 2)), 4, (3, 3), (2, 2))
    probs = nm.Softmax(nm.Conv(out, 2, (3, 3), activation_func='lin'))
    probs.model.designate_nodes(input_node=inp, prediction_node=probs)
    return probs.model.save(tmp_path / 'strided.mdl')


@pytest.mark.parametrize('mfp, wanted, snapped', [
    (False, (45, 45), (43, 43)), (False, (44, 50), (43, 51)),
    (True, (45, 45), (46, 46)), (True, (40, 40), (38, 38)), (True, (44, 50), (42, 50))])
def test_imposed_patch_size_snaps_each_axis_to_its_nearest_valid_size(strided_model_file, mfp,
                                                                      wanted, snapped):
    model = nm.modelload(strided_model_file, imposed_patch_size=wanted,
                         override_mfp_to_active=mfp, make_current=False)
    assert model.input_node.shape.spatial_shape == snapped


def test_mfp_without_an_imposed_size_snaps_the_saved_size(strided_model_file):
    model = nm.modelload(strided_model_file, override_mfp_to_active=True, make_current=False)
    assert model.input_node.shape.spatial_shape == (46, 46)
    assert model.prediction_node.shape.strides == (1, 1)


def creator_on(raw, labels, **kwargs):
    inp, target = regression_net(1)
    return BatchCreatorImage(inp, target, d_files=[raw], l_files=[labels], seed=0, **kwargs)


def test_getbatch_augments_nothing_unless_asked_as_the_original():
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (9, 30, 30), dtype=np.uint8)
    creator = creator_on(raw, rng.random((9, 30, 30)).astype(np.float32))
    images, _ = creator.getbatch(4)
    assert set(np.unique(images * 255).round().astype(int)) <= set(np.unique(raw))
    assert creator.n_warped == 0


def test_original_augmentation_keywords():
    raw = np.full((9, 30, 30), 200, np.uint8)
    labels = np.zeros((9, 30, 30), np.float32)
    plain = creator_on(raw, labels).getbatch(2)[0]
    assert np.all(plain == np.float32(200 / 255))
    erased = creator_on(raw, labels).getbatch(
        2, uniform_random_erasing_probability=1.0,
        uniform_random_erasing_args={'value': 0.0, 'num_blob_range': (2, 3),
                                     'blob_size_range': (3, 4)})[0]
    assert np.any(erased == 0) and np.mean(erased == 0) < 0.5
    noisy = creator_on(raw, labels).getbatch(
        2, noisy_random_erasing_probability=1.0,
        noisy_random_erasing_args={'noise_range': (0, 0.1), 'num_blob_range': (2, 3),
                                   'blob_size_range': (3, 4)})[0]
    assert np.any(noisy < 0.1) and np.any(noisy == np.float32(200 / 255))
    blurred = creator_on(raw, labels).getbatch(2, nga_blur_noise_probability=1.0)[0]
    assert not np.allclose(blurred, plain)


def test_ignore_thresh_raw_skips_empty_patches():
    raw = np.zeros((9, 30, 60), np.uint8)
    raw[:, :, 30:] = 255
    creator = creator_on(raw, np.zeros((9, 30, 60), np.float32))
    images = creator.getbatch(8, ignore_thresh_raw=0.5, intensity_thresh=0.0)[0]
    assert all(np.mean(image <= 0) <= 0.5 for image in images)
    with pytest.raises(DataError, match='ignore_thresh_raw'):
        creator.getbatch(1, ignore_thresh_raw=0.5, intensity_thresh=1.0)


def test_apply_func_reductions_remove_the_named_axes_and_survive_saving(tmp_path):
    nm.model_manager.newmodel('reductions')
    inp = nm.Input((None, 3, 5, 6), 'b,f,x,y', name='raw')
    mean = nm.ApplyFunc(inp, 'torch.mean', kwargs={'axis': 'f'}, name='mean')   # ELEKTRONN2's axis
    peak = nm.ApplyFunc(mean, 'torch.amax', kwargs={'dim': ['x', 'y'], 'keepdim': True}, name='peak')
    assert mean.shape.tags == ('b', 'x', 'y') and peak.shape.shape == (None, 1, 1)
    x = np.random.default_rng(3).random((2, 3, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(peak(x), x.mean(1).max((1, 2), keepdims=True), rtol=1e-6)
    peak.model.designate_nodes(input_node=inp, prediction_node=peak)
    loaded = nm.modelload(peak.model.save(tmp_path / 'reductions.mdl'), make_current=False)
    np.testing.assert_allclose(loaded['peak'](x), peak(x), rtol=1e-6)
    total = nm.ApplyFunc(inp, 'torch.sum', name='total')  # no axis: all axes, as Theano's T.sum
    assert total.shape.shape == () and np.isclose(total(x), x.sum(), rtol=1e-5)
    with pytest.raises(ConfigError, match='not both'):
        nm.ApplyFunc(inp, 'torch.sum', kwargs={'dim': 1, 'axis': 'f'})


def test_schedules_as_elektronn2_meant_them():
    """'lindec': [n, v] goes from v down to 0 over n steps; values may be per-layer lists."""
    from elektronn2.training.schedules import Schedule
    lindec = Schedule.from_spec('lr', {'lindec': [1000, 1e-3]})
    assert lindec.value_at(0, 0.5) == pytest.approx(1e-3)
    assert lindec.value_at(250, 1e-3) == pytest.approx(7.5e-4)
    assert lindec.value_at(1000, 1e-6) == 0.0 and lindec.value_at(1001, 0.0) is None
    per_layer = Schedule.from_spec('dropout', {'lindec': [100, [0.4, 0.2, 0.0]]})
    assert per_layer.value_at(50, [0.4, 0.2, 0.0]) == pytest.approx([0.2, 0.1, 0.0])
    steps = Schedule.from_spec('dropout', {'updates': [(10, [0.5, 0.0]), (20, 0.1)]})
    assert steps.value_at(10, 0.3) == [0.5, 0.0] and steps.value_at(20, [0.5, 0.0]) == 0.1
    dec = Schedule.from_spec('dropout', {'dec': 0.5})
    assert dec.value_at(1000, [0.4, 0.2]) == pytest.approx([0.2, 0.1])


def test_class_weights_with_independent_softmax_groups():
    """Softmax(n_indep=2) over 4 features: 2 weights are shared by both groups, 4 weights
    (ELEKTRONN2's length) weight each output feature."""
    nm.model_manager.newmodel('groups')
    inp = nm.Input((None, 3), 'b,f', name='x')
    probs = nm.Softmax(nm.Perceptron(inp, 4, activation_func='lin'), n_indep=2)
    target = nm.Input((None, 2), 'b,f', dtype='int16', name='target')
    x = np.random.default_rng(4).random((5, 3)).astype(np.float32)
    labels = np.array([[0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], np.int16)
    shared = nm.MultinoulliNLL(probs, target, target_is_sparse=True, class_weights=[1.0, 3.0])
    per_feature = nm.MultinoulliNLL(probs, target, target_is_sparse=True,
                                    class_weights=[1.0, 3.0, 1.0, 3.0])
    other = nm.MultinoulliNLL(probs, target, target_is_sparse=True,
                              class_weights=[1.0, 3.0, 2.0, 2.0])
    np.testing.assert_allclose(shared(x, labels), per_feature(x, labels), rtol=1e-6)
    assert not np.allclose(other(x, labels), shared(x, labels))
    with pytest.raises(ShapeError, match='give 2 .* or 4'):
        nm.MultinoulliNLL(probs, target, target_is_sparse=True, class_weights=[1.0, 2.0, 3.0])
