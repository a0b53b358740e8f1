"""Skeleton geometry and NML files (written, read back, and KNOSSOS-style input)."""
import numpy as np
import pytest

from elektronn2.errors import DataError
from elektronn2.utils.skeleton import Skeleton, read_nml, write_nml


def line_skeleton(direction, n=10, voxel_size=(1.0, 1.0, 1.0)):
    """Nodes on a straight physical line; coordinates in voxels."""
    step = np.asarray(direction, float) / np.asarray(voxel_size)
    nodes = np.arange(n)[:, None] * step + 5
    return Skeleton(nodes, [(i, i + 1) for i in range(n - 1)], voxel_size=voxel_size)


def test_geometry_of_a_line_with_anisotropic_voxels():
    direction = np.array([2.0, 1.0, 2.0]) / 3
    sk = line_skeleton(direction * 3, voxel_size=(2.0, 1.0, 1.0))
    assert sk.length() == pytest.approx(9 * 3)
    np.testing.assert_array_equal(sk.degrees(), [1] + [2] * 8 + [1])
    assert sorted(sk.neighbours(4)) == [3, 5]
    for d in sk.local_directions(n_hops=1):
        assert abs(d @ direction) == pytest.approx(1.0)


def test_components_and_directions_at_ends_branches_and_lone_nodes():
    # a T: stem along z, bar along x, plus one unconnected node
    nodes = [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0), (3, 0, -1), (3, 0, 1), (9, 9, 9)]
    sk = Skeleton(nodes, [(0, 1), (1, 2), (2, 3), (3, 4), (3, 5)])
    parts = sk.components()
    assert [sorted(p) for p in parts] == [[0, 1, 2, 3, 4, 5], [6]]
    directions = sk.local_directions(n_hops=2)
    assert abs(directions[0][0]) > 0.99           # end of the stem: along z
    assert abs(directions[4][2]) > 0.7            # end of the bar: mostly along x
    np.testing.assert_array_equal(directions[6], [1, 0, 0])
    assert np.allclose(np.linalg.norm(directions, axis=1), 1)


def test_inconsistent_skeletons_are_refused():
    with pytest.raises(DataError, match='edges refer to nodes 0..5, but there are 2 nodes'):
        Skeleton(np.zeros((2, 3)), [(0, 5)])
    with pytest.raises(DataError, match='3 radii for 2 nodes'):
        Skeleton(np.zeros((2, 3)), [(0, 1)], radii=[1, 2, 3])
    with pytest.raises(DataError, match="node attribute 'time' has 1 values"):
        Skeleton(np.zeros((2, 3)), [(0, 1)], node_attributes={'time': np.array([1])})
    with pytest.raises(DataError, match='comments on missing nodes'):
        Skeleton(np.zeros((2, 3)), [], comments={4: 'x'})


def test_nml_round_trip(tmp_path):
    a = Skeleton([(1, 2, 3), (4, 5, 6), (7, 8, 9.5)], [(0, 1), (1, 2)], radii=[1.5, 2, 2.5],
                 node_attributes={'time': np.array([10.0, 20.0, 30.0]),
                                  'kind': np.array(['soma', 'axon', 'axon'], dtype=object)},
                 comments={2: 'synapse <here> & "there"'}, voxel_size=(20, 10, 10), id=3,
                 name='cell 3')
    b = Skeleton([(0, 0, 0), (0, 0, 1)], [(1, 0)], voxel_size=(20, 10, 10), id=8)
    path = write_nml(tmp_path / 'cells.nml', [a, b], experiment='fib')
    text = path.read_text()
    assert '<scale x="10.0" y="10.0" z="20.0" />' in text
    assert 'x="3.0" y="2.0" z="1.0"' in text      # stored (z, y, x), written as x, y, z
    back = read_nml(path)
    assert [s.id for s in back] == [3, 8] and back[0].name == 'cell 3'
    for orig, read in zip([a, b], back):
        np.testing.assert_allclose(read.nodes, orig.nodes)
        np.testing.assert_array_equal(read.edges, orig.edges)
        np.testing.assert_allclose(read.radii, orig.radii)
        assert read.voxel_size == (20.0, 10.0, 10.0)
        assert read.comments == orig.comments
    np.testing.assert_allclose(back[0].node_attributes['time'], [10, 20, 30])
    assert list(back[0].node_attributes['kind']) == ['soma', 'axon', 'axon']


KNOSSOS_NML = """<?xml version="1.0"?>
<things>
  <parameters>
    <experiment name="j0126"/>
    <scale x="9.0" y="9.0" z="20.0"/>
    <offset x="0" y="0" z="0"/>
  </parameters>
  <thing id="12">
    <nodes>
      <node id="101" radius="1.5" x="10" y="20" z="30" inVp="0" inMag="1" time="125"/>
      <node id="102" radius="1.5" x="11" y="21" z="31" inVp="0" inMag="1" time="130"/>
      <node id="107" radius="2" x="12" y="23" z="31" inVp="1" inMag="1" time="140"/>
    </nodes>
    <edges>
      <edge source="101" target="102"/>
      <edge source="102" target="107"/>
    </edges>
  </thing>
  <comments>
    <comment node="107" content="end"/>
  </comments>
  <branchpoints/>
</things>
"""


def test_reads_knossos_style_nml(tmp_path):
    path = tmp_path / 'knossos.nml'
    path.write_text(KNOSSOS_NML)
    [sk] = read_nml(path)
    assert sk.id == 12 and sk.voxel_size == (20.0, 9.0, 9.0)
    np.testing.assert_array_equal(sk.nodes[2], [31, 23, 12])
    np.testing.assert_array_equal(sk.edges, [[0, 1], [1, 2]])
    np.testing.assert_array_equal(sk.node_attributes['time'], [125, 130, 140])
    assert sk.comments == {2: 'end'}


def test_bad_nml_files_raise_data_errors(tmp_path):
    broken = tmp_path / 'broken.nml'
    broken.write_text('<things><thing>')
    with pytest.raises(DataError, match='Cannot read NML file'):
        read_nml(broken)
    dangling = tmp_path / 'dangling.nml'
    dangling.write_text(KNOSSOS_NML.replace('target="107"', 'target="999"'))
    with pytest.raises(DataError, match='edge to node 999'):
        read_nml(dangling)
    no_x = tmp_path / 'no_x.nml'
    no_x.write_text(KNOSSOS_NML.replace(' x="10"', ''))
    with pytest.raises(DataError, match="lacks a numeric 'x'"):
        read_nml(no_x)
    with pytest.raises(DataError, match='different voxel sizes'):
        write_nml(tmp_path / 'x.nml', [Skeleton([(0, 0, 0)], []),
                                      Skeleton([(0, 0, 0)], [], voxel_size=(2, 1, 1))])
