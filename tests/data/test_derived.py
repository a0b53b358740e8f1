"""Derived volumes: sub-volumes and label conversions computed on read."""
import pickle

import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.data import (
    ArraySource,
    BatchCreatorImage,
    BoundaryLabels,
    MappedLabels,
    SubVolume,
    ids2barriers,
)
from elektronn2.errors import DataError, ShapeError


@pytest.fixture
def ids():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 6, (4, 5, 5)).repeat(3, 0).repeat(4, 1).repeat(4, 2)
    return blocks.astype(np.uint32)  # (12, 20, 20), id 0 as extracellular space


def test_subvolume_reads_its_box_and_keeps_channels():
    data = np.arange(2 * 10 * 6 * 7).reshape(2, 10, 6, 7)
    sub = SubVolume(ArraySource(data), np.s_[3:8, 1:])
    assert sub.shape == (2, 5, 5, 7) and sub.name == 'array[3:8,1:6,0:7]'
    np.testing.assert_array_equal(sub[...], data[:, 3:8, 1:])
    np.testing.assert_array_equal(sub[1, 2:4, :, 5:], data[1, 5:7, 1:, 5:])
    with pytest.raises(ShapeError, match='unit-step'):
        SubVolume(ArraySource(data), np.s_[::2])
    with pytest.raises(ShapeError, match='selects nothing'):
        SubVolume(ArraySource(data), np.s_[8:3])


@pytest.mark.parametrize('options', [{}, {'dilute': True}, {'dilute': [False, True, False],
                                                            'ecs_as_barr': 'new_class'}])
def test_boundary_labels_equal_whole_volume_conversion(ids, options):
    labels = BoundaryLabels(ArraySource(ids), **options)
    whole = ids2barriers(ids, **options)
    assert labels.dtype == np.int16 and labels.shape == ids.shape
    for box in (np.s_[...], np.s_[2:7, 3:11, 0:5], np.s_[0:1, 19:20, 4:16], np.s_[11:, :2, 18:]):
        np.testing.assert_array_equal(labels[box], whole[box])
    restored = pickle.loads(pickle.dumps(SubVolume(labels, np.s_[4:9])))
    np.testing.assert_array_equal(restored[...], whole[4:9])


def test_boundary_labels_refuse_non_integer_ids():
    with pytest.raises(DataError, match='integer ids'):
        BoundaryLabels(ArraySource(np.zeros((3, 4, 4), np.float32)))


def test_mapped_labels():
    masks = np.array([[0, 255, 255], [255, 0, 7]], np.uint8)
    mapped = MappedLabels(ArraySource(masks), {0: 1, 255: 0}, default=-1)
    np.testing.assert_array_equal(mapped[...], [[1, 0, 0], [0, 1, -1]])
    strict = MappedLabels(ArraySource(masks), {0: 1, 255: 0})
    np.testing.assert_array_equal(strict[:1], [[1, 0, 0]])
    with pytest.raises(DataError, match=r'values \[7\]'):
        strict[...]


def test_batch_creator_reads_derived_splits(ids):
    raw = ArraySource((ids * 40 % 255).astype(np.uint8))
    boundaries = BoundaryLabels(ArraySource(ids))
    inp = nm.Input((None, 1, 4, 9, 9), 'b,f,z,x,y', name='raw')
    probs = nm.Softmax(nm.Conv(nm.Conv(inp, 3, (1, 3, 3)), 2, 1, activation_func='lin'))
    target = nm.Input_like(probs, override_f=1, name='target', dtype='int16')
    data = BatchCreatorImage(inp, target,
                             d_files=[SubVolume(raw, np.s_[:8]), SubVolume(raw, np.s_[8:])],
                             l_files=[SubVolume(boundaries, np.s_[:8]),
                                      SubVolume(boundaries, np.s_[8:])],
                             valid_cubes=[1], aniso_factor=1, seed=0)
    image, target_batch = data.getbatch(3, source='valid', warp=0)
    assert image.shape == (3, 1, 4, 9, 9) and target_batch.shape == (3, 1, 4, 7, 7)
    assert set(np.unique(target_batch)) <= {0, 1}
    _, example_target = data.example_at(1, (0, 2, 3))  # valid cube = z 8.., output offsets 1
    expected = ids2barriers(ids)[8:12, 3:10, 4:11].transpose(0, 2, 1)  # z,y,x -> net z,x,y
    np.testing.assert_array_equal(example_target[0], expected)
