"""Training patches oriented along skeleton paths.

At a skeleton node the local direction of the path (see
:meth:`Skeleton.local_directions`) gives a rotation that maps the patch's first axis
(``z``) onto the path; the rotated grid of the patch is sampled from the volume with
``scipy.ndimage.map_coordinates``. Geometry is computed in physical units, so anisotropic
voxels are handled; the patch grid is isotropic with spacing ``patch_voxel_size``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import DataError
from .skeleton import Skeleton


def rotation_to_axis(direction: Sequence[float], roll: float = 0.0) -> np.ndarray:
    """A rotation ``R`` (3x3, columns = patch axes in ``(z, y, x)``) with ``R[:, 0]`` along
    ``direction``; ``roll`` (radians) turns the patch about that axis.

    For direction ``(1, 0, 0)`` and no roll, ``R`` is the identity.
    """
    axis = np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(axis)
    if not np.isfinite(norm) or norm == 0:
        raise DataError(f"rotation_to_axis: direction {tuple(direction)} has no length")
    axis = axis / norm
    helper = np.array([0.0, 1.0, 0.0]) if abs(axis[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
    second = helper - helper.dot(axis) * axis
    second /= np.linalg.norm(second)
    third = np.cross(axis, second)
    c, s = np.cos(roll), np.sin(roll)
    second, third = c * second + s * third, -s * second + c * third
    return np.stack([axis, second, third], axis=1)


def oriented_patch_coordinates(centre: Sequence[float], direction: Sequence[float],
                               patch_shape: Sequence[int],
                               voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
                               patch_voxel_size: float | None = None,
                               roll: float = 0.0) -> np.ndarray:
    """Voxel coordinates ``(3, *patch_shape)`` of a patch centred at ``centre`` (voxels),
    its z-axis along ``direction`` (physical ``(z, y, x)``)."""
    voxel_size = np.asarray(voxel_size, dtype=np.float64)
    spacing = float(voxel_size.min() if patch_voxel_size is None else patch_voxel_size)
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * spacing for n in patch_shape],
                                indexing='ij'))
    physical = np.tensordot(rotation_to_axis(direction, roll), grid, axes=1)
    to_voxels = voxel_size[:, None, None, None]
    return physical / to_voxels + np.asarray(centre, float)[:, None, None, None]


def sample_patch(volume: np.ndarray, coordinates: np.ndarray, order: int = 1,
                 cval: float = 0.0) -> np.ndarray:
    """Values of a ``(z, y, x)`` or ``(c, z, y, x)`` volume at voxel ``coordinates``.

    ``order`` 0 (nearest) suits labels, 1 (linear) or 3 images; outside is ``cval``.
    """
    if volume.ndim == 3:
        return ndimage.map_coordinates(volume, coordinates, order=order, cval=cval)
    if volume.ndim == 4:
        return np.stack([ndimage.map_coordinates(channel, coordinates, order=order, cval=cval)
                         for channel in volume])
    raise DataError(f"sample_patch: volume of shape {volume.shape}; expected (z, y, x) "
                    f"or (c, z, y, x)")


@dataclass
class OrientedPatches:
    """A batch from :class:`SkeletonPatchSampler`.

    patches: one array per volume, ``(n, [c,] *patch_shape)``; skeleton_ids and node_indices:
    where each patch was taken; centres: voxel coordinates; directions: unit path directions.
    """
    patches: list[np.ndarray]
    skeleton_ids: np.ndarray
    node_indices: np.ndarray
    centres: np.ndarray
    directions: np.ndarray


class SkeletonPatchSampler:
    """Random patches centred on skeleton nodes, oriented along the skeleton.

    Args:
        skeletons: skeletons in the voxel coordinates of the volumes.
        volumes: arrays ``(z, y, x)`` or ``(c, z, y, x)`` sampled at the same places
            (e.g. raw image and labels).
        patch_shape: ``(z, y, x)`` size of the patches; z runs along the path.
        orders: interpolation order per volume (default 1; use 0 for labels).
        voxel_size: physical voxel size of the volumes (default: the skeletons').
        patch_voxel_size: spacing of the patch grid (default: the smallest voxel size).
        random_roll: turn each patch by a random angle about the path.
        n_hops: neighbourhood for the local direction (see ``Skeleton.local_directions``).
        seed: seed of the random generator.
    """

    def __init__(self, skeletons: Sequence[Skeleton], volumes: Sequence[np.ndarray],
                 patch_shape: Sequence[int], orders: Sequence[int] | None = None,
                 voxel_size: Sequence[float] | None = None, patch_voxel_size: float | None = None,
                 random_roll: bool = True, n_hops: int = 2, seed: int | None = None):
        self.skeletons = [s for s in skeletons if len(s)]
        if not self.skeletons:
            raise DataError("SkeletonPatchSampler: no skeleton with nodes given")
        self.volumes = list(volumes)
        self.orders = list(orders) if orders is not None else [1] * len(self.volumes)
        if len(self.orders) != len(self.volumes):
            raise DataError(f"SkeletonPatchSampler: {len(self.orders)} orders for "
                            f"{len(self.volumes)} volumes")
        if len({v.shape[-3:] for v in self.volumes}) > 1:
            raise DataError(f"SkeletonPatchSampler: volumes differ in (z, y, x) size: "
                            f"{[v.shape for v in self.volumes]}")
        self.patch_shape = tuple(int(n) for n in patch_shape)
        self.voxel_size = tuple(voxel_size or self.skeletons[0].voxel_size)
        self.patch_voxel_size = patch_voxel_size
        self.random_roll = random_roll
        self.rng = np.random.default_rng(seed)
        self._directions = [s.local_directions(n_hops) for s in self.skeletons]
        sizes = np.array([len(s) for s in self.skeletons], dtype=np.float64)
        self._skeleton_weights = sizes / sizes.sum()

    def sample(self, n: int) -> OrientedPatches:
        """``n`` patches at nodes drawn uniformly from all skeleton nodes."""
        which = self.rng.choice(len(self.skeletons), size=n, p=self._skeleton_weights)
        nodes = np.array([self.rng.integers(len(self.skeletons[w])) for w in which])
        centres = np.array([self.skeletons[w].nodes[i] for w, i in zip(which, nodes)])
        directions = np.array([self._directions[w][i] for w, i in zip(which, nodes)])
        rolls = self.rng.uniform(0, 2 * np.pi, n) if self.random_roll else np.zeros(n)
        patches = [[] for _ in self.volumes]
        for centre, direction, roll in zip(centres, directions, rolls):
            coords = oriented_patch_coordinates(centre, direction, self.patch_shape,
                                                self.voxel_size, self.patch_voxel_size, roll)
            for out, volume, order in zip(patches, self.volumes, self.orders):
                out.append(sample_patch(volume, coords, order))
        return OrientedPatches(patches=[np.stack(p) for p in patches],
                               skeleton_ids=np.array([self.skeletons[w].id for w in which]),
                               node_indices=nodes, centres=centres, directions=directions)
