"""Skeletons: nodes, edges, radii and node attributes, read and written as NML files.

Node coordinates are voxel indices in the volume's axis order ``(z, y, x)``; ``voxel_size``
(also ``(z, y, x)``) turns them into physical units. NML is the XML format of KNOSSOS and
webKnossos: a ``<thing>`` per skeleton with ``<node id x y z radius .../>`` and
``<edge source target/>`` elements, node ids unique across the file, and
``<parameters><scale x y z/>`` for the voxel size. Coordinates are written as they are
stored (0-based, as webKnossos).

Skeletons of a label volume: :mod:`elektronn2.utils.skeletonisation`; training patches along
them: :mod:`elektronn2.utils.skeleton_patches`.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from ..errors import DataError

_CORE_NODE_ATTRIBUTES = ('id', 'x', 'y', 'z', 'radius')


@dataclass
class Skeleton:
    """A graph of points in a volume.

    Args:
        nodes: ``(n, 3)`` voxel coordinates ``(z, y, x)``.
        edges: ``(m, 2)`` pairs of node indices (undirected).
        radii: ``(n,)`` radius per node in physical units (default 1).
        node_attributes: name -> ``(n,)`` array of further values per node.
        comments: node index -> text.
        voxel_size: physical size of a voxel ``(z, y, x)``.
        id: object id (e.g. the label of the skeletonised object).
        name: free text.
    """
    nodes: np.ndarray
    edges: np.ndarray
    radii: np.ndarray | None = None
    node_attributes: dict[str, np.ndarray] = field(default_factory=dict)
    comments: dict[int, str] = field(default_factory=dict)
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    id: int = 1
    name: str = ''

    def __post_init__(self):
        self.nodes = np.asarray(self.nodes, dtype=np.float64).reshape(-1, 3)
        self.edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        n = len(self.nodes)
        self.radii = (np.ones(n) if self.radii is None
                      else np.asarray(self.radii, dtype=np.float64).reshape(-1))
        self.voxel_size = tuple(float(v) for v in self.voxel_size)
        if len(self.voxel_size) != 3:
            raise DataError(f"Skeleton {self.id}: voxel_size {self.voxel_size} needs 3 values "
                            f"(z, y, x)")
        if len(self.radii) != n:
            raise DataError(f"Skeleton {self.id}: {len(self.radii)} radii for {n} nodes")
        if len(self.edges) and (self.edges.min() < 0 or self.edges.max() >= n):
            raise DataError(f"Skeleton {self.id}: edges refer to nodes "
                            f"{self.edges.min()}..{self.edges.max()}, but there are {n} nodes")
        for key, values in self.node_attributes.items():
            if len(values) != n:
                raise DataError(f"Skeleton {self.id}: node attribute {key!r} has {len(values)} "
                                f"values for {n} nodes")
        bad = [i for i in self.comments if not 0 <= i < n]
        if bad:
            raise DataError(f"Skeleton {self.id}: comments on missing nodes {bad}")

    # --- geometry -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def physical_nodes(self) -> np.ndarray:
        """Node coordinates times the voxel size."""
        return self.nodes * np.asarray(self.voxel_size)

    def length(self) -> float:
        """Sum of the physical lengths of the edges."""
        p = self.physical_nodes
        return float(np.linalg.norm(p[self.edges[:, 0]] - p[self.edges[:, 1]], axis=1).sum())

    def adjacency(self) -> sparse.csr_matrix:
        """Symmetric boolean ``(n, n)`` adjacency matrix."""
        n = len(self.nodes)
        rows = np.concatenate([self.edges[:, 0], self.edges[:, 1]])
        cols = np.concatenate([self.edges[:, 1], self.edges[:, 0]])
        return sparse.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(n, n))

    def degrees(self) -> np.ndarray:
        return np.asarray(self.adjacency().sum(axis=1)).ravel()

    def neighbours(self, index: int) -> np.ndarray:
        adj = self.adjacency()
        return adj.indices[adj.indptr[index]:adj.indptr[index + 1]]

    def components(self) -> list[np.ndarray]:
        """Node indices of each connected component, largest first."""
        n, labels = csgraph.connected_components(self.adjacency(), directed=False)
        parts = [np.flatnonzero(labels == i) for i in range(n)]
        return sorted(parts, key=len, reverse=True)

    def local_directions(self, n_hops: int = 2) -> np.ndarray:
        """Unit direction of the skeleton at each node, ``(n, 3)`` physical ``(z, y, x)``.

        The principal axis of the nodes within ``n_hops`` edges (so end and branch points
        get a direction too). The sign is arbitrary. A node without neighbours gets ``z``.
        """
        if n_hops < 1:
            raise DataError(f"local_directions: n_hops={n_hops} must be >= 1")
        n = len(self.nodes)
        step = (sparse.identity(n, format='csr') + self.adjacency().astype(np.float64)).tocsr()
        reach = step
        for _ in range(n_hops - 1):
            reach = reach @ step
            reach.data[:] = 1
        points = self.physical_nodes
        directions = np.tile([1.0, 0.0, 0.0], (n, 1))
        for i in range(n):
            near = points[reach.indices[reach.indptr[i]:reach.indptr[i + 1]]]
            if len(near) > 1:
                _, _, vt = np.linalg.svd(near - near.mean(axis=0), full_matrices=False)
                directions[i] = vt[0]
        return directions

    def __repr__(self) -> str:
        return (f"Skeleton(id={self.id}, {len(self.nodes)} nodes, {len(self.edges)} edges, "
                f"length {self.length():.1f})")


# --- NML ---------------------------------------------------------------------------------
def _xyz(values: Sequence[float]) -> dict[str, str]:
    """(z, y, x) -> NML's x, y, z attributes."""
    return {'x': repr(float(values[2])), 'y': repr(float(values[1])), 'z': repr(float(values[0]))}


