"""skeletonise: synthetic tubes with a known axis, and the real FIB id volume."""
import sys

import numpy as np
import pytest
from scipy import ndimage

from elektronn2.errors import ConfigError, DataError
from elektronn2.utils.optional import MissingDependencyError
from elektronn2.utils.skeleton import read_nml, write_nml
from elektronn2.utils.skeletonisation import skeletonise


def kimimaro_or_skip():
    pytest.importorskip('kimimaro', reason="kimimaro not installed (pip install kimimaro)")


@pytest.mark.parametrize('method', ['skimage', 'kimimaro'])
@pytest.mark.parametrize('voxel_size, shape, direction', [
    ((1.0, 1.0, 1.0), (48, 48, 48), (1, 2, 2)),
    ((1.0, 1.0, 1.0), (40, 40, 40), (1, 0, 0)),     # even width: scikit-image alone loses it
    ((2.0, 1.0, 1.0), (24, 48, 48), (1, 2, 2)),
])
def test_tube_skeleton_follows_the_axis(tube_volume, method, voxel_size, shape, direction):
    if method == 'kimimaro':
        kimimaro_or_skip()
    volume, axis = tube_volume(shape, direction, 4.0, voxel_size)
    [(object_id, sk)] = skeletonise(volume, voxel_size=voxel_size, method=method).items()
    assert object_id == 7 and sk.id == 7 and sk.voxel_size == voxel_size
    assert len(sk.components()) == 1
    rel = sk.physical_nodes - (np.asarray(shape) - 1) / 2 * np.asarray(voxel_size)
    along = rel @ axis
    off_axis = np.linalg.norm(rel - along[:, None] * axis, axis=1)
    assert off_axis.max() < 2.0
    tube_length = np.ptp(np.argwhere(volume) * voxel_size @ axis)
    assert np.ptp(along) > 0.8 * tube_length
    assert 2.5 < np.median(sk.radii) <= 4.5
    directions = sk.local_directions()
    assert np.mean(np.abs(directions @ axis) > 0.9) > 0.85


@pytest.mark.parametrize('method', ['skimage', 'kimimaro'])
def test_real_id_volume(fib_volumes, tmp_path, method):
    if method == 'kimimaro':
        kimimaro_or_skip()
    _, labels = fib_volumes
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    largest = ids[np.argsort(counts)[-3:]]
    skeletons = skeletonise(labels, object_ids=largest, method=method)
    assert sorted(skeletons) == sorted(int(i) for i in largest)
    for object_id, sk in skeletons.items():
        assert len(sk) > 20 and sk.length() > 50
        voxels = np.round(sk.nodes).astype(int)
        assert np.mean(labels[tuple(voxels.T)] == object_id) > 0.95, 'nodes lie in their object'
        steps = np.linalg.norm(sk.nodes[sk.edges[:, 0]] - sk.nodes[sk.edges[:, 1]], axis=1)
        assert len(sk.edges) == len(sk) - len(sk.components()), 'a forest, no cycles'
        assert steps.max() < 10
        mask = labels == object_id
        assert len(sk.components()) <= ndimage.label(mask, np.ones((3, 3, 3)))[1]
        assert np.all(sk.radii > 0)
        if method == 'skimage':    # kimimaro does not count the volume's faces as surface
            assert sk.radii.max() <= ndimage.distance_transform_edt(np.pad(mask, 1)).max()
    path = write_nml(tmp_path / 'fib.nml', list(skeletons.values()))
    back = {s.id: s for s in read_nml(path)}
    for object_id, sk in skeletons.items():
        np.testing.assert_allclose(back[object_id].nodes, sk.nodes)
        np.testing.assert_array_equal(back[object_id].edges, sk.edges)


def test_small_objects_are_skipped_and_background_ignored():
    volume = np.zeros((20, 20, 20), np.int32)
    volume[2:4, 2:4, 2:4] = 3                  # 8 voxels
    volume[5:15, 8:12, 8:12] = 4               # 160 voxels
    skeletons = skeletonise(volume, method='skimage', min_voxels=50)
    assert list(skeletons) == [4]
    assert list(skeletonise(volume, object_ids=[0, 3], method='skimage', min_voxels=1)) == [3]


def test_invalid_arguments():
    with pytest.raises(DataError, match='3-D integer id volume'):
        skeletonise(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ConfigError, match="choose one of"):
        skeletonise(np.zeros((4, 4, 4), np.int32), method='teasar')
    with pytest.raises(ConfigError, match="for method='kimimaro' only"):
        skeletonise(np.zeros((4, 4, 4), np.int32), method='skimage', teasar_params={})


def test_missing_kimimaro_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, 'kimimaro', None)
    with pytest.raises(MissingDependencyError, match='pip install kimimaro'):
        skeletonise(np.ones((4, 4, 4), np.int32), method='kimimaro')
