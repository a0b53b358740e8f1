"""ELEKTRONN2's data modules under their original names (elektronn2.data.cnndata, .image,
.knossos_array, .non_geometric_augmentation, .traindata, .transformations): every name of
the original API resolves with its arguments, and behaves as the original did, checked
on the real FIB-25 and MNIST data where data matters."""
import gzip
import inspect
import multiprocessing as mp
import os
import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

import elektronn2.neuromancer as nm
from elektronn2.data import augmentation as aug
from elektronn2.data import batchcreator, cnndata, image, knossos_array, labels, traindata
from elektronn2.data import non_geometric_augmentation as nga
from elektronn2.data import transformations as tr
from elektronn2.data.knossos import write_knossos_dataset
from elektronn2.data.rng import seed_of
from elektronn2.errors import ConfigError, DataError

API_FILE = Path('/work/shared/reference/elektronn2_api.txt')
MODULES = {'cnndata': cnndata, 'image': image, 'knossos_array': knossos_array,
           'non_geometric_augmentation': nga, 'traindata': traindata, 'transformations': tr}
OUT_OF_SCOPE = {'DummySkel', 'AgentData', 'GridData'}  # skeleton tracing


# --- fixtures: crops of the real FIB-25 volume ------------------------------------------------
@pytest.fixture(scope='module')
def fib25(data_dir):
    """FIB-25 raw (uint8) and neuron ids (int64) of z 0..39, y 0..99, x 0..99."""
    path = data_dir / 'em' / 'fib25_training_sample2.h5'
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with h5py.File(path, 'r') as f:
        return (f['volumes/raw'][:40, :100, :100],
                f['volumes/labels/neuron_ids'][:40, :100, :100].astype(np.int64))


@pytest.fixture(scope='module')
def boundary_pred(fib25):
    """A good 'prediction' (z, y, x) in 0..255: smoothed FIB-25 boundaries."""
    barriers = labels.ids2barriers(fib25[1]).astype(np.float32)
    return np.clip(ndimage.gaussian_filter(barriers, 0.7) * 255 * 1.5, 0, 255).astype(np.uint8)


def _api_entries():
    if not API_FILE.is_file():
        return []
    pattern = re.compile(r'^elektronn2\.data\.(\w+):(\w+)\((.*?)\)( \[class: .*\])?$')
    entries = []
    for line in API_FILE.read_text().splitlines():
        match = pattern.match(line)
        if match and match.group(1) in MODULES and match.group(2) not in OUT_OF_SCOPE:
            entries.append(match.groups()[:3])
    return entries


@pytest.mark.parametrize('module, name, signature', _api_entries())
def test_api_names_and_signatures(module, name, signature):
    obj = getattr(MODULES[module], name)
    if name == 'BatchCreatorImage':
        assert obj is batchcreator.BatchCreatorImage  # a re-export: one class
        return
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = [p for p in inspect.signature(target).parameters.values() if p.name != 'self']
    if inspect.isclass(obj) and not signature:  # a class without its own __init__
        return
    prefix = {inspect.Parameter.VAR_POSITIONAL: '*', inspect.Parameter.VAR_KEYWORD: '**'}
    actual = [prefix.get(p.kind, '') + p.name
              + ('' if p.default is inspect.Parameter.empty else f"={p.default!r}") for p in params]
    assert ', '.join(actual) == signature


def test_api_list_is_complete():
    entries = _api_entries()
    if not entries:
        pytest.skip(f"{API_FILE} not found")
    assert len(entries) == 3 + 15 + 7 + 11 + 4 + 26  # cnndata, image, knossos_array, ...


# --- cnndata ------------------------------------------------------------------------------------
def test_grey_augment_is_the_package_grey_augment(fib25):
    patch = np.stack([fib25[0][:4, :50, :50], fib25[0][4:8, :50, :50]]).astype(np.float32) / 255
    out = cnndata.greyAugment(patch, [0], np.random.RandomState(3))
    expected = aug.grey_augment(patch, [0], np.random.RandomState(3))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[1], patch[1])  # other channels untouched
    assert 0 <= out.min() and out.max() <= 1 and not np.allclose(out[0], patch[0])
    assert cnndata.greyAugment(patch, [], np.random.RandomState(0)) is patch


def test_border_treatment_crops_and_pads(fib25):
    volume = fib25[0][None, :10, :20, :30]
    cropped, = cnndata.border_treatment([volume], (6, 10, 11), 'crop', 3)
    np.testing.assert_array_equal(cropped, volume[:, 2:8, 5:15, 9:20])
    mirrored, padded = [cnndata.border_treatment([volume], (12, 25, 30), mode, 3)[0]
                        for mode in ('mirror', '0-pad')]
    pad = [(0, 0), (1, 1), (3, 2), (0, 0)]
    np.testing.assert_array_equal(mirrored, np.pad(volume, pad, mode='symmetric'))
    np.testing.assert_array_equal(padded, np.pad(volume, pad))
    planar, = cnndata.border_treatment([volume], (10, 10), 'crop', 2)  # z kept
    np.testing.assert_array_equal(planar, volume[:, :, 5:15, 10:20])
    assert cnndata.border_treatment([volume], (1, 1, 1), 'keep', 3)[0] is volume


