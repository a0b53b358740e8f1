"""Warping kernels and random transforms, grey-value, noise, blur and erasing."""
import math

import numpy as np
import pytest
from scipy import ndimage

from elektronn2.data import augmentation as aug
from elektronn2.errors import ConfigError

RNG = np.random.default_rng(7)
IMAGE = RNG.integers(0, 256, (2, 20, 40, 50), dtype=np.uint8)
IDS = RNG.integers(0, 2 ** 32 - 1, (1, 20, 40, 50), dtype=np.uint64).astype(np.uint32)


def test_identity_warp_reproduces_the_crop_exactly():
    corner, shape = (3, 5, 7), (11, 30, 41)
    matrix = aug.patch_matrix(np.eye(4), shape, corner)
    crop = np.s_[:, 3:14, 5:35, 7:48]
    linear = aug.warp_linear(IMAGE, matrix, shape)
    assert linear.dtype == np.float32
    np.testing.assert_array_equal(linear, IMAGE[crop].astype(np.float32))
    floats = IMAGE.astype(np.float32) / 255
    np.testing.assert_array_equal(aug.warp_linear(floats, matrix, shape), floats[crop])
    nearest = aug.warp_nearest(IDS, matrix, shape)
    assert nearest.dtype == np.uint32
    np.testing.assert_array_equal(nearest, IDS[crop])


def test_whole_volume_identity_including_last_voxel():
    shape = IMAGE.shape[1:]
    np.testing.assert_array_equal(aug.warp_linear(IMAGE, np.eye(4), shape), IMAGE)


def test_flips_rotations_and_swaps_are_exact_for_right_angles():
    src = IMAGE[:1, :, :40, :40]
    quarter = np.eye(4)
    quarter[:3, :3] = aug._rotation_about(np.array([1.0, 0, 0]), math.pi / 2)
    matrix = aug.patch_matrix(quarter, src.shape[1:], (0, 0, 0))
    rotated = aug.warp_linear(src, matrix, src.shape[1:])
    np.testing.assert_allclose(rotated, np.rot90(src, k=1, axes=(3, 2)), atol=1e-3)
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    flipped = aug.warp_nearest(src, aug.patch_matrix(flip, src.shape[1:], (0, 0, 0)), src.shape[1:])
    np.testing.assert_array_equal(flipped, src[:, :, ::-1])


def test_linear_matches_scipy_for_a_random_warp():
    params = aug.WarpParams(lock_z=False, max_tilt=10)
    transform = aug.random_transform(np.random.default_rng(3), params, aniso_factor=2.0)
    shape = (6, 15, 15)
    matrix = aug.patch_matrix(transform, shape, (7, 12, 17))
    ours = aug.warp_linear(IMAGE[:1], matrix, shape)[0]
    theirs = ndimage.affine_transform(IMAGE[0].astype(np.float32), matrix[:3, :3], matrix[:3, 3],
                                      output_shape=shape, order=1)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_points_outside_get_the_fill_value():
    matrix = aug.patch_matrix(np.eye(4), (4, 4, 4), (-2, 0, 0))
    out = aug.warp_linear(IMAGE[:1], matrix, (4, 4, 4), fill=-1.0)
    assert (out[0, :2] == -1).all() and (out[0, 2:] == IMAGE[0, :2, :4, :4]).all()


def test_random_transform_options():
    rng = np.random.default_rng(0)
    locked = [aug.random_transform(rng, aug.WarpParams(lock_z=True), aniso_factor=3.0)
              for _ in range(20)]
    for m in locked:  # z is neither rotated, sheared nor swapped (only maybe flipped)
        assert abs(abs(m[0, 0]) - 1) < 1e-12
        assert np.allclose(m[0, 1:3], 0) and np.allclose(m[1:3, 0], 0)
        assert np.allclose(m[3], [0, 0, 0, 1])
    plain = aug.random_transform(rng, aug.WarpParams(warp_amount=0, flips=False, swaps=False))
    np.testing.assert_array_equal(plain, np.eye(4))
    persp = aug.random_transform(rng, aug.WarpParams(perspective=True))
    assert np.any(persp[3, 1:3] != 0) and persp[3, 0] == 0


