"""KNOSSOS datasets written to disk: reading boxes across cubes, cache, prefetch, errors."""
import pickle

import numpy as np
import pytest

from elektronn2.data import KnossosSource, open_source, read_knossos_conf, write_knossos_dataset
from elektronn2.data.knossos import CUBE_EDGE, cube_path
from elektronn2.errors import DataError

CUBE_BYTES = CUBE_EDGE ** 3


@pytest.fixture(scope='module')
def volume():
    return np.random.default_rng(1).integers(0, 256, (150, 300, 260), dtype=np.uint8)


@pytest.fixture(scope='module')
def dataset(volume, tmp_path_factory):
    return write_knossos_dataset(tmp_path_factory.mktemp('knossos') / 'ds', volume, name='ds',
                                 scale=(20.0, 9.0, 9.0))


def test_conf_and_shape(dataset, volume):
    conf = read_knossos_conf(dataset / 'knossos.conf')
    assert conf == {'name': 'ds', 'boundary': volume.shape, 'scale': (20.0, 9.0, 9.0)}
    source = open_source(dataset)
    assert isinstance(source, KnossosSource)
    assert source.shape == volume.shape and source.dtype == np.uint8


@pytest.mark.parametrize('index', [np.s_[100:140, 120:140, 250:260], np.s_[:, 5, :],
                                   np.s_[3:149:5, 127:129, 0:130], np.s_[-1, -1, -1]])
def test_boxes_across_cubes(dataset, volume, index):
    source = KnossosSource(dataset, prefetch=False)
    np.testing.assert_array_equal(source[index], volume[index])


def test_cache_limit_and_prefetch(dataset, volume):
    source = KnossosSource(dataset, cache_bytes=30 * CUBE_BYTES, prefetch=True)
    np.testing.assert_array_equal(source[10:20, 10:20, 10:20], volume[10:20, 10:20, 10:20])
    source.wait_for_prefetch()
    # the read cube and its neighbours (2 x 2 x 2 cubes at the corner) are cached
    assert {key for key in source.cache._cubes} == {(0, z, y, x) for z in (0, 1) for y in (0, 1)
                                                   for x in (0, 1)}
    small = KnossosSource(dataset, cache_bytes=3 * CUBE_BYTES, prefetch=True)
    np.testing.assert_array_equal(small[:, :, :], volume)
    small.wait_for_prefetch()
    assert small.cache.nbytes <= 3 * CUBE_BYTES and len(small.cache) == 3


def test_channels_mag_and_missing_cubes(tmp_path, volume):
    a = write_knossos_dataset(tmp_path / 'a', volume, name='a')
    b = write_knossos_dataset(tmp_path / 'b', 255 - volume, name='b')
    cube_path(b, 'b', 1, (1, 2, 2)).unlink()  # missing cubes read as zeros
    stacked = KnossosSource([a, b], prefetch=False)
    assert stacked.shape == (2,) + volume.shape
    expected = np.stack([volume, 255 - volume])
    expected[1, 128:, 256:, 256:] = 0
    box = np.s_[:, 120:150, 250:300, 250:260]
    np.testing.assert_array_equal(stacked[box], expected[box])
    down = write_knossos_dataset(tmp_path / 'down', volume[::2, ::2, ::2], name='down', mag=2)
    half = KnossosSource(down, mag=2)
    assert half.shape == (75, 150, 130)
    np.testing.assert_array_equal(half[10:70, 100:140, :], volume[::2, ::2, ::2][10:70, 100:140])


def test_pickled_source_reads(dataset, volume):
    source = KnossosSource(dataset)
    source[0:5, 0:5, 0:5]
    clone = pickle.loads(pickle.dumps(source))
    assert len(clone.cache) == 0
    np.testing.assert_array_equal(clone[140:150, 0:3, 200:260], volume[140:150, 0:3, 200:260])


def test_errors_name_the_path(tmp_path, dataset, volume):
    with pytest.raises(DataError, match='is not a KNOSSOS dataset'):
        KnossosSource(tmp_path)
    with pytest.raises(DataError, match='has no magnification 4 .*available: mag1'):
        KnossosSource(dataset, mag=4)
    other = write_knossos_dataset(tmp_path / 'other', volume[:, :, :100], name='other')
    with pytest.raises(DataError, match='must have equal boundaries'):
        KnossosSource([dataset, other])
    broken = write_knossos_dataset(tmp_path / 'broken', volume, name='broken')
    cube_path(broken, 'broken', 1, (0, 0, 0)).write_bytes(b'short')
    with pytest.raises(DataError, match=r'broken_mag1_x0000_y0000_z0000\.raw has 5 bytes'):
        KnossosSource(broken)[0, 0, 0]
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'knossos.conf').write_text('experiment name "x";\nboundary x 5;\n')
    with pytest.raises(DataError, match=r"lacks the entries \['boundary y', 'boundary z'\]"):
        read_knossos_conf(tmp_path / 'bad' / 'knossos.conf')