# --- image --------------------------------------------------------------------------------------
def test_make_affinities_on_fib25(fib25):
    ids = fib25[1][:20, :60, :60]
    aff, seg = image.make_affinities(ids[None])
    assert aff.shape == (1, 3, 20, 60, 60) and aff.dtype == np.int16
    assert seg.shape == (1, 20, 60, 60) and seg.dtype == np.int16
    same_z = (ids[:-1] == ids[1:]) & (ids[:-1] != 0)
    np.testing.assert_array_equal(aff[0, 0, :-1], same_z)  # edge k of p joins p and p + e_k
    assert not aff[0, 0, -1].any() and not aff[0, 2, :, :, -1].any()
    # the re-derived ids refine the ground truth: every component lies in one object
    pairs = np.unique(np.stack([seg[0].ravel(), ids.ravel()]), axis=1)
    assert len(np.unique(pairs[0][pairs[0] > 0])) == np.sum(pairs[0] > 0)
    assert np.all(ids[seg[0] > 0] > 0)
    big = image.make_affinities(ids[None], size_thresh=500)[1][0]
    assert np.bincount(big.ravel())[1:].min() > 500
    large = np.bincount(seg[0].ravel())[seg[0]] > 500  # voxels of components above 500
    assert np.all(big[large & (seg[0] > 0)] > 0) and not big[~large].any()


def test_make_nhood_targets(fib25):
    target = fib25[1][None, None, :6, :8, :9].astype(np.int32)
    nhood = np.array([[0, 0, 0], [1, 0, 0], [0, -1, 2]])
    out = image.make_nhood_targets(target, nhood)
    assert out.shape == (1, 3, 6, 8, 9)
    np.testing.assert_array_equal(out[0, 0], target[0, 0])
    np.testing.assert_array_equal(out[0, 1, 1:], target[0, 0, :-1])  # label at p - nhood[k]
    assert np.all(out[0, 1, 0] == -1)
    np.testing.assert_array_equal(out[0, 2, :, :-1, 2:], target[0, 0, :, 1:, :-2])


def test_downsample_xy(fib25):
    d = fib25[0][None, :3, :10, :11].astype(np.float32)
    l_ = (fib25[1][:3, :10, :11] == fib25[1][0, 0, 0]).astype(np.int16)
    new_d, new_l = image.downsample_xy(d, l_, 2)
    assert new_d.shape == (1, 3, 5, 5) and new_l.shape == (3, 5, 5)
    assert new_d[0, 1, 2, 3] == pytest.approx(d[0, 1, 4:6, 6:8].mean())
    assert new_l[2, 4, 0] == pytest.approx(l_[2, 8:10, 0:2].mean())


def test_ids2barriers_defaults_and_smoothen(fib25):
    ids = fib25[1]
    barriers = image.ids2barriers(ids)
    np.testing.assert_array_equal(barriers, labels.ids2barriers(ids, dilute=True))
    assert barriers.dtype == np.int16 and 0.1 < barriers.mean() < 0.5
    thin = image.ids2barriers(ids, dilute=[False] * 3)
    assert thin.sum() < barriers.sum()
    smooth = image.ids2barriers(ids, smoothen=True)
    assert set(np.unique(smooth)) <= {0, 1} and not np.array_equal(smooth, barriers)
    assert abs(smooth.mean() - barriers.mean()) < 0.05  # rounds off, keeps the amount
    isolated = np.zeros((5, 5, 5), np.int16)
    isolated[2, 2, 2] = 1  # a lone voxel: weighted vote 1 < 4, removed
    assert not labels.smoothen_barriers(isolated).any()
    assert labels.smoothen_barriers(np.ones((5, 5, 5))).all()


def test_blob():
    kernel = image.blob((3, 5, 7))
    assert kernel.shape == (3, 5, 7) and np.sum(kernel ** 2) == pytest.approx(1)
    assert np.unravel_index(kernel.argmax(), kernel.shape) == (1, 2, 3)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1, ::-1])


def test_smearbarriers(fib25):
    barriers = labels.ids2barriers(fib25[1][:20, :50, :50]).astype(np.float32)
    soft = image.smearbarriers(barriers)
    assert soft.shape == barriers.shape and 0 <= soft.min() and soft.max() <= 1
    assert soft[barriers == 1].mean() > 0.5 > soft[barriers == 0].mean()
    assert np.mean(np.abs(soft - barriers)) > 0.01  # it does smear
    assert not image.smearbarriers(np.zeros((5, 7, 7))).any()
    np.testing.assert_allclose(image.smearbarriers(np.ones((5, 7, 7))), 1)
    sized = image.smearbarriers(barriers, kernel=(3, 3, 3))
    assert sized.shape == barriers.shape and 0 <= sized.min() and sized.max() <= 1