def test_axis_swaps_respect_anisotropy():
    """Swapping z with an in-plane axis: one patch z step covers aniso in-plane voxels."""
    rng = np.random.default_rng(5)
    params = aug.WarpParams(lock_z=False, warp_amount=0, flips=False)
    swaps = [aug.random_transform(rng, params, aniso_factor=2.0) for _ in range(30)]
    z_to_x = [m for m in swaps if abs(m[2, 0]) > 0.5]
    assert z_to_x
    for m in z_to_x:  # patch z (depth 1 slice = 2 physical units) -> 2 voxels along x
        assert m[2, 0] == pytest.approx(2.0)
        # one in-plane patch axis now runs along z: one step is half a slice
        assert sorted(np.abs(m[0, 1:3])) == pytest.approx([0.0, 0.5])


def test_warp_params_validation():
    assert aug.WarpParams.from_args({'warp_amount': 0.5, 'lock_z': False}).warp_amount == 0.5
    with pytest.raises(ConfigError, match=r"Unknown warp_args \['lockz'\]; valid keys: warp_am"):
        aug.WarpParams.from_args({'lockz': True})


def test_grey_noise_blur_erasing_touch_only_their_channels():
    rng = np.random.default_rng(0)
    image = rng.random((2, 8, 30, 30)).astype(np.float32)
    for fn in (aug.grey_augment, aug.add_noise, aug.blur, aug.random_erasing):
        out = fn(image, [0], rng)
        assert out.dtype == np.float32 and out.shape == image.shape
        np.testing.assert_array_equal(out[1], image[1])
        assert not np.array_equal(out[0], image[0]), fn.__name__
    grey = aug.grey_augment(image, [0, 1], rng)
    assert grey.min() >= 0 and grey.max() <= 1
    # grey augmentation keeps the order of grey values (monotonic per channel)
    order = np.argsort(image[0].ravel())
    assert np.all(np.diff(grey[0].ravel()[order]) >= 0)
    with pytest.raises(ConfigError, match='fill'):
        aug.random_erasing(image, [0], rng, fill='zeros')


def test_elastic_field_is_bounded_smooth_and_in_plane_with_lock_z():
    params = aug.WarpParams(elastic=6.0, elastic_spacing=16.0)
    shape = (9, 64, 80)
    field = aug.random_elastic_field(np.random.default_rng(1), params, shape, aniso_factor=2.0)
    points = aug.grid_points(shape)
    moved = field.at(points).reshape(shape + (3,))
    assert np.abs(moved).max() <= 6.0 and np.abs(moved[..., 1:]).max() > 2.0
    assert not moved[..., 0].any()  # lock_z (the default): no displacement along z
    # cubic interpolation of control points 16 voxels apart: neighbours move alike
    assert np.abs(np.diff(moved[..., 1:], axis=2)).max() < 1.5
    assert aug.random_elastic_field(np.random.default_rng(1), aug.WarpParams(), shape) is None
    free = aug.random_elastic_field(np.random.default_rng(1), aug.WarpParams(elastic=3.0, lock_z=False),
                                    shape)
    assert np.abs(free.at(points)[:, 0]).max() > 0.5


def test_warped_points_with_a_field_are_the_displaced_affine_points():
    params = aug.WarpParams(elastic=4.0)
    shape = (1, 20, 30)
    field = aug.random_elastic_field(np.random.default_rng(2), params, shape, planar=True)
    matrix = aug.patch_matrix(aug.random_transform(np.random.default_rng(3), params, planar=True),
                              shape, (0, 50, 60))
    points = aug.grid_points(shape)
    np.testing.assert_allclose(aug.warped_points(matrix, field, shape),
                               aug.map_points(matrix, points + field.at(points)))
    corners = aug.extent_points(matrix, None, shape)
    np.testing.assert_allclose([corners.min(0), corners.max(0)],
                               [aug.warped_points(matrix, None, shape).min(0),
                                aug.warped_points(matrix, None, shape).max(0)])
