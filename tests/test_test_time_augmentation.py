"""Test-time augmentation (``tta='flips'|'dihedral'``) in predict_dense, blockwise prediction
and ``elektronn2-predict --tta``: exact for flip-equivariant nets, the mean of manually
transformed predictions otherwise, outputs aligned to the same voxels for even fields of
view, blockwise equal to whole-image, recorded in the manifest, bad requests refused."""
import itertools
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr

import elektronn2.neuromancer as nm
from elektronn2.errors import ConfigError, ShapeError
from elektronn2.inference import Box, options, predict_volume
from elektronn2.inference.outputs import MANIFEST_ATTR
from elektronn2.inference.predictors import PredictorSpec, TilingPredictor, resolve_spec
from elektronn2.neuromancer import dense
from elektronn2.neuromancer.dense import evaluation_bytes, tta_transforms
from elektronn2.neuromancer.footprint import Footprint

PREDICT = [sys.executable, '-m', 'elektronn2.inference.cli']
RTOL, ATOL = 1e-5, 2e-6


# --- nets -------------------------------------------------------------------------------------
def designated(inp, probs):
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    return probs


def even_2d():
    """fov 4 (even) in x and y: outputs sit on the voxel after their x.5 centre."""
    nm.model_manager.newmodel('even2d')
    inp = nm.Input((None, 1, 12, 12), 'b,f,x,y', name='raw')
    conv = nm.Conv(inp, 3, 4)
    return designated(inp, nm.Softmax(nm.Conv(conv, 2, 1, activation_func='lin')))


def strided_2d(patch=(21, 21), mfp=False):
    """Two conv (k 4) + pool 2 layers: output stride 4, odd fov 13."""
    nm.model_manager.newmodel('strided2d')
    inp = nm.Input((None, 1) + tuple(patch), 'b,f,x,y', name='raw')
    conv = nm.Conv(nm.Conv(inp, 3, 4, 2, mfp=mfp), 3, 4, 2, mfp=mfp)
    out = nm.Conv(conv, 2, 1, activation_func='lin')
    return designated(inp, nm.Softmax(nm.FragmentsToDense(out) if mfp else out))


def aniso_3d(patch=(4, 15, 15), mfp=False):
    """Tags z,x,y; pools in-plane (stride 1, 2, 2), fov (2, 9, 9): even along z."""
    nm.model_manager.newmodel('aniso3d')
    inp = nm.Input((None, 1) + tuple(patch), 'b,f,z,x,y', name='raw')
    conv = nm.Conv(nm.Conv(inp, 3, (1, 4, 4), (1, 2, 2), mfp=mfp), 3, (2, 3, 3))
    out = nm.Conv(conv, 2, 1, activation_func='lin')
    return designated(inp, nm.Softmax(nm.FragmentsToDense(out) if mfp else out))


def unet_3d():
    """A valid-convolution U-Net (tags z,y,x) pooling twice in-plane: stride 1, phase 4."""
    nm.model_manager.newmodel('unet')
    inp = nm.Input((None, 1, 4, 30, 30), 'b,f,z,y,x', name='raw')
    c0 = nm.Conv(inp, 3, (1, 3, 3))
    c1 = nm.Conv(nm.Pool(c0, (1, 2, 2)), 3, (1, 3, 3))
    c2 = nm.Conv(nm.Pool(c1, (1, 2, 2)), 3, (1, 3, 3))
    up = nm.UpConvMerge(c0, nm.UpConvMerge(c1, c2, 3), 3)
    return designated(inp, nm.Softmax(nm.Conv(up, 2, (1, 3, 3), activation_func='lin')))


def same_3d():
    """'same' convolutions (blended blockwise), patch square in-plane."""
    nm.model_manager.newmodel('same')
    inp = nm.Input((None, 1, 6, 12, 12), 'b,f,z,y,x', name='raw')
    conv = nm.Conv(inp, 3, 3, conv_mode='same')
    return designated(inp, nm.Softmax(nm.Conv(conv, 2, 3, conv_mode='same',
                                              activation_func='lin')))


def group_mean(array: np.ndarray, axes: tuple[int, ...], transpose: bool) -> np.ndarray:
    """The mean of ``array`` over all flips of ``axes`` (and the swap of the last two)."""
    images = []
    for t in ((False, True) if transpose else (False,)):
        swapped = array.swapaxes(-1, -2) if t else array
        for chosen in itertools.product((False, True), repeat=len(axes)):
            flip = tuple(a for a, c in zip(axes, chosen) if c)
            images.append(np.flip(swapped, flip) if flip else swapped)
    return np.mean(images, axis=0)