def write_nml(path: str | os.PathLike, skeletons: Skeleton | Sequence[Skeleton],
              experiment: str = '') -> Path:
    """Write skeletons to a KNOSSOS/webKnossos NML file (one thing per skeleton).

    All skeletons must share one voxel size. Returns the path.
    """
    skeletons = [skeletons] if isinstance(skeletons, Skeleton) else list(skeletons)
    sizes = {s.voxel_size for s in skeletons}
    if len(sizes) > 1:
        raise DataError(f"write_nml: skeletons have different voxel sizes {sorted(sizes)}; "
                        f"an NML file has one scale, so write them to separate files")
    root = ET.Element('things')
    parameters = ET.SubElement(root, 'parameters')
    ET.SubElement(parameters, 'experiment', name=experiment)
    ET.SubElement(parameters, 'scale', _xyz(sizes.pop() if sizes else (1.0, 1.0, 1.0)))
    comments = ET.Element('comments')
    first_id = 1
    for skeleton in skeletons:
        thing = ET.SubElement(root, 'thing', id=str(skeleton.id), name=skeleton.name)
        nodes, edges = ET.SubElement(thing, 'nodes'), ET.SubElement(thing, 'edges')
        for i, (coords, radius) in enumerate(zip(skeleton.nodes, skeleton.radii)):
            extra = {k: str(v[i]) for k, v in skeleton.node_attributes.items()
                     if k not in _CORE_NODE_ATTRIBUTES}
            ET.SubElement(nodes, 'node', id=str(first_id + i), radius=repr(float(radius)),
                          **_xyz(coords), **extra)
        for a, b in skeleton.edges:
            ET.SubElement(edges, 'edge', source=str(first_id + a), target=str(first_id + b))
        for i, text in sorted(skeleton.comments.items()):
            ET.SubElement(comments, 'comment', node=str(first_id + i), content=text)
        first_id += len(skeleton.nodes)
    root.append(comments)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path = Path(path)
    tree.write(path, encoding='utf-8', xml_declaration=True)
    return path


def _number(element: ET.Element, key: str, path: Path) -> float:
    try:
        return float(element.attrib[key])
    except (KeyError, ValueError):
        raise DataError(f"{path}: <{element.tag} {ET.tostring(element, 'unicode').strip()[:80]}> "
                        f"lacks a numeric {key!r} attribute") from None


def _attribute_column(values: list[str]) -> np.ndarray:
    """Numbers where every value is one, else strings."""
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return np.array(values, dtype=object)


def read_nml(path: str | os.PathLike) -> list[Skeleton]:
    """Skeletons (one per ``<thing>``) of a KNOSSOS/webKnossos NML file.

    Node attributes other than id, x, y, z and radius (e.g. ``inVp``, ``time``) become
    ``node_attributes``; comments are attached to their nodes.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataError(f"Cannot read NML file {path}: {err}") from None
    if root.tag != 'things':
        raise DataError(f"{path}: root element is <{root.tag}>, an NML file has <things>")
    scale = root.find('parameters/scale')
    voxel_size = ((1.0, 1.0, 1.0) if scale is None else
                  tuple(_number(scale, k, path) for k in ('z', 'y', 'x')))
    where: dict[int, tuple[int, int]] = {}
    parts = []
    for t, thing in enumerate(root.iter('thing')):
        node_elements = thing.findall('nodes/node')
        ids = [int(_number(e, 'id', path)) for e in node_elements]
        where.update({node_id: (t, i) for i, node_id in enumerate(ids)})
        local = {node_id: i for i, node_id in enumerate(ids)}
        try:
            edges = [(local[int(_number(e, 'source', path))],
                      local[int(_number(e, 'target', path))]) for e in thing.findall('edges/edge')]
        except KeyError as err:
            raise DataError(f"{path}: thing {thing.get('id')} has an edge to node {err}, "
                            f"which is not among its nodes") from None
        extra_keys = sorted({k for e in node_elements for k in e.attrib}
                            - set(_CORE_NODE_ATTRIBUTES))
        parts.append(dict(
            nodes=[[_number(e, k, path) for k in ('z', 'y', 'x')] for e in node_elements],
            edges=edges, radii=[float(e.get('radius', 1.0)) for e in node_elements],
            node_attributes={k: _attribute_column([e.get(k, '') for e in node_elements])
                             for k in extra_keys},
            comments={}, voxel_size=voxel_size, id=int(thing.get('id', t + 1)),
            name=thing.get('name', '')))
    for comment in root.iter('comment'):
        node_id = int(_number(comment, 'node', path))
        if node_id in where:
            t, i = where[node_id]
            parts[t]['comments'][i] = comment.get('content', '')
    return [Skeleton(**part) for part in parts]