def test_grow_seg():
    seg = np.zeros((7, 9, 9), np.int16)
    seg[3, 4, 4] = 5
    grown = image.grow_seg(seg, pixel=[1, 3, 3])
    assert grown[3, 4, 1] == grown[3, 1, 4] == grown[2, 4, 4] == 5  # 3 in y/x, 1 in z
    assert grown[1, 4, 4] == 0 and grown[3, 4, 0] == 0
    assert np.sum(image.grow_seg(seg, pixel=1) == 5) == 7  # a cross
    seg[3, 4, 6] = 2  # another segment: growth stops where they meet, none is overwritten
    both = image.grow_seg(seg, 2)
    assert both[3, 4, 6] == 2 and both[3, 4, 4] == 5 and both[3, 4, 8] == 2
    assert image.grow_seg(seg, 0) is seg


def test_center_cubes():
    a, b = np.arange(2 * 6 * 8 * 10).reshape(2, 6, 8, 10), np.ones((4, 10, 6))
    ca, cb = image.center_cubes(a, b)
    assert ca.shape == (2, 4, 8, 6) and cb.shape == (4, 8, 6)
    np.testing.assert_array_equal(ca, a[:, 1:5, :, 2:8])
    np.testing.assert_array_equal(cb, b[:, 1:9])
    pa, pb = image.center_cubes(a, b, crop=False)
    assert pa.shape == (2, 6, 10, 10) and pb.shape == (6, 10, 10)
    assert pb[0].sum() == 0 and pb[1:5, :, 2:8].all()


def test_seg_old_and_seg_proc(fib25, boundary_pred):
    gt = fib25[1]
    seg = image.seg_old(boundary_pred, thresh=1.5, hi_thresh=160, lo_thresh=60, grow_it=2,
                        scale=[1, 1, 1])
    assert seg.shape == gt.shape and seg.dtype == np.int16
    assert len(np.unique(seg)) > 20
    kwargs = dict(gt=gt, pred=boundary_pred, thresh=1.5, hi_thresh=160, lo_thresh=60, grow_it=2,
                  scale=[1, 1, 1])
    error = image.seg_proc(kwargs)
    assert 'gt' not in kwargs and error < 0.25  # good boundaries, good segmentation
    noise = np.random.RandomState(0).randint(0, 256, gt.shape).astype(np.uint8)
    assert image.seg_proc(dict(gt=gt, pred=noise, scale=[1, 1, 1])) > error


def test_optimise_segmentation(fib25, boundary_pred, tmp_path):
    gt, pred = fib25[1][:6, :40, :40], boundary_pred[:6, :40, :40]
    errors, best, seg = image.optimise_segmentation(gt, pred, str(tmp_path / 'fib'), n_proc=1)
    assert errors.shape == (144,) and best == errors.min() and seg.shape == gt.shape
    report = (tmp_path / 'fib-Seg_Params.txt').read_text().splitlines()
    assert len(report) == 2 + 144 and f"{best:.4f}" in report[1]
    with h5py.File(tmp_path / 'fib_seg.h5', 'r') as f:
        assert f['seg'].shape == gt.shape


def test_randomise_colours():
    ids = np.repeat(np.arange(6), [3000, 10, 2000, 1600, 5, 1700]).astype(np.int32)
    out = image.randomise_colours(ids, size_filter=1500)
    assert out.dtype == ids.dtype
    assert np.all(out[ids == 0] == 0) and np.all(out[(ids == 1) | (ids == 4)] == 0)
    colours = [np.unique(out[ids == i]) for i in (2, 3, 5)]
    assert all(len(c) == 1 for c in colours)
    assert sorted(int(c[0]) for c in colours) == [1, 2, 3]


def test_billig_seg_and_scan(fib25, boundary_pred, tmp_path):
    gt = fib25[1]
    error, seg = image.billig_seg(gt, boundary_pred, 100, 253)
    assert seg.shape == gt.shape and error < 0.3
    assert np.all(seg[boundary_pred > 253] == 0)
    args = dict(gt=gt, pred=boundary_pred, thresh=100, ecs_thresh=253)
    assert image.billig_seg_proc(args) == pytest.approx(error)
    best, best_seg = image.optimise_billig_segmentation(gt[:10], boundary_pred[:10],
                                                        str(tmp_path / 'b'), n_proc=1)
    assert best <= image.billig_seg(gt[:10], boundary_pred[:10], 100, 253)[0] + 1e-9
    assert best_seg.shape == gt[:10].shape and (tmp_path / 'b_seg.h5').is_file()


