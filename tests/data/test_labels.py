"""ids2barriers, ids2affinities and neighbourhood targets on small and real id volumes."""
import h5py
import numpy as np
import pytest

from elektronn2.data import ids2affinities, ids2barriers, nhood_targets
from elektronn2.errors import ConfigError

ROW = np.array([[5, 5, 5, 5, 7, 7, 7, 7]])


def test_barriers_mark_both_sides_of_an_id_change():
    np.testing.assert_array_equal(ids2barriers(ROW), [[0, 0, 0, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(ids2barriers(ROW, dilute=True), [[0, 0, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(ids2barriers(ROW, connectivity=[True, False]), np.zeros_like(ROW))
    assert ids2barriers(ROW).dtype == np.int16


def test_extracellular_space_options():
    ids = np.array([[3, 3, 0, 0, 0, 0, 4, 4]])
    np.testing.assert_array_equal(ids2barriers(ids, ecs_as_barr=True), [[0, 1, 1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(ids2barriers(ids, ecs_as_barr=False), [[0, 1, 1, 0, 0, 1, 1, 0]])
    np.testing.assert_array_equal(ids2barriers(ids, ecs_as_barr='new_class'),
                                  [[0, 1, 1, 2, 2, 1, 1, 0]])
    with pytest.raises(ConfigError, match='ecs_as_barr'):
        ids2barriers(ids, ecs_as_barr='yes')
    with pytest.raises(ConfigError, match='one entry per axis'):
        ids2barriers(ids, dilute=[True, True, True])


def test_barriers_of_fib25_match_the_documented_fraction(data_dir):
    with h5py.File(data_dir / 'em' / 'fib25_training_sample2.h5', 'r') as f:
        ids = f['volumes/labels/neuron_ids'][100:150]
        raw = f['volumes/raw'][100:150]
    barriers = ids2barriers(ids)
    # README: about 12.6 % of voxels have a 6-neighbour with another id; raw is darker there
    assert 0.10 < barriers.mean() < 0.16
    assert raw[barriers == 1].mean() + 20 < raw[barriers == 0].mean()
    assert ids2barriers(ids, dilute=True).mean() > 1.5 * barriers.mean()


def test_affinities():
    ids = np.array([[1, 1, 2], [1, 0, 2]])
    aff = ids2affinities(ids)  # 2-D: predecessor along y, then along x
    np.testing.assert_array_equal(aff[0], [[0, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(aff[1], [[0, 1, 0], [0, 0, 0]])
    forward = ids2affinities(ids, nhood=[[0, 1]], background_id=None)
    np.testing.assert_array_equal(forward[0], [[1, 0, 0], [0, 0, 0]])
    assert ids2affinities(np.ones((3, 4, 5), int)).shape == (3, 3, 4, 5)
    with pytest.raises(ConfigError, match='nhood'):
        ids2affinities(ids, nhood=[[1, 0, 0]])


def test_nhood_targets():
    target = np.arange(6).reshape(1, 1, 2, 3)
    out = nhood_targets(target, [[0, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(out[0, 0], target[0, 0])
    np.testing.assert_array_equal(out[0, 1], [[-1, 0, 1], [-1, 3, 4]])  # label at p - (0, 1)
    np.testing.assert_array_equal(out[0, 2], [[-1, -1, -1], [0, 1, 2]])
    assert nhood_targets(np.zeros((2, 1, 3, 4, 5))).shape == (2, 7, 3, 4, 5)


def test_affinity_edges_map_network_offsets_to_zyx_and_refuse_bad_configs():
    from elektronn2.data.labels import affinity_edges
    # default: one stride back along each network axis, returned in z, y, x order
    np.testing.assert_array_equal(affinity_edges(True, None, 'xyz', (1, 2, 3)),
                                  [[0, 0, -1], [0, -2, 0], [-3, 0, 0]])
    np.testing.assert_array_equal(affinity_edges(True, [[-1, 0, 0], [0, 0, -9]], 'zxy',
                                                 (1, 1, 1), n_channels=2),
                                  [[-1, 0, 0], [0, -9, 0]])
    assert affinity_edges(False, None, 'zyx', (1, 1, 1)) is None
    with pytest.raises(ConfigError, match="pass affinities=True"):
        affinity_edges(False, [[-1, 0, 0]], 'zyx', (1, 1, 1))
    with pytest.raises(ConfigError, match="stride 1"):
        affinity_edges(True, [[-1, 0, 0]], 'zyx', (1, 2, 2))
    with pytest.raises(ConfigError, match="2 channel"):
        affinity_edges(True, None, 'zyx', (1, 1, 1), n_channels=2)
