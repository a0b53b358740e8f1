"""Boxes, network footprints, block grids and mirrored reads."""
import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.data.sources import ArraySource
from elektronn2.errors import ShapeError
from elektronn2.inference.blockwise import mirror_indices, read_mirrored
from elektronn2.inference.geometry import BlockGrid, Box
from elektronn2.neuromancer.footprint import Footprint


def test_box_operations_and_validation():
    box = Box((2, 3, 4), (5, 9, 8))
    assert box.shape == (3, 6, 4) and box.size == 72
    assert box.grow((1, 1, 1), (0, 2, 0)) == Box((1, 2, 3), (5, 11, 8))
    assert Box((3, 4, 4), (4, 9, 5)).slices_in(box) == (slice(1, 2), slice(1, 6), slice(0, 1))
    with pytest.raises(ShapeError, match='does not lie inside'):
        Box((0, 0, 0), (4, 4, 4)).slices_in(box)
    with pytest.raises(ShapeError, match='hi >= lo'):
        Box((0, 5), (1, 4))


def test_net_geometry_in_data_order():
    nm.model_manager.newmodel('geometry')
    inp = nm.Input((None, 1, 9, 27, 29), 'b,f,z,x,y')
    probs = nm.Softmax(nm.Conv(nm.Conv(inp, 3, (3, 4, 4), (1, 2, 2)), 2, 1, activation_func='lin'))
    geometry = Footprint.of(probs)
    # net (z, x, y) = patch (9, 27, 29) -> data (z, y, x)
    assert geometry.patch == (9, 29, 27)
    assert geometry.out == (7, 13, 12) and geometry.strides == (1, 2, 2)
    assert geometry.offsets == (1, 2, 2) and geometry.border == (2, 4, 4)
    assert geometry.context == ((1, 2, 2), (1, 2, 2)) and geometry.exact
    assert geometry.phase == geometry.strides
    # per axis: bases out * stride apart until the tile is covered (the last overhangs)
    assert geometry.patch_bases((10, 26, 30)) == [[0, 7], [0], [0, 24]]
    assert geometry.tile_extent((10, 26, 30)) == (14, 26, 48)
    assert geometry.evaluations((10, 26, 30)) == 2 * 2 * 4
    assert geometry.net_order((10, 20, 30)) == (10, 30, 20)
    volume = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert geometry.to_net(volume).shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(geometry.from_net(geometry.to_net(volume)), volume)


def test_planar_and_same_geometry():
    nm.model_manager.newmodel('planar')
    inp = nm.Input((None, 1, 20, 22), 'b,f,x,y')
    conv = nm.Conv(inp, 2, 3, conv_mode='same', activation_func='lin')
    geometry = Footprint.of(conv)
    assert geometry.planar and geometry.patch == (1, 22, 20) and not geometry.exact
    volume = np.zeros((1, 3, 22, 20))
    assert geometry.to_net(volume).shape == (1, 3, 20, 22)
    even = Footprint.of(nm.Conv(inp, 2, 4))   # even fov: outputs at fov // 2 (ELEKTRONN2)
    assert even.offsets[1:] == (2.0, 2.0) and even.context == ((0, 2, 2), (0, 1, 1))


def test_unet_phase_keeps_patches_on_the_pooling_grid():
    nm.model_manager.newmodel('unet')
    inp = nm.Input((None, 1, 4, 30, 30), 'b,f,z,y,x')
    c0 = nm.Conv(inp, 2, (1, 3, 3))
    c1 = nm.Conv(nm.Pool(c0, (1, 2, 2)), 2, (1, 3, 3))
    c2 = nm.Conv(nm.Pool(c1, (1, 2, 2)), 2, (1, 3, 3))
    up = nm.UpConvMerge(c0, nm.UpConvMerge(c1, c2, 2), 2)
    geometry = Footprint.of(nm.Conv(up, 2, (1, 3, 3)))
    assert geometry.strides == (1, 1, 1) and geometry.phase == (1, 4, 4)
    assert geometry.out == (4, 14, 14)
    # 14 outputs per patch: placements 12 apart so that every patch starts on the 4-grid
    assert geometry.patch_bases((4, 30, 14)) == [[0], [0, 12, 24], [0]]


@pytest.mark.parametrize('region, block', [
    (Box((0, 0, 0), (10, 17, 23)), (4, 8, 8)),
    (Box((2, 3, 1), (7, 9, 20)), (8, 4, 5)),   # a region smaller than a block along z
])
def test_block_grid_partitions_region(region, block):
    grid = BlockGrid(region, block)
    covered = np.zeros(region.shape, int)
    for b in grid:
        assert b.compute.shape == tuple(block)
        assert b.compute.contains(b.write)
        assert all((lo - r) % s == 0 for lo, r, s in zip(b.write.lo, region.lo, block))
        covered[b.write.slices_in(region)] += 1
    assert (covered == 1).all()
    assert len(grid) == len(list(grid)) == np.prod(grid.counts)


@pytest.mark.parametrize('before, after', [(3, 2), (12, 15)])
def test_mirror_reads_equal_symmetric_padding(before, after):
    volume = np.random.rand(2, 5, 6, 7).astype(np.float32)
    box = Box((-before, -1, 2), (5 + after, 6, 7 + after))
    expected = np.pad(volume, [(0, 0), (before, after), (1, 0), (0, after)], mode='symmetric')
    np.testing.assert_array_equal(read_mirrored(ArraySource(volume), box), expected[:, :, :, 2:])
    np.testing.assert_array_equal(mirror_indices(-3, 4, 3), [2, 1, 0, 0, 1, 2, 2])