# --- knossos_array ------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def knossos_fib25(data_dir, fib25, tmp_path_factory):
    """Two KNOSSOS datasets of FIB-25 raw (150 x 140 x 130 voxels: several cubes)."""
    root = tmp_path_factory.mktemp('knossos')
    with h5py.File(data_dir / 'em' / 'fib25_training_sample2.h5', 'r') as f:
        raw = f['volumes/raw'][:150, :140, :130]
    write_knossos_dataset(root / 'raw', raw, name='fib25')
    write_knossos_dataset(root / 'inverted', 255 - raw, name='inv')
    return root, raw


def test_raw_file_helpers(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'x.raw').write_bytes(bytes(range(20)))
    assert knossos_array.our_glob(str(tmp_path / '*' / '*.raw')) == [
        str(tmp_path / 'a' / 'x.raw').replace(os.path.sep, '/')]
    with open(tmp_path / 'a' / 'x.raw', 'rb') as fd:
        fd.read(5)
        assert knossos_array.get_remaining_size(fd) == 15
    out = knossos_array.load_rawfile(tmp_path / 'a' / 'x.raw', np.zeros((2, 4), np.uint8), offset=3)
    np.testing.assert_array_equal(out.ravel(), np.arange(3, 11))
    with pytest.raises(ValueError):
        knossos_array.load_rawfile(tmp_path / 'a' / 'x.raw', np.zeros(30, np.uint8))
    shared, status = mp.Array('f', 20, lock=True), mp.Event()
    knossos_array.LoadProc(shared, tmp_path / 'a' / 'x.raw', np.float32, status).run()
    np.testing.assert_allclose(np.frombuffer(shared.get_obj(), np.float32), np.arange(20) / 255)
    assert not status.is_set()
    knossos_array.LoadProc(mp.Array('f', 30, lock=True), tmp_path / 'a' / 'x.raw', np.float32,
                           status).run()  # too short: reported through status
    assert status.is_set()


def test_knossos_array_reads_fib25(knossos_fib25):
    root, raw = knossos_fib25
    array = knossos_array.KnossosArray(str(root / 'raw'), max_ram=100, n_preload=1)
    assert list(array.shape) == [150, 140, 130] and array.n_f == 1
    np.testing.assert_array_equal(array.n_preload, [1, 1, 1])
    cut = array.cut_slice((30, 40, 50), (110, 100, 70))  # across cube borders
    np.testing.assert_allclose(cut, raw[110:140, 100:140, 70:120] / 255, atol=1e-7)
    out = np.empty((5, 6, 7), np.float32)
    assert array.cut_slice((5, 6, 7), (0, 0, 0), out=out) is out
    np.testing.assert_allclose(array[:, 1:3, 2:4, 3:5][0], raw[1:3, 2:4, 3:5] / 255, atol=1e-7)
    assert array[:, 0:2, 0:2, 0:2].shape == (1, 2, 2, 2) and array[0:2, 0:2, 0:2].dtype == np.float32
    assert array.preload((10, 10, 10), start_end=((0, 0, 0), (2, 1, 1)), sync=True) == [
        (0, 0, 0), (1, 0, 0)]
    with pytest.raises(ValueError, match='out of bounds'):
        array.cut_slice((10, 10, 10), (145, 0, 0))
    with pytest.raises(ValueError, match='RAM'):
        knossos_array.KnossosArray(str(root / 'raw'), max_ram=10, n_preload=2)
    assert list(knossos_array.KnossosArray(str(root / 'raw'), fixed_mag=0).shape) == [150, 140, 130]


def test_knossos_array_multi(knossos_fib25):
    root, raw = knossos_fib25
    multi = knossos_array.KnossosArrayMulti(str(root), ['raw', 'inverted'], max_ram=200, n_preload=1)
    assert multi.shape == (2, 150, 140, 130) and multi.n_f == 2
    values = multi[:, 3:5, 130:135, 0:4]
    np.testing.assert_allclose(values[1], 1 - raw[3:5, 130:135, 0:4] / 255, atol=1e-6)
    assert multi.cut_slice((2, 3, 4), (1, 1, 1)).shape == (2, 2, 3, 4)
    my = knossos_array.KnossosArrayMultiMy(str(root), ['raw', 'inverted', 'raw', 'inverted'],
                                           max_ram=400, n_preload=1)
    assert my.shape == (2, 150, 140, 130) and my.n_f == 2
    a = raw[:2, :3, :4] / 255
    combined = np.maximum(np.maximum(1 - a, a) - (1 - a), 0)  # max(max(b, c) - d, 0)
    np.testing.assert_allclose(my[:, :2, :3, :4], np.stack([a, combined]), atol=1e-6)


# --- non_geometric_augmentation ----------------------------------------------------------------
@pytest.fixture
def patch(fib25):
    """Two channels (c, z, y, x) of FIB-25 raw in [0, 1]."""
    return np.stack([fib25[0][:10, :40, :40], fib25[0][10:20, :40, :40]]).astype(np.float32) / 255