def symmetrise(probs, transpose: bool = True):
    """Make every convolution kernel invariant under flips of its spatial axes (and the
    swap of the last two): the net is then equivariant under them, patch by patch."""
    for name, values in probs.model.get_param_values().items():
        if 'w' in values and np.ndim(values['w']) >= 3:
            w = np.asarray(values['w'])
            spatial = tuple(range(2, w.ndim))
            values = dict(values, w=group_mean(w, spatial, transpose and w.ndim >= 4))
            probs.model[name].set_param_values(values)
    return probs


def copy_params(src, dst):
    for name, values in src.model.get_param_values().items():
        dst.model[name].set_param_values(values)


def rng_image(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def manual_tta(probs, raw: np.ndarray, tta: str, pad_raw: bool) -> np.ndarray:
    """The mean over the transforms g of g^-1(predict_dense(g(V))), V the image mirror-
    padded by the net's context first (asymmetric for even fields of view) when
    ``pad_raw``; all in the net's axis order (c, *spatial)."""
    footprint = Footprint.of(probs)
    if pad_raw:
        before, after = (footprint.net_order(c) for c in footprint.context)
        raw = np.pad(raw, [(0, 0)] + list(zip(before, after)), mode='symmetric')
    axes = tuple(range(1, raw.ndim))
    total, count = 0.0, 0
    for t in ((False, True) if tta == 'dihedral' else (False,)):
        for chosen in itertools.product((False, True), repeat=len(axes)):
            flip = tuple(a for a, c in zip(axes, chosen) if c)

            def forward(a, flip=flip, t=t):
                a = a.swapaxes(-1, -2) if t else a
                return np.flip(a, flip) if flip else a

            def back(a, flip=flip, t=t):
                a = np.flip(a, flip) if flip else a
                return a.swapaxes(-1, -2) if t else a
            pred = probs.predict_dense(np.ascontiguousarray(forward(raw)), pad_raw=False)
            total = total + back(pred).astype(np.float64)
            count += 1
    return (total / count).astype(np.float32)


# --- the transforms ---------------------------------------------------------------------------
def test_transforms_form_the_groups():
    planar = Footprint(('x', 'y'), (1, 9, 9), (1, 3, 3), (1, 1, 1), (0, 3, 3))
    volume = Footprint(('z', 'x', 'y'), (5, 9, 9), (3, 3, 3), (1, 1, 1), (1, 3, 3))
    a = rng_image((2, 3, 4, 5, 5))
    for footprint, tta, n in [(planar, 'none', 1), (planar, 'flips', 4),
                              (planar, 'dihedral', 8), (volume, 'flips', 8),
                              (volume, 'dihedral', 16)]:
        transforms = tta_transforms(footprint, tta)
        assert len(transforms) == n and str(transforms[0]) == 'identity'
        images = {t.apply(a).tobytes() for t in transforms}
        assert len(images) == n   # all distinct
        for t in transforms:
            np.testing.assert_array_equal(t.invert(t.apply(a)), a)
        if footprint is planar:   # a 2-D net never flips its slices (z)
            assert all('z' not in t.flips for t in transforms)
    assert options.TTA_CHOICES == dense.TTA_CHOICES


# --- (1) exact for flip-equivariant nets ------------------------------------------------------
@pytest.mark.parametrize('build, shape', [
    (even_2d, (1, 23, 26)),
    (strided_2d, (1, 33, 30)),
    (aniso_3d, (1, 7, 21, 24)),
])
@pytest.mark.parametrize('pad_raw', [False, True])
def test_equivariant_net_tta_equals_plain(build, shape, pad_raw):
    probs = symmetrise(build())
    raw = rng_image(shape)
    plain = probs.predict_dense(raw, pad_raw=pad_raw)
    for tta in ('flips', 'dihedral'):
        np.testing.assert_allclose(probs.predict_dense(raw, pad_raw=pad_raw, tta=tta), plain,
                                   rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('dims', [2, 3])
def test_equivariant_mfp_net_tta_equals_plain(dims):
    strided = symmetrise(strided_2d() if dims == 2 else aniso_3d())
    mfp = strided_2d((28, 28), mfp=True) if dims == 2 else aniso_3d((4, 22, 22), mfp=True)
    copy_params(strided, mfp)
    raw = rng_image((1, 37, 35) if dims == 2 else (1, 6, 27, 25))
    plain = strided.predict_dense(raw, pad_raw=True)
    np.testing.assert_allclose(mfp.predict_dense(raw, pad_raw=True, tta='dihedral'), plain,
                               rtol=RTOL, atol=ATOL)


def test_even_fov_flip_keeps_the_voxels():
    """A flip-symmetric net with an even field of view (4: context 2 before, 1 after):
    TTA equals the plain prediction. Flipping the image instead of the padded image,
    and the prediction back, would shift every output by one voxel."""
    probs = symmetrise(even_2d())
    raw = rng_image((1, 30, 27), seed=3)
    plain = probs.predict_dense(raw, pad_raw=True)
    np.testing.assert_allclose(probs.predict_dense(raw, pad_raw=True, tta='flips'), plain,
                               rtol=RTOL, atol=ATOL)
    naive = np.flip(probs.predict_dense(np.ascontiguousarray(raw[:, ::-1]), pad_raw=True), 1)
    assert not np.allclose(naive, plain, atol=1e-3)
    # the naive output at x holds the window of plain's x + 1 (away from the borders)
    np.testing.assert_allclose(naive[:, 1:-2], plain[:, 2:-1], rtol=RTOL, atol=ATOL)


# --- (2) the mean of manually transformed predictions ----------------------------------------
@pytest.mark.parametrize('build, shape', [
    (even_2d, (1, 23, 26)),
    (strided_2d, (1, 33, 30)),
    (aniso_3d, (1, 7, 21, 24)),
])
@pytest.mark.parametrize('pad_raw', [False, True])
def test_tta_is_the_mean_of_transformed_predictions(build, shape, pad_raw):
    probs = build()
    raw = rng_image(shape, seed=1)
    for tta in ('flips', 'dihedral'):
        augmented = probs.predict_dense(raw, pad_raw=pad_raw, tta=tta)
        np.testing.assert_allclose(augmented, manual_tta(probs, raw, tta, pad_raw),
                                   rtol=RTOL, atol=ATOL)
        assert not np.allclose(augmented, probs.predict_dense(raw, pad_raw=pad_raw), atol=1e-4)


def test_model_predict_dense_forwards_tta():
    probs = even_2d()
    raw = rng_image((1, 20, 20))
    np.testing.assert_array_equal(probs.model.predict_dense(raw, pad_raw=True, tta='flips'),
                                  probs.predict_dense(raw, pad_raw=True, tta='flips'))


# --- (3) blockwise equals whole-image --------------------------------------------------------
def saved(probs, tmp_path, name):
    return probs.model.save(tmp_path / f'{name}.mdl')


def dense_zyx(probs, raw_zyx: np.ndarray, tta: str) -> np.ndarray:
    """predict_dense(pad_raw=True, tta=tta) of a (z, y, x) volume, as (f, z, y, x)."""
    tags = probs.shape.spatial_tags
    tags = ('z',) + tags if len(tags) == 2 else tags
    out = probs.predict_dense(raw_zyx.transpose(['zyx'.index(t) for t in tags])[None],
                              pad_raw=True, tta=tta)
    return out.transpose([0] + [1 + tags.index(a) for a in 'zyx'])


@pytest.fixture(scope='module')
def volume():
    return (np.random.default_rng(5).random((7, 30, 27)) * 255).astype(np.uint8)


@pytest.mark.parametrize('mfp, block', [('off', (4, 16, 12)), ('on', (4, 10, 14))])
def test_blockwise_equals_predict_dense(volume, tmp_path, mfp, block):
    probs = aniso_3d()
    path = saved(probs, tmp_path, 'aniso')
    for tta in ('flips', 'dihedral'):
        blockwise = predict_volume(path, volume, block_shape=block, mfp=mfp, tta=tta)
        np.testing.assert_allclose(blockwise, dense_zyx(probs, volume, tta), rtol=RTOL, atol=ATOL)


def test_unet_blockwise_equals_predict_dense(volume, tmp_path):
    """A U-Net's outputs depend on where patches start (modulo its pooling): TTA keeps the
    patch placements, so blocks on the pooling grid agree with the whole image."""
    probs = unet_3d()
    path = saved(probs, tmp_path, 'unet')
    np.testing.assert_allclose(predict_volume(path, volume, block_shape=(4, 16, 16),
                                              tta='dihedral'),
                               dense_zyx(probs, volume, 'dihedral'), rtol=RTOL, atol=ATOL)


def test_blended_equivariant_net(volume, tmp_path):
    """Blending (a 'same' net) with TTA per window: exact for a symmetric net."""
    probs = symmetrise(same_3d())
    path = saved(probs, tmp_path, 'same')
    raw = volume[:, :20, :20]
    plain = predict_volume(path, raw, block_shape=(7, 16, 16))
    np.testing.assert_allclose(predict_volume(path, raw, block_shape=(7, 16, 16),
                                              tta='dihedral'), plain, rtol=RTOL, atol=ATOL)


def test_spec_records_tta_and_squares_mfp_blocks(tmp_path):
    path = saved(aniso_3d(), tmp_path, 'aniso')
    region = Box((0, 0, 0), (8, 40, 40))
    spec, block = resolve_spec(path, (4, 10, 18), region, mfp='on', tta='dihedral')
    assert spec.tta == 'dihedral' and spec.describe()['tta'] == 'dihedral'
    assert spec.backend == 'mfp' and block[1] == block[2] and spec.patch[1] == spec.patch[2]
    flips, _ = resolve_spec(path, (4, 10, 18), region, mfp='on', tta='flips')
    assert flips != spec and flips.patch[1] != flips.patch[2]   # flips need no square
    assert resolve_spec(path, (4, 16, 16), region)[0].describe()['tta'] == 'none'


def test_memory_and_work_accounting():
    """The transforms run one after another: activations grow only by the transformed
    input and a float64 running sum of the outputs; the work by their number."""
    probs = aniso_3d()
    inp, out = probs.input_nodes[0].shape.stripbatch_prod, probs.shape.stripbatch_prod
    assert (evaluation_bytes(probs, 3, 'dihedral') - evaluation_bytes(probs, 3)
            == 4 * 3 * (inp + 2 * out))
    box = Box((0, 0, 0), (4, 16, 16))
    plain, augmented = TilingPredictor(probs), TilingPredictor(probs, tta='dihedral')
    assert augmented.executed_macs(box) == 16 * plain.executed_macs(box)
    assert augmented.activation_bytes(box) > plain.activation_bytes(box)


# --- (4) the command line --------------------------------------------------------------------
def run(*args):
    return subprocess.run(PREDICT + [str(a) for a in args], capture_output=True, text=True,
                          timeout=300)


def test_cli_tta_in_manifest_and_resume_refused(volume, tmp_path):
    probs = aniso_3d()
    path = saved(probs, tmp_path, 'aniso')
    source = tmp_path / 'raw.h5'
    with h5py.File(source, 'w') as f:
        f.create_dataset('raw', data=volume)
    out = tmp_path / 'prob.zarr'
    args = [path, source, out, '--key', 'raw', '--block-shape', 4, 16, 16, '--quiet']
    result = run(*args, '--tta', 'dihedral')
    assert result.returncode == 0, result.stderr
    array = zarr.open_array(store=str(out), path='probabilities', mode='r')
    assert array.attrs[MANIFEST_ATTR]['predictor']['tta'] == 'dihedral'
    np.testing.assert_allclose(array[:], dense_zyx(probs, volume, 'dihedral'), rtol=RTOL,
                               atol=ATOL)
    other = run(*args, '--tta', 'flips')
    assert other.returncode == 2 and 'predictor.tta' in other.stderr, other.stderr
    again = run(*args, '--tta', 'dihedral')
    assert again.returncode == 0 and '(8 done before)' in again.stdout, again.stderr


# --- (5) bad requests ------------------------------------------------------------------------
def test_transpose_refused_for_nets_unlike_along_y_and_x(tmp_path):
    probs = strided_2d(patch=(21, 25))       # patch and outputs differ along x and y
    raw = rng_image((1, 40, 40))
    with pytest.raises(ShapeError, match=r"transposes the in-plane axes y and x.*differs "
                                         r"along them in patch and outputs per patch"):
        probs.predict_dense(raw, tta='dihedral')
    assert probs.predict_dense(raw, tta='flips').shape == probs.predict_dense(raw).shape
    path = saved(probs, tmp_path, 'oblong')
    with pytest.raises(ShapeError, match="tta='flips'"):
        predict_volume(path, rng_image((2, 40, 40)), block_shape=(2, 16, 16), tta='dihedral')
    with pytest.raises(ShapeError, match='differs along them'):
        PredictorSpec(str(path), 'tiling', tta='dihedral').build()

    nm.model_manager.newmodel('line')
    inp = nm.Input((None, 1, 9), 'b,f,x', name='raw')
    line = nm.Conv(inp, 2, 3, activation_func='lin')
    with pytest.raises(ShapeError, match="has the spatial axes x"):
        line.predict_dense(rng_image((1, 20)), tta='dihedral')
    assert line.predict_dense(rng_image((1, 20)), tta='flips').shape == (2, 18)


def test_unknown_tta_refused(tmp_path):
    probs = even_2d()
    with pytest.raises(ConfigError, match="tta='rot90'; valid"):
        probs.predict_dense(rng_image((1, 20, 20)), tta='rot90')
    from elektronn2.inference.cli import main
    with pytest.raises(SystemExit) as stop:
        main(['m.mdl', 'in.h5', 'out.zarr', '--tta', 'rot90'])
    assert stop.value.code == 2
