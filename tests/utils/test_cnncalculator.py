"""cnncalculator: the same shape rules as the Conv node."""
import logging

import pytest

import elektronn2.neuromancer as nm
from elektronn2.errors import ShapeError
from elektronn2.utils.cnncalculator import cnncalculator

NEURO3D_FILTERS = [(1, 6, 6), (1, 5, 5), (1, 5, 5), (4, 4, 4), (3, 4, 4), (3, 4, 4), (2, 4, 4),
                   (1, 4, 4), (1, 4, 4), (1, 1, 1)]
NEURO3D_POOLS = [(1, 2, 2), (1, 2, 2), (1, 1, 1), (2, 1, 1)] + [(1, 1, 1)] * 6


def test_neuro3d_patch_accepted():
    calc = cnncalculator(NEURO3D_FILTERS, NEURO3D_POOLS, desired_patch_size=(23, 185, 185), ndim=3)
    assert calc.patch_size == (23, 185, 185)
    assert calc.output_size == (5, 21, 21)
    assert calc.strides == (2, 4, 4) and calc.fov == (15, 105, 105)
    assert calc.offsets == (7, 52, 52)
    assert calc.messages == ()
    assert 185 in calc.valid_patch_sizes[1] and '(5, 21, 21)' in calc.report


def test_impossible_lateral_size_is_snapped(caplog):
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        calc = cnncalculator(NEURO3D_FILTERS, NEURO3D_POOLS, desired_patch_size=(23, 183, 186), ndim=3)
    assert calc.patch_size == (23, 181, 185)
    assert 'patch size 186 is not valid, snapped to 185' in caplog.text
    # the snapped size really builds with Conv nodes
    inp = nm.Input((None, 1) + calc.patch_size, 'b,f,z,x,y')
    out = inp
    for f, p in zip(NEURO3D_FILTERS, NEURO3D_POOLS):
        out = nm.Conv(out, 2, f, p)
    assert out.shape.spatial_shape == calc.output_size and out.shape.fov == calc.fov


def test_even_fov_warns_or_refuses(caplog):
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        calc = cnncalculator([3, 3], [2, 2], desired_patch_size=(46, 46), ndim=2)
    assert calc.fov == (10, 10) and 'even' in caplog.text
    with pytest.raises(ShapeError, match='even'):
        cnncalculator([3, 3], [2, 2], desired_patch_size=46, ndim=2, force_center=True)


def test_desired_output_and_mfp():
    calc = cnncalculator([4, 4], [2, 2], desired_output=(10,), ndim=1)
    assert calc.output_size == (10,) and calc.patch_size == (49,)
    mfp = cnncalculator([4, 4], [2, 2], desired_patch_size=(28,), mfp=True, ndim=1)
    assert mfp.patch_size == (28,) and mfp.output_size == (16,) and mfp.strides == (1,)
    assert calc.overlap == (49 - 10 * 4,)