def test_noise_augment(patch):
    noisy = nga.noise_augment(patch, level=0.2)
    difference = noisy - patch
    assert -0.1 <= difference.min() and difference.max() < 0.1 and abs(difference.mean()) < 0.01
    assert difference.std() == pytest.approx(0.2 / np.sqrt(12), rel=0.05)
    assert nga.noise_augment(patch, 0.1, data_overwrite=True) is patch
    with pytest.raises(nga.InvalidNonGeomAugmentParameters):
        nga.noise_augment(patch, level=1.5)
    assert issubclass(nga.InvalidNonGeomAugmentParameters, Exception)


def test_blur_augment(patch):
    blurred = nga.blur_augment(patch, level=2)
    np.testing.assert_allclose(blurred[1], ndimage.gaussian_filter(patch[1], 2), rtol=1e-6)
    assert blurred.std() < patch.std() and not np.shares_memory(blurred, patch)


def test_erasing_blobs(patch):
    erased = nga.uniform_random_erasing(patch, 7.0, num_blob_range=(3, 4), blob_size_range=(6, 7))
    changed = erased != patch
    assert np.all(erased[changed] == 7) and changed.any()
    assert changed[0].sum() <= 3 * 6 ** 3 and changed[1].sum() >= 6 ** 3 // 2
    z, y, x = np.nonzero(changed[0])  # boxes of edge 6
    assert (z.max() - z.min() + 1) >= 6
    noisy = nga.noisy_random_erasing(patch, noise_range=(2, 3), num_blob_range=(2, 3),
                                     blob_size_range=(8, 9))
    assert np.all((noisy[noisy != patch] >= 2) & (noisy[noisy != patch] < 3))
    blurry = nga.blurry_blobs(patch, 2, num_blob_range=(5, 6), blob_size_range=(10, 12))
    assert blurry.shape == patch.shape and not np.array_equal(blurry, patch)
    assert np.abs(blurry - patch).max() < 1 and blurry.mean() == pytest.approx(patch.mean(), abs=0.02)
    same = nga.add_blobs(patch, (1, 2), (4, 5), True, nga.uniform_blob, (0.5,))
    assert same is patch and np.sum(patch == 0.5) >= 2 * 4 ** 3


def test_blob_operators(patch):
    channel = patch[0].copy()
    nga.make_blob(channel, nga.uniform_blob, (-1.0,), 10, 40, 40, 9)  # edge 2 * (9 // 2) = 8
    assert np.sum(channel == -1) == 8 ** 3
    thin = np.zeros((1, 30, 30))
    nga.make_blob(thin, nga.uniform_blob, (1.0,), 1, 30, 30, 6)  # clipped to the single slice
    assert thin.sum() == 36
    cube = patch[0, :8, :8, :8]
    np.testing.assert_allclose(nga.blur_blob(cube, 1.5), ndimage.gaussian_filter(cube, 1.5))
    assert nga.blur_blob(cube).shape == cube.shape  # random diffuseness
    noise = nga.random_noise_blob(cube, (5, 6))
    assert noise.shape == cube.shape and 5 <= noise.min() and noise.max() < 6
    np.testing.assert_array_equal(nga.uniform_blob(cube, 3), np.full(cube.shape, 3.0))


# --- traindata ----------------------------------------------------------------------------------
class _Toy(traindata.Data):
    def __init__(self):
        self.train_d = np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2)
        self.train_l = np.arange(10) % 3
        self.valid_d, self.valid_l = self.train_d[:4] + 100, self.train_l[:4]
        self.test_d, self.test_l = self.train_d[:2] + 200, self.train_l[:2]
        super().__init__()


def test_data_batches_and_cv_split():
    data = _Toy()
    assert data.n_lab == 3 and data.example_shape == (1, 2, 2) and data.n_ch == 1
    seen = np.concatenate([data.getbatch(5)[0][:, 0, 0, 0] / 4 for _ in range(2)])
    assert sorted(seen) == list(range(10))  # one epoch: each example once
    d, lab = data.getbatch(3, 'valid')
    np.testing.assert_array_equal(d, data.valid_d[:3])
    assert data.getbatch(2, 'test')[0][0, 0, 0, 0] == 200
    data.createCVSplit(np.arange(10), np.arange(10) * 2, n_folds=3, use_fold=2)
    np.testing.assert_array_equal(data.valid_d, [7, 8, 9])
    np.testing.assert_array_equal(data.train_l, np.arange(7) * 2)
    data.createCVSplit(np.arange(10), np.arange(10), n_folds=3, use_fold=0, shuffle=True, random_state=1)
    assert len(data.valid_d) == 4 and sorted(np.concatenate([data.valid_d, data.train_d])) == list(range(10))


def _mnist_nodes(side):
    inp = nm.Input((None, 1, side, side), 'b,f,y,x', name='raw')
    probs = nm.Softmax(nm.Perceptron(inp, 10, flatten=True, activation_func='lin'))
    return inp, nm.Input_like(probs, override_f=1, name='target', dtype='int16')


