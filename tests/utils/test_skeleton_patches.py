"""Patches oriented along skeletons: rotations, synthetic tubes, the real FIB volume."""
import numpy as np
import pytest

from elektronn2.errors import DataError
from elektronn2.utils.skeleton import Skeleton
from elektronn2.utils.skeleton_patches import (
    SkeletonPatchSampler,
    oriented_patch_coordinates,
    rotation_to_axis,
    sample_patch,
)
from elektronn2.utils.skeletonisation import skeletonise


@pytest.mark.parametrize('direction', [(1, 0, 0), (0, 1, 0), (0, 0, -1), (1, 2, 2), (0.1, 5, 0)])
@pytest.mark.parametrize('roll', [0.0, 1.1])
def test_rotation_is_proper_and_maps_z_onto_the_direction(direction, roll):
    r = rotation_to_axis(direction, roll)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r[:, 0], np.asarray(direction) / np.linalg.norm(direction))


def test_rotation_for_z_is_the_identity_and_zero_length_is_refused():
    np.testing.assert_allclose(rotation_to_axis((3, 0, 0)), np.eye(3))
    with pytest.raises(DataError, match='has no length'):
        rotation_to_axis((0, 0, 0))


def test_patch_coordinates_step_along_the_direction_in_physical_units():
    coords = oriented_patch_coordinates((10, 20, 30), (1, 1, 0), (5, 3, 3),
                                        voxel_size=(2.0, 1.0, 1.0))
    assert coords.shape == (3, 5, 3, 3)
    np.testing.assert_allclose(coords[:, 2, 1, 1], [10, 20, 30])
    step = (coords[:, 3, 1, 1] - coords[:, 2, 1, 1]) * [2.0, 1.0, 1.0]
    np.testing.assert_allclose(step, np.array([1, 1, 0]) / np.sqrt(2))


def smallest_overlap_with_middle_slice(inside):
    """Min over z slices of the intersection over union with the middle slice."""
    centre = inside[len(inside) // 2]
    return min(np.logical_and(s, centre).sum() / np.logical_or(s, centre).sum() for s in inside)


@pytest.mark.parametrize('voxel_size, shape', [((1.0, 1.0, 1.0), (48, 48, 48)),
                                               ((2.0, 1.0, 1.0), (24, 48, 48))])
def test_patch_along_a_tube_axis_holds_the_tube_along_z(tube_volume, voxel_size, shape):
    volume, axis = tube_volume(shape, (1, 2, 2), 4.0, voxel_size)
    tube = (volume == 7).astype(np.float32)
    centre = (np.asarray(shape) - 1) / 2
    along = sample_patch(tube, oriented_patch_coordinates(centre, axis, (21, 15, 15),
                                                          voxel_size, roll=0.7)) > 0.5
    assert np.all(along[:, 7, 7]), 'the patch axis runs inside the tube'
    assert smallest_overlap_with_middle_slice(along) > 0.75
    assert along[10].sum() == pytest.approx(np.pi * 4 ** 2, rel=0.15)
    across = sample_patch(tube, oriented_patch_coordinates(centre, np.cross(axis, [0, 0, 1]),
                                                           (21, 15, 15), voxel_size)) > 0.5
    assert np.mean(across[:, 7, 7]) < 0.5
    assert smallest_overlap_with_middle_slice(across) == 0


def test_sampler_on_a_skeletonised_tube_with_a_channel_volume(tube_volume):
    labels, axis = tube_volume((40, 40, 40), (0, 1, 1), 4.0)
    image = np.stack([labels * 10.0, -labels * 1.0]).astype(np.float32)
    [sk] = skeletonise(labels, method='skimage').values()
    sampler = SkeletonPatchSampler([sk], [image, labels], (11, 9, 9), orders=[1, 0], seed=3)
    batch = sampler.sample(6)
    assert batch.patches[0].shape == (6, 2, 11, 9, 9) and batch.patches[1].shape == (6, 11, 9, 9)
    assert np.all(batch.skeleton_ids == 7)
    np.testing.assert_allclose(batch.centres, sk.nodes[batch.node_indices])
    assert np.all(np.abs(batch.directions @ axis) > 0.9)
    assert np.all(batch.patches[1][:, :, 4, 4] == 7)
    np.testing.assert_allclose(batch.patches[0][:, 1], -0.1 * batch.patches[0][:, 0], atol=1e-4)
    np.testing.assert_allclose(batch.patches[0][:, 0, :, 4, 4], 70.0, atol=1e-3)
    again = SkeletonPatchSampler([sk], [image, labels], (11, 9, 9), orders=[1, 0], seed=3).sample(6)
    np.testing.assert_array_equal(again.patches[1], batch.patches[1])


def test_real_volume_patches_follow_the_neurites(fib_volumes):
    raw, labels = fib_volumes
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    skeletons = skeletonise(labels, object_ids=ids[np.argsort(counts)[-12:-4]], method='skimage')
    sampler = SkeletonPatchSampler(list(skeletons.values()), [raw, labels], (41, 9, 9),
                                   orders=[1, 0], seed=0)
    batch = sampler.sample(48)
    raw_patches, label_patches = batch.patches
    assert raw_patches.shape == label_patches.shape == (48, 41, 9, 9)
    assert raw_patches.dtype == np.uint8 and raw_patches.std() > 5
    assert np.all(label_patches[:, 20, 4, 4] == batch.skeleton_ids), 'centres lie on their object'
    along = np.mean(label_patches[:, :, 4, 4] == batch.skeleton_ids[:, None])
    rng = np.random.default_rng(0)
    across = np.mean([sample_patch(labels, oriented_patch_coordinates(
        c, np.cross(d, rng.normal(size=3)), (41, 9, 9)), 0)[:, 4, 4] == i
        for c, d, i in zip(batch.centres, batch.directions, batch.skeleton_ids)])
    assert along > 0.6 and along > across + 0.2, (along, across)


def test_sampler_checks_its_inputs():
    sk = Skeleton([(1, 1, 1)], [])
    with pytest.raises(DataError, match='no skeleton with nodes'):
        SkeletonPatchSampler([Skeleton(np.zeros((0, 3)), [])], [np.zeros((4, 4, 4))], (3, 3, 3))
    with pytest.raises(DataError, match='1 orders for 2 volumes'):
        SkeletonPatchSampler([sk], [np.zeros((4, 4, 4))] * 2, (3, 3, 3), orders=[0])
    with pytest.raises(DataError, match='differ in'):
        SkeletonPatchSampler([sk], [np.zeros((4, 4, 4)), np.zeros((4, 4, 5))], (3, 3, 3))
    with pytest.raises(DataError, match=r'expected \(z, y, x\)'):
        sample_patch(np.zeros((4, 4)), np.zeros((3, 1, 1, 1)))
