"""BatchCreatorImage on real EM data (FIB-25, ISBI 2012) with strided 3-D and 2-D nets."""
import pickle

import h5py
import numpy as np
import pytest
import zarr

import elektronn2.neuromancer as nm
from elektronn2.data import BatchCreatorImage, ids2barriers, save_batch_picture, write_knossos_dataset
from elektronn2.errors import ConfigError, DataError

FIB_RAW = 'volumes/raw'


@pytest.fixture(scope='module')
def fib25_volumes(data_dir):
    with h5py.File(data_dir / 'em' / 'fib25_training_sample2.h5', 'r') as f:
        return f[FIB_RAW][:], f['volumes/labels/neuron_ids'][:]


@pytest.fixture(scope='module')
def isbi_volumes(data_dir):
    with h5py.File(data_dir / 'em' / 'isbi2012.h5', 'r') as f:
        return f['train/raw'][:], (f['train/labels'][:] == 0).astype(np.uint8)


def fib25_creator(nodes, fib25, fib25_barriers, **kwargs):
    return BatchCreatorImage(*nodes, d_files=[(fib25.name, FIB_RAW)], d_path=fib25.parent,
                             l_files=[(str(fib25_barriers), 'barriers')], aniso_factor=1,
                             seed=0, **kwargs)


def values_under_outputs(creator, images):
    """Image values at the output voxel positions (b, *out), network order."""
    g = creator.geometry
    offsets = [int(o) for o in g.net_order(g.offsets)]
    strides, out = g.net_order(g.strides), g.net_order(g.out)
    index = tuple(slice(o, o + (n - 1) * s + 1, s) for o, s, n in zip(offsets, strides, out))
    return images[(slice(None), 0) + index]


def contrast(under, targets):
    """Per example: mean grey value off minus on boundary targets (positive: darker)."""
    return np.array([u[t[0] == 0].mean() - u[t[0] == 1].mean() for u, t in zip(under, targets)])


def boundary_contrast(creator, images, targets):
    return contrast(values_under_outputs(creator, images), targets)