def test_mnist_data(data_dir):
    data = traindata.MNISTData(*_mnist_nodes(26), path=data_dir / 'mnist')
    assert isinstance(data, traindata.Data) and data.n_lab == 10 and data.example_shape == (1, 26, 26)
    images, labels_ = data.getbatch(20)
    assert images.shape == (20, 1, 26, 26) and images.dtype == np.float32
    assert labels_.shape == (20, 1) and labels_.dtype == np.int16
    valid, valid_labels = data.getbatch(50, 'valid')
    np.testing.assert_array_equal(valid, data.valid_d[:50])
    np.testing.assert_array_equal(valid_labels, data.valid_l[:50])
    full = data.test_d  # centred: mean pixel value of the split subtracted
    raw_mean = data._mnist.arrays['test'][0].mean() / 255
    assert full.shape == (10_000, 1, 26, 26) and full.min() == pytest.approx(-raw_mean, abs=1e-6)
    flat = traindata.MNISTData(*_mnist_nodes(28), path=data_dir / 'mnist', convert2image=False,
                               shift_augment=False, center=False)
    images, _ = flat.getbatch(4, 'test')
    assert images.shape == (4, 784) and images.min() == 0 and flat.example_shape == 784


@pytest.fixture
def piano_file(tmp_path):
    rng = np.random.RandomState(0)
    splits = tuple([(rng.rand(n, 58) > 0.9).astype(np.float64) for n in lengths]
                   for lengths in ([30, 25, 40, 22], [26, 30], [24]))
    path = tmp_path / 'piano.pkl.gz'
    with gzip.open(path, 'wb') as f:
        pickle.dump(splits, f, protocol=2)
    return path, splits


def test_piano_data(piano_file):
    path, (train, valid, _) = piano_file
    data = traindata.PianoData(None, None, path=path, n_tap=20)
    assert data.n_lab == 58 and data._training_count == 4
    x, y = data.getbatch(3)
    assert x.shape == (3, 20, 58) and x.dtype == np.float32 and y.shape == (3, 58)
    x, y = data.getbatch(2, 'valid')
    for seq, xi, yi in zip(valid, x, y):  # a window of the sequence and the step after it
        starts = [t for t in range(len(seq) - 20) if np.array_equal(seq[t:t + 20], xi)]
        assert starts and np.array_equal(seq[starts[0] + 20], yi)
    with pytest.raises(ConfigError, match="batch_size 3 exceeds the 2 'valid' examples"):
        data.getbatch(3, 'valid')
    perc = traindata.PianoData_perc(None, None, path=path, n_tap=20)
    x, y = perc.getbatch(4)
    assert x.shape == (4, 20 * 58) and y.shape == (4, 58)


def test_piano_data_takes_the_workers_64_bit_seeds(piano_file):
    """Background workers re-seed data objects with 64-bit seeds before every batch; the
    same seed gives the same batch."""
    data = traindata.PianoData(None, None, path=piano_file[0], n_tap=20)
    batches = []
    for _ in range(2):
        data.reseed(seed_of(7, 2**40))
        batches.append(data.getbatch(3))
    assert all(np.array_equal(a, b) for a, b in zip(*batches))


def test_piano_data_refuses_code(tmp_path):
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps(([os.system], [], [])))
    with pytest.raises(DataError, match='posix.system|os.system|nt.system'):
        traindata.PianoData(None, None, path=path)


# --- transformations ----------------------------------------------------------------------------
def test_basic_matrices():
    assert tr.identity().dtype == np.float32 and np.array_equal(tr.identity(), np.eye(4))
    np.testing.assert_allclose(tr.translate(1, 2, 3) @ [0, 0, 0, 1], [1, 2, 3, 1])
    np.testing.assert_allclose(tr.scale(2, 3, 4) @ tr.scale_inv(2, 3, 4), np.eye(4), atol=1e-7)
    a = 0.3
    for rotation, plane in ((tr.rotate_z, (1, 2)), (tr.rotate_y, (0, 1)), (tr.rotate_x, (2, 0))):
        matrix = rotation(a)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(4), atol=1e-6)
        i, j = plane
        assert matrix[i, i] == pytest.approx(np.cos(a)) and matrix[j, i] == pytest.approx(np.sin(a))
    chained = tr.chain_matrices([tr.translate(1, 0, 0), tr.scale(2, 2, 2)])  # the last acts first
    np.testing.assert_allclose(chained @ [1, 1, 1, 1], [3, 2, 2, 1])


