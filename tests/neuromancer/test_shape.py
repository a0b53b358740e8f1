import pytest

from elektronn2.errors import ShapeError
from elektronn2.neuromancer.shape import AxisGeometry, TaggedShape, nearest_valid_sizes, parse_tags


def test_tags_and_sizes():
    sh = TaggedShape((None, 1, 23, 185, 185), 'b,f,z,x,y')
    assert sh.tags == ('b', 'f', 'z', 'x', 'y')
    assert sh['f'] == 1 and sh[2] == 23 and sh['b'] is None
    assert sh.spatial_axes == (2, 3, 4)
    assert sh.spatial_shape == (23, 185, 185)
    assert sh.spatial_size == 23 * 185 * 185
    assert sh.strides == (1, 1, 1) and sh.fov == (1, 1, 1) and sh.offsets == (0, 0, 0)
    assert sh.stripbatch_prod == 23 * 185 * 185
    assert sh.hasbatch and sh.batch_size is None


def test_operations_return_new_values():
    sh = TaggedShape((None, 1, 10, 20), 'b,f,x,y', strides=(2, 2), fov=(5, 7))
    up = sh.updateshape('f', 3)
    assert up['f'] == 3 and sh['f'] == 1
    assert up.fov == (5, 7)
    added = sh.addaxis(2, 4, 'z')
    assert added.tags == ('b', 'f', 'z', 'x', 'y') and added.strides == (1, 2, 2)
    assert added.delaxis('z') == sh
    with pytest.raises(Exception):
        sh.shape = (1,)


@pytest.mark.parametrize('tags, shape, match', [
    ('b,f,q', (1, 1, 1), "Unknown axis tag 'q'"),
    ('b,f,x', (1, 1), 'has 2 axes but tags'),
    ('b,b,x', (1, 1, 1), 'repeat'),
    ('b,f,x', (1, 0, 3), 'positive'),
])
def test_bad_shapes(tags, shape, match):
    with pytest.raises(ShapeError, match=match):
        TaggedShape(shape, tags)


def test_missing_tag_is_named():
    with pytest.raises(ShapeError, match="no axis 'z'"):
        TaggedShape((1, 2), 'b,f')['z']


def test_parse_tags_list():
    assert parse_tags(['b', 'f']) == ('b', 'f')
    assert parse_tags('') == ()


def test_axis_geometry_rules():
    g = AxisGeometry(185)
    g = g.conv_pool(6, 2)  # (185 - 6 + 1) / 2
    assert (g.size, g.stride, g.fov) == (90, 2, 7)
    g = g.conv_pool(5, 2)
    assert (g.size, g.stride, g.fov) == (43, 4, 17)
    assert AxisGeometry(10).conv(3, 'same').size == 10
    assert AxisGeometry(10).conv(3, 'full').size == 12
    assert AxisGeometry(10, fov=-1).conv(3).fov == -1
    with pytest.raises(ShapeError, match='does not divide'):
        AxisGeometry(11, tag='x').pool(2)
    with pytest.raises(ShapeError, match='smaller than the filter'):
        AxisGeometry(2, tag='x').conv(3)
    # overlapping pooling windows
    g = AxisGeometry(9).pool(3, stride=2)
    assert (g.size, g.stride, g.fov) == (4, 2, 3)


def test_mfp_geometry():
    g = AxisGeometry(11).pool(2, mfp=True)
    assert g.size == 5 and g.stride == 2
    with pytest.raises(ShapeError):
        AxisGeometry(10).pool(2, mfp=True)


def test_nearest_valid_sizes():
    assert nearest_valid_sizes(lambda n: n % 4 == 0, 10, n_each_side=2) == [4, 8, 12, 16]