# --- acceptance: shapes and registration ----------------------------------------------------
def test_fib25_warped_batches_stay_registered(neuro3d_lite, fib25, fib25_barriers, tmp_path):
    creator = fib25_creator(neuro3d_lite, fib25, fib25_barriers)
    images, targets = creator.getbatch(6, warp=1, warp_args={'lock_z': False, 'perspective': True})
    assert images.shape == (6, 1, 11, 155, 155) and images.dtype == np.float32
    assert targets.shape == (6, 1, 4, 30, 30) and targets.dtype == np.int16
    assert 0 <= images.min() and images.max() <= 1 and set(np.unique(targets)) == {0, 1}
    assert creator.n_warped == 6 and creator.n_warp_fallbacks == 0
    warped = boundary_contrast(creator, images, targets)
    plain = boundary_contrast(creator, *creator.getbatch(6, warp=0))
    # boundaries sit on darker raw voxels, as in unwarped data (raw means 99 vs 134 of 255)
    assert np.all(warped > 0.03) and np.all(plain > 0.03)  # with grey-value augmentation
    assert warped.mean() > 0.6 * plain.mean()
    # the measure is sensitive: it drops when targets are moved by 1 or 2 output voxels (4 or
    # 8 input voxels) and vanishes for targets of other examples
    under = values_under_outputs(creator, images)
    assert contrast(under[..., :-1], targets[..., 1:]).mean() < 0.8 * warped.mean()
    assert contrast(under[..., :-2], targets[..., 2:]).mean() < 0.6 * warped.mean()
    assert abs(contrast(under, np.roll(targets, 1, axis=0)).mean()) < 0.25 * warped.mean()
    save_batch_picture(images, targets, tmp_path / 'fib25.png', creator.geometry.net_order(
        creator.geometry.offsets), creator.geometry.net_order(creator.geometry.strides))
    assert (tmp_path / 'fib25.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_isbi_2d_net_samples_registered_slices(planar_net, isbi, isbi_boundaries, tmp_path):
    creator = BatchCreatorImage(*planar_net, d_files=[(isbi, 'train/raw')],
                                l_files=[(isbi_boundaries, 'boundaries')], seed=1)
    images, targets = creator.getbatch(8, warp=1, grey_augment_channels=[])
    assert images.shape == (8, 1, 127, 127) and targets.shape == (8, 1, 28, 28)
    assert targets.dtype == np.int16 and images.dtype == np.float32
    warped = boundary_contrast(creator, images, targets)
    plain = boundary_contrast(creator, *creator.getbatch(8, warp=0, grey_augment_channels=[]))
    assert np.all(warped > 0.05) and warped.mean() > 0.7 * plain.mean()
    g = creator.geometry
    save_batch_picture(images, targets, tmp_path / 'isbi.png', g.net_order(g.offsets),
                       g.net_order(g.strides))
    assert (tmp_path / 'isbi.png').stat().st_size > 10_000


def test_regression_targets_equal_the_warped_image_at_the_outputs(neuro3d_lite, fib25):
    """Labels = raw: the warped target must equal the warped image under every output."""
    creator = BatchCreatorImage(*neuro3d_lite, d_files=[(fib25, FIB_RAW)],
                                l_files=[(fib25, FIB_RAW)], target_discrete_ix=[],
                                aniso_factor=1, seed=2)
    images, targets = creator.getbatch(3, warp=1, grey_augment_channels=[],
                                       warp_args={'lock_z': False, 'perspective': True})
    assert targets.dtype == np.float32
    np.testing.assert_allclose(targets[:, 0] / 255, values_under_outputs(creator, images),
                               atol=1e-5)


@pytest.mark.parametrize('lock_z', [True, False])
def test_elastic_targets_equal_the_deformed_image_at_the_outputs(neuro3d_lite, fib25, lock_z):
    """An elastic deformation moves images and targets alike (labels = raw)."""
    creator = BatchCreatorImage(*neuro3d_lite, d_files=[(fib25, FIB_RAW)],
                                l_files=[(fib25, FIB_RAW)], target_discrete_ix=[],
                                aniso_factor=1, seed=3)
    images, targets = creator.getbatch(2, warp=1, grey_augment_channels=[], warp_args={
        'lock_z': lock_z, 'elastic': 5.0, 'elastic_spacing': 20.0})
    np.testing.assert_allclose(targets[:, 0] / 255, values_under_outputs(creator, images),
                               atol=1e-5)


def test_elastic_deformation_alone_bends_the_2d_patch_and_keeps_labels_registered(planar_net, isbi):
    creator = BatchCreatorImage(*planar_net, d_files=[(isbi, 'train/raw')],
                                l_files=[(isbi, 'train/raw')], target_discrete_ix=[], seed=4)
    elastic_only = {'warp_amount': 0, 'flips': False, 'swaps': False, 'elastic': 6.0}
    images, targets = creator.getbatch(4, warp=1, grey_augment_channels=[], warp_args=elastic_only)
    np.testing.assert_allclose(targets[:, 0] / 255, values_under_outputs(creator, images),
                               atol=1e-5)
    assert creator.n_warped == 4
    # the affine part is the identity, so only the deformation can move pixels off the grid
    grey = images * 255
    assert np.abs(grey - grey.round()).mean() > 0.05


# --- geometry: targets under the output voxels ------------------------------------------------
def test_targets_line_up_with_the_3d_output_geometry(neuro3d_lite, fib25, fib25_barriers,
                                                     fib25_volumes):
    creator = fib25_creator(neuro3d_lite, fib25, fib25_barriers)
    raw, ids = fib25_volumes
    barriers = ids2barriers(ids)
    z, y, x = 100, 40, 60
    image, target = creator.example_at(0, (z, y, x))
    # tags z,x,y: the data's y and x axes are swapped; offsets (2, 19, 19), strides (2, 4, 4)
    crop = raw[z:z + 11, y:y + 155, x:x + 155]
    np.testing.assert_array_equal(image[0], crop.transpose(0, 2, 1) / np.float32(255))
    expected = barriers[z + 2:z + 2 + 4 * 2:2, y + 19:y + 19 + 30 * 4:4, x + 19:x + 19 + 30 * 4:4]
    np.testing.assert_array_equal(target[0], expected.transpose(0, 2, 1))
    dense_image, dense = creator.example_at(0, (z, y, x), force_dense=True)
    dense_expected = barriers[z + 2:z + 9, y + 19:y + 136, x + 19:x + 136]
    np.testing.assert_array_equal(dense[0], dense_expected.transpose(0, 2, 1))


def test_targets_line_up_with_the_2d_output_geometry(planar_net, isbi, isbi_boundaries,
                                                     isbi_volumes):
    creator = BatchCreatorImage(*planar_net, d_files=[(isbi, 'train/raw')],
                                l_files=[(isbi_boundaries, 'boundaries')])
    raw, boundaries = isbi_volumes
    image, target = creator.example_at(0, (5, 100, 200))
    np.testing.assert_array_equal(image[0], raw[5, 100:227, 200:327].T / np.float32(255))
    np.testing.assert_array_equal(target[0], boundaries[5, 109:221:4, 209:321:4].T)


def test_flip_through_the_warp_kernel_keeps_targets_registered(planar_net, isbi, isbi_boundaries):
    creator = BatchCreatorImage(*planar_net, d_files=[(isbi, 'train/raw')],
                                l_files=[(isbi_boundaries, 'boundaries')])
    image, target = creator.example_at(0, (5, 100, 200))
    flip_y = np.diag([1.0, -1.0, 1.0, 1.0])  # data y is the network's second axis ('x,y')
    flipped_image, flipped_target = creator.example_at(0, (5, 100, 200), transform=flip_y)
    np.testing.assert_array_equal(flipped_image, image[:, :, ::-1])
    np.testing.assert_array_equal(flipped_target, target[:, :, ::-1])


def test_other_source_formats_give_the_same_examples(planar_net, isbi, isbi_boundaries,
                                                     isbi_volumes, tmp_path):
    raw, boundaries = isbi_volumes
    knossos = write_knossos_dataset(tmp_path / 'isbi_knossos', raw[:, :256, :256], name='isbi')
    zarr.open_array(str(tmp_path / 'labels.zarr'), mode='w', shape=(30, 256, 256),
                    dtype='u1')[:] = boundaries[:, :256, :256]
    np.save(tmp_path / 'raw.npy', raw[:, :256, :256])
    reference = BatchCreatorImage(*planar_net, d_files=[(isbi, 'train/raw')],
                                  l_files=[(isbi_boundaries, 'boundaries')])
    expected = reference.example_at(0, (7, 30, 90))
    for d_file, l_file in [(knossos, tmp_path / 'labels.zarr'),
                           (tmp_path / 'raw.npy', boundaries[:, :256, :256])]:
        creator = BatchCreatorImage(*planar_net, d_files=[d_file], l_files=[l_file])
        for got, want in zip(creator.example_at(0, (7, 30, 90)), expected):
            np.testing.assert_array_equal(got, want)


# --- options ----------------------------------------------------------------------------------
def planar_arrays(labels_value, shape=(3, 130, 130)):
    rng = np.random.default_rng(int(labels_value) + 10)
    return rng.integers(0, 256, shape, dtype=np.uint8), np.full(shape, labels_value, np.int16)


def test_cube_prios_and_valid_cubes(planar_net):
    (image0, labels0), (image1, labels1) = planar_arrays(0), planar_arrays(1)
    creator = BatchCreatorImage(*planar_net, d_files=[image0, image1, image0],
                                l_files=[labels0, labels1, labels0], cube_prios=[1, 0],
                                valid_cubes=[2], seed=3)
    assert creator.getbatch(5, warp=0.5)[1].min() == 0 and creator.getbatch(5)[1].max() == 0
    creator = BatchCreatorImage(*planar_net, d_files=[image0, image1], l_files=[labels0, labels1],
                                cube_prios=[0, 1], valid_cubes=[0], seed=3)
    assert creator.getbatch(4)[1].min() == 1 and creator.getbatch(4, source='valid')[1].max() == 0
    with pytest.raises(DataError, match='No validation cubes'):
        BatchCreatorImage(*planar_net, d_files=[image0], l_files=[labels0]).getbatch(1, 'valid')
    with pytest.raises(ConfigError, match="source='test' is invalid"):
        creator.getbatch(1, source='test')
    with pytest.raises(ConfigError, match='cube_prios has 3 entries'):
        BatchCreatorImage(*planar_net, d_files=[image0, image1], l_files=[labels0, labels1],
                          cube_prios=[1, 1, 1])


def test_mirror_border_mode_uses_labels_up_to_the_border(planar_net):
    image, _ = planar_arrays(0, shape=(2, 120, 120))
    labels = np.random.default_rng(0).integers(0, 2, (2, 120, 120)).astype(np.int16)
    with pytest.raises(DataError, match="axis 'y': input patch 127, image 120"):
        BatchCreatorImage(*planar_net, d_files=[image], l_files=[labels])
    creator = BatchCreatorImage(*planar_net, d_files=[image], l_files=[labels],
                                border_mode='mirror')
    got_image, target = creator.example_at(0, (1, -9, -9))  # first output at label (0, 0)
    np.testing.assert_array_equal(target[0], labels[1, 0:109:4, 0:109:4].T)
    padded = np.pad(image[1], ((9, 0), (9, 0)), mode='symmetric')[:127, :127]
    np.testing.assert_array_equal(got_image[0], padded.T / np.float32(255))
    assert creator.getbatch(3, warp=1)[1].shape == (3, 1, 28, 28)


def test_affinities_and_nhood_targets(neuro3d_lite, planar_net, fib25, isbi, isbi_boundaries):
    inp, target = neuro3d_lite
    affinity_target = nm.Input_like(target.ref, override_f=3, name='affinities')
    creator = BatchCreatorImage(inp, affinity_target, d_files=[(fib25, FIB_RAW)],
                                l_files=[(fib25, 'volumes/labels/neuron_ids')], aniso_factor=1,
                                seed=0)
    _, aff = creator.getbatch(2, warp=1, affinities=True)
    assert aff.shape == (2, 3, 4, 30, 30) and aff.dtype == np.int16
    # most neighbours belong to the same neuron (a boundary every few dozen voxels)
    assert set(np.unique(aff)) == {0, 1} and 0.5 < aff.mean() < 0.99
    with pytest.raises(DataError, match='contain the value .*, but the network predicts 2'):
        creator.getbatch(1)  # ids are no class labels
    images, aff, seg = creator.getbatch(1, affinities='malis')   # ELEKTRONN2's MALIS batches
    assert seg.shape == (1, 1, 4, 30, 30) and aff.shape == (1, 3, 4, 30, 30)
    z_linked = aff[0, 0, 1:] == 1   # the z edge joins each voxel to its predecessor
    assert np.all(seg[0, 0, 1:][z_linked] == seg[0, 0, :-1][z_linked])
    with pytest.raises(ConfigError, match="affinities='mutex'"):
        creator.getbatch(1, affinities='mutex')
    inp2, target2 = planar_net
    nhood_target = nm.Input_like(target2.ref, override_f=5, name='nhood')
    creator = BatchCreatorImage(inp2, nhood_target, d_files=[(isbi, 'train/raw')],
                                l_files=[(isbi_boundaries, 'boundaries')])
    _, nhood = creator.getbatch(2, nhood_targets=True)
    assert nhood.shape == (2, 5, 28, 28)
    np.testing.assert_array_equal(nhood[:, 1, 1:], nhood[:, 0, :-1])  # label at p - (1, 0)
    assert (nhood[:, 1, 0] == -1).all()
    with pytest.raises(DataError, match=r'Targets have 1 channel\(s\) but the target node exp'):
        creator.getbatch(1)


def test_ignore_thresh(planar_net):
    image, labels = planar_arrays(1, shape=(3, 130, 400))
    labels[:, :, 200:] = -1  # right part unlabelled
    creator = BatchCreatorImage(*planar_net, d_files=[image], l_files=[labels], seed=4)
    _, targets = creator.getbatch(6, warp=0, ignore_thresh=0.1)
    assert ((targets < 0).mean(axis=(1, 2, 3)) <= 0.1).all()
    labels[:] = -1
    creator = BatchCreatorImage(*planar_net, d_files=[image], l_files=[labels])
    with pytest.raises(DataError, match='unlabelled target voxels'):
        creator.getbatch(1, ignore_thresh=0.5)


def test_pickled_creator_makes_batches(planar_net, isbi, isbi_boundaries):
    creator = BatchCreatorImage(*planar_net, d_files=[(isbi, 'train/raw')],
                                l_files=[(isbi_boundaries, 'boundaries')], seed=5)
    creator.getbatch(1)
    clone = pickle.loads(pickle.dumps(creator))
    for a, b in zip(clone.getbatch(2, warp=1), creator.getbatch(2, warp=1)):
        np.testing.assert_array_equal(a, b)  # same generator state, files reopened


# --- errors -------------------------------------------------------------------------------------
def test_errors_name_files_keys_and_fixes(planar_net, neuro3d_lite, isbi, tmp_path):
    with pytest.raises(DataError, match=r"Image file .*nope\.h5 \(key 'raw'\) does not exist"):
        BatchCreatorImage(*planar_net, d_files=[('nope.h5', 'raw')], l_files=[('nope.h5', 'l')],
                          d_path=tmp_path)
    with pytest.raises(DataError, match=r"Key 'train/label' in HDF5 file .*isbi2012\.h5 does not "
                                        r"exist; its datasets are: test/raw, train/labels, "
                                        r"train/raw"):
        BatchCreatorImage(*planar_net, d_files=[(isbi, 'train/raw')],
                          l_files=[(isbi, 'train/label')])
    image, labels = planar_arrays(0)
    with pytest.raises(DataError, match=r'cannot be centred in image .*difference must be even'):
        BatchCreatorImage(*planar_net, d_files=[image], l_files=[labels[:, 1:]])
    with pytest.raises(DataError, match=r"isbi2012\.h5:train/labels contain the value 255, but "
                                        r"the network predicts 2 classes"):
        BatchCreatorImage(*planar_net, d_files=[(isbi, 'train/raw')],
                          l_files=[(isbi, 'train/labels')]).getbatch(1)
    small = np.zeros((10, 200, 200), np.uint8)
    with pytest.raises(DataError, match=r"axis 'z': input patch 11, image 10.*largest input "
                                        r"patch \(z,x,y\) that fits the image is \(10, 155, 155\)"):
        BatchCreatorImage(*neuro3d_lite, d_files=[small], l_files=[small])
    with pytest.raises(ConfigError, match='border_mode'):
        BatchCreatorImage(*planar_net, d_files=[image], l_files=[labels], border_mode='wrap')
    with pytest.raises(DataError, match='expects 1'):
        BatchCreatorImage(*planar_net, d_files=[np.stack([image, image])], l_files=[labels])


def test_lazy_label_masks(planar_net, tmp_path):
    image, labels = planar_arrays(0)
    with h5py.File(tmp_path / 'lazy.h5', 'w') as f:
        f['labels'] = labels
        f['ll_mask'] = [[1, 0], [0, 1]]  # class 0 labelled, class 1 known to be absent
    creator = BatchCreatorImage(*planar_net, d_files=[image, image],
                                l_files=[(tmp_path / 'lazy.h5', 'labels'), labels],
                                valid_cubes=[1])
    images, targets, labelled, absent = creator.getbatch(3, ret_ll_mask=True)
    assert labelled.shape == absent.shape == (3, 2) and labelled.dtype == np.int16
    assert (labelled == [1, 0]).all() and (absent == [0, 1]).all()
    _, _, labelled, absent = creator.getbatch(2, 'valid', ret_ll_mask=True)
    assert (labelled == 1).all() and (absent == 0).all()  # no ll_mask: everything labelled
    with h5py.File(tmp_path / 'bad.h5', 'w') as f:
        f['labels'] = labels
        f['ll_mask'] = [1, 0]
    with pytest.raises(DataError, match=r'bad\.h5:ll_mask has shape \(2,\); it must be \(2, 2\)'):
        BatchCreatorImage(*planar_net, d_files=[image], l_files=[(tmp_path / 'bad.h5', 'labels')])