def test_directions_and_random_matrices():
    direction = np.array([0.2, -0.5, 0.7])
    direction /= np.linalg.norm(direction)
    phi, theta, gamma = tr.get_euler_angles(direction, 0.4)
    assert gamma == 0.4 and theta == pytest.approx(np.arccos(direction[0]))
    rotation = tr.get_rotmat_from_direc(direction, 0.4)
    np.testing.assert_allclose(rotation[:3, :3] @ direction, [1, 0, 0], atol=1e-6)
    assert tr.get_rotmat_from_direc(direction, 'rand', np.random.RandomState(1)).shape == (4, 4)
    with pytest.raises(ValueError):
        tr.get_euler_angles([1, 1, 0], 0)
    for rng in (np.random.RandomState(0), np.random.default_rng(0)):
        r = tr.get_random_rotmat(rng=rng)
        assert np.linalg.det(r[:3, :3]) == pytest.approx(1, abs=1e-5)
        locked = tr.get_random_rotmat(lock_z=True, rng=rng)
        np.testing.assert_allclose(locked[0], [1, 0, 0, 0], atol=1e-7)
        flips = [tr.get_random_flipmat(no_x_flip=True, rng=rng) for _ in range(20)]
        assert all(f[2, 2] == 1 and set(np.diag(f)) <= {-1, 1} for f in flips)
        assert any(f[0, 0] == -1 for f in flips) and any(f[1, 1] == -1 for f in flips)
        swaps = [tr.get_random_swapmat(lock_z=True, rng=rng) for _ in range(20)]
        assert all(s[0, 0] == 1 and s.sum(0).tolist() == [1, 1, 1, 1] for s in swaps)
        assert len({s.tobytes() for s in swaps}) == 2
        assert len({tr.get_random_swapmat(rng=rng).tobytes() for _ in range(60)}) == 6
        warp = tr.get_random_warpmat(lock_z=True, rng=rng)
        assert np.abs(warp - np.eye(4)).max() <= 0.1 and not warp[0, 1:].any() and not warp[3, :3].any()
        perspective = tr.get_random_warpmat(perspective=True, rng=rng)
        assert 0 < np.abs(perspective[3, :3]).max() <= 3e-3


def test_dest_coords_and_corners():
    coords = tr.make_dest_coords((2, 3, 4))
    assert coords.shape == (2, 3, 4, 4) and coords.dtype == np.float32
    np.testing.assert_array_equal(coords[1, 2, 3], [1, 2, 3, 1])
    corners = tr.make_dest_corners((2, 3, 4))
    assert corners.shape == (8, 4)
    np.testing.assert_array_equal(corners[[0, 1, 7]], [[0, 0, 0, 1], [0, 0, 3, 1], [1, 2, 3, 1]])


def test_map_coordinates(fib25):
    src = fib25[0][:6, :8, :9].astype(np.float32)
    rng = np.random.RandomState(0)
    coords = rng.uniform(2, 5, (3, 4, 5, 3)).astype(np.float32) + [10, 20, 30]
    lo = np.array([10, 20, 30], np.float32)
    dest = np.zeros((3, 4, 5), np.float32)
    assert tr.map_coordinates_linear(src, coords, lo, dest) is dest
    expected = ndimage.map_coordinates(src, np.moveaxis(coords - lo, -1, 0), order=1)
    np.testing.assert_allclose(dest, expected, rtol=1e-5)
    tr.map_coordinates_nearest(src, coords, lo, dest)
    index = np.rint(coords - lo).astype(int)
    np.testing.assert_array_equal(dest, src[index[..., 0], index[..., 1], index[..., 2]])
    tr.map_coordinates_max_kernel(src, coords, lo, 1.0, dest)
    local = coords - lo
    for p in [(0, 0, 0), (2, 3, 4), (1, 2, 1)]:
        z, y, x = local[p]
        box = src[int(np.floor(z - 0.5 + 0.5)):max(int(np.floor(z + 0.5 + 0.5)), int(np.floor(z)) + 1),
                  int(np.floor(y - 1 + 0.5)):int(np.floor(y + 1 + 0.5)),
                  int(np.floor(x - 1 + 0.5)):int(np.floor(x + 1 + 0.5))]
        assert dest[p] == box.max()


def test_transform_object():
    matrix = tr.chain_matrices([tr.translate(5, 6, 7), tr.rotate_z(0.5)])
    trafo = tr.Transform(matrix, position_l=[10, 20, 30], aniso_factor=2)
    assert not trafo.is_projective
    vec = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(trafo.cnn_coord2lab_coord(trafo.lab_coord2cnn_coord(vec)), vec, atol=1e-5)
    np.testing.assert_allclose(trafo.lab_coord2cnn_coord(np.stack([vec, vec]))[1],
                               trafo.M_lin @ vec, atol=1e-6)
    position, direction = trafo.cnn_pred2lab_position(trafo.lab_coord2cnn_coord(vec))
    np.testing.assert_allclose(position, [11, 22, 33], atol=1e-5)
    np.testing.assert_allclose(direction, [2, 2, 3] / np.linalg.norm([2, 2, 3]), atol=1e-6)
    again = tr.trafo_from_array(trafo.to_array())
    np.testing.assert_allclose(again.M, matrix)
    assert again.aniso_factor == 2 and list(again.position_l) == [10, 20, 30]
    projective = matrix.copy()
    projective[3, 0] = 1e-3
    with pytest.raises(ValueError):
        tr.Transform(projective).M_lin
    assert issubclass(tr.WarpingOOBError, ValueError)


