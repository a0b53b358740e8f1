"""Volume sources on real files: HDF5, zarr, .npy, arrays; slicing, pickling, errors."""
import pickle

import h5py
import numpy as np
import pytest
import zarr

from elektronn2.data import ArraySource, HDF5Source, NpySource, ZarrSource, open_source
from elektronn2.data.sources import read_channel_box
from elektronn2.errors import DataError

VOLUME = np.arange(6 * 7 * 8, dtype=np.uint16).reshape(6, 7, 8)
INDICES = [np.s_[...], np.s_[1:4, 2:5, 3:7], np.s_[2], np.s_[-1, :, 1:-1], np.s_[::2, 1::3],
           np.s_[..., 5], np.s_[1:1], np.s_[3:1, 0, 0], np.s_[:, -3:, 2:100]]


@pytest.fixture
def sources(tmp_path):
    """The same volume as an HDF5 dataset, a zarr array, a .npy file and an array."""
    with h5py.File(tmp_path / 'v.h5', 'w') as f:
        f.create_dataset('group/vol', data=VOLUME, chunks=(2, 3, 4), compression='gzip')
        f.create_dataset('other', data=np.zeros(3))
    root = zarr.open_group(str(tmp_path / 'v.zarr'), mode='w')
    array = root.create_array('raw/vol', shape=VOLUME.shape, dtype=VOLUME.dtype, chunks=(2, 3, 4))
    array[:] = VOLUME
    np.save(tmp_path / 'v.npy', VOLUME)
    return {'hdf5': open_source(tmp_path / 'v.h5', 'group/vol'),
            'zarr': open_source(tmp_path / 'v.zarr', 'raw/vol'),
            'npy': open_source(tmp_path / 'v.npy'),
            'array': open_source(VOLUME)}


def test_open_source_picks_the_class(sources):
    assert [type(s) for s in sources.values()] == [HDF5Source, ZarrSource, NpySource, ArraySource]
    for source in sources.values():
        assert source.shape == VOLUME.shape and source.dtype == VOLUME.dtype and source.ndim == 3


@pytest.mark.parametrize('index', INDICES)
def test_slicing_matches_numpy(sources, index):
    for kind, source in sources.items():
        np.testing.assert_array_equal(source[index], VOLUME[index], err_msg=kind)


def test_bad_indices(sources):
    source = sources['hdf5']
    with pytest.raises(IndexError, match='out of bounds'):
        source[6]
    with pytest.raises(IndexError, match='too many'):
        source[0, 0, 0, 0]
    with pytest.raises(IndexError, match='ints, slices'):
        source[[1, 2]]


def test_sources_pickle_and_reopen(sources):
    for kind, source in sources.items():
        source[0]  # opens the file
        clone = pickle.loads(pickle.dumps(source))
        np.testing.assert_array_equal(clone[1:3, 2], VOLUME[1:3, 2], err_msg=kind)
    assert '_dataset' not in sources['hdf5'].__getstate__()


def test_missing_file_and_keys_are_named(tmp_path, sources):
    with pytest.raises(DataError, match=r'nope\.h5 does not exist.*v\.h5'):
        open_source(tmp_path / 'nope.h5', 'raw')
    with pytest.raises(DataError, match=r"Key 'raw' in HDF5 file .*v\.h5 does not exist; its "
                                        r"datasets are: group/vol, other"):
        open_source(tmp_path / 'v.h5', 'raw')
    with pytest.raises(DataError, match="'group' .* is a group, not a dataset"):
        open_source(tmp_path / 'v.h5', 'group')
    with pytest.raises(DataError, match='needs a key; its datasets are: group/vol, other'):
        open_source(tmp_path / 'v.h5')
    with pytest.raises(DataError, match=r"Key 'vol' in zarr store .* its arrays are: raw/vol"):
        open_source(tmp_path / 'v.zarr', 'vol')
    (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(DataError, match='Cannot tell the format'):
        open_source(tmp_path / 'notes.txt')


def test_read_channel_box_pads_outside(sources):
    source = sources['hdf5']
    box = read_channel_box(source, (-2, 0, 5), (3, 4, 10), 'mirror')
    expected = np.pad(VOLUME[:3, :4, 5:], [(2, 0), (0, 0), (0, 2)], mode='symmetric')
    np.testing.assert_array_equal(box, expected[None])
    zeros = read_channel_box(source, (-2, 0, 5), (3, 4, 10), '0-pad')
    assert zeros.shape == (1, 5, 4, 5) and zeros[0, :2].max() == 0
    with pytest.raises(DataError, match='partly outside'):
        read_channel_box(source, (-2, 0, 5), (3, 4, 10), 'crop')
    planar = read_channel_box(ArraySource(VOLUME[0]), (0, 1, 2), (1, 3, 4))
    np.testing.assert_array_equal(planar, VOLUME[0, 1:3, 2:4][None, None])


def test_hdf5_source_reads_real_data(data_dir):
    source = HDF5Source(data_dir / 'em' / 'isbi2012.h5', 'train/raw')
    assert source.shape == (30, 512, 512) and source.dtype == np.uint8
    with h5py.File(data_dir / 'em' / 'isbi2012.h5', 'r') as f:
        np.testing.assert_array_equal(source[3, 100:200, ::7], f['train/raw'][3, 100:200, ::7])