def test_warp_slice_on_fib25(fib25):
    raw, ids = fib25[0][None].astype(np.float32), fib25[1][None]
    patch, target = tr.warp_slice(raw, (10, 20, 30), tr.translate(-5, -6, -7), target=ids,
                                  target_ps=(4, 10, 10))
    np.testing.assert_array_equal(patch, raw[:, 5:15, 6:26, 7:37])
    np.testing.assert_array_equal(target, ids[:, 8:12, 11:21, 17:27])
    assert target.dtype == np.float32
    # a quarter turn in the (y, x) plane about the patch centre is np.rot90 of the crop
    centre = np.array([4.5, 9.5, 9.5])
    turn = tr.chain_matrices([tr.translate(*centre), tr.rotate_z(np.pi / 2),
                              tr.translate(*(-centre - [5, 6, 7]))])
    patch, target = tr.warp_slice(raw, (10, 20, 20), turn, target=ids, target_ps=(10, 20, 20))
    crop = raw[0, 5:15, 6:26, 7:27]
    rotated = [np.rot90(crop, k, axes=(1, 2)) for k in (1, 3)]
    assert any(np.allclose(patch[0], r, atol=1e-3) for r in rotated)
    np.testing.assert_array_equal(patch[0] == raw.min(), target[0] == -1)  # nothing outside
    with pytest.raises(tr.WarpingOOBError):
        tr.warp_slice(raw, (10, 20, 30), tr.translate(-35, 0, 0))
    vectors = np.zeros((3, 40, 100, 100), np.float32)
    vectors[2] = 1  # unit vectors along x
    _, turned = tr.warp_slice(raw, (10, 20, 20), turn, target=vectors, target_ps=(10, 20, 20),
                              target_vec_ix=[(0, 1, 2)], target_discrete_ix=[])
    np.testing.assert_allclose(turned[:, 0, 0, 0], tr.rotate_z(np.pi / 2)[:3, 2], atol=1e-6)


def test_get_warped_slice_keeps_image_and_labels_registered(fib25):
    raw, ids = fib25[0].astype(np.float32), fib25[1]
    img = np.stack([raw, ids.astype(np.float32)])
    rng = np.random.RandomState(0)
    for _ in range(3):  # flips and swaps only: every source coordinate is a voxel
        patch, target = tr.get_warped_slice(img, (8, 30, 30), warp_amount=0, target=ids[None],
                                            target_ps=(4, 20, 20), rng=rng)
        assert patch.shape == (2, 8, 30, 30) and target.shape == (1, 4, 20, 20)
        np.testing.assert_array_equal(patch[1, 2:6, 5:25, 5:25], target[0])
        assert np.isin(patch[1], ids).all()
    agree = []
    for _ in range(5):  # full warps: labels (nearest) and linearly sampled ids mostly agree
        try:
            patch, target = tr.get_warped_slice(img, (8, 30, 30), lock_z=False, target=ids[None],
                                                target_ps=(8, 30, 30), rng=rng)
        except tr.WarpingOOBError:
            continue
        agree.append(np.mean(patch[1] == target[0]))
    assert agree and np.mean(agree) > 0.5
    planar, planar_target = tr.get_warped_slice(img, (30, 30), target=ids[None], target_ps=(20, 20),
                                                rng=rng)
    assert planar.shape == (2, 30, 30) and planar_target.shape == (1, 20, 20)


def test_get_tracing_slice(fib25):
    raw = fib25[0][None].astype(np.float32)
    patch, target, matrix = tr.get_tracing_slice(raw, (8, 20, 20), (20, 50, 50), aniso_factor=1)
    np.testing.assert_allclose(patch, raw[:, 16:24, 40:60, 40:60], atol=1e-4)
    assert target is None and matrix.shape == (4, 4)
    along_x, _, _ = tr.get_tracing_slice(raw, (20, 8, 8), (20, 50, 50), aniso_factor=1,
                                         direction_iso=[0, 0, 1])
    assert along_x.shape == (1, 20, 8, 8)  # the patch's z axis runs along the volume's x
    np.testing.assert_allclose(np.sort(along_x[0, :, 4, 4]), np.sort(raw[0, 20, 50, 40:60]), atol=1e-3)
    _, _, zoomed = tr.get_tracing_slice(raw, (8, 20, 20), (20, 50, 50), scale_factor=2.0,
                                        last_ch_max_interp=True)
    np.testing.assert_allclose(zoomed[:3, :3], np.diag([2.0, 2.0, 2.0]), atol=1e-6)  # z: 2 / 2 * 2


def test_xyz2zxy():
    vol = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (c, x, y, z)
    out = tr.xyz2zxy(vol)
    assert out.shape == (2, 5, 3, 4) and out[1, 4, 2, 3] == vol[1, 2, 3, 4]
