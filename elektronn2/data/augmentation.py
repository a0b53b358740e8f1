"""Data augmentation: random geometric warps and grey-value, noise, blur and erasing.

Geometry works in data order ``(z, y, x)`` with homogeneous 4x4 matrices that map a
*destination* voxel index (in the patch) to a *source* coordinate (in the volume):
inverse coordinate mapping, so only the output voxels are computed. Images are
interpolated linearly, labels by nearest neighbour; both use one matrix, so they stay
registered. 2-D data is a volume of depth 1.

The interpolation kernels are numba loops that compute each source coordinate on the
fly (benchmarks/RESULTS.md: on a 23x185x185 patch about 3.7x faster than
scipy.ndimage.affine_transform / map_coordinates and 2x faster than torch's
grid_sample with 2 threads). They run in the calling thread only, which keeps them
safe in threads and forked worker processes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np
from scipy import ndimage

from ..errors import ConfigError

#: Tolerance (voxels) for source coordinates that lie a rounding error outside a volume.
COORD_TOLERANCE = 1e-4


# --- interpolation kernels ----------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _cell(coord, size):
    """Lower grid index and fraction of ``coord``; index -1 if outside [0, size-1].

    Coordinates a rounding error below 0 count as 0.
    """
    index = math.floor(coord)
    if index < 0:
        if coord > -COORD_TOLERANCE:
            return 0, np.float32(0.0)
        return -1, np.float32(0.0)
    if index >= size:
        return -1, np.float32(0.0)
    return index, np.float32(coord - index)


@numba.njit(cache=True, nogil=True)
def _row_start(matrix, k, j):
    """Homogeneous source coordinates of output voxel (k, j, 0)."""
    return (matrix[0, 0] * k + matrix[0, 1] * j + matrix[0, 3],
            matrix[1, 0] * k + matrix[1, 1] * j + matrix[1, 3],
            matrix[2, 0] * k + matrix[2, 1] * j + matrix[2, 3],
            matrix[3, 0] * k + matrix[3, 1] * j + matrix[3, 3])


@numba.njit(cache=True, nogil=True)
def _warp_linear_kernel(src, matrix, out):
    n_c, size_z, size_y, size_x = src.shape
    n_z, n_y, n_x = out.shape[1], out.shape[2], out.shape[3]
    projective = matrix[3, 0] != 0.0 or matrix[3, 1] != 0.0 or matrix[3, 2] != 0.0
    for k in range(n_z):
        for j in range(n_y):
            bz, by, bx, bw = _row_start(matrix, k, j)
            for i in range(n_x):
                sz, sy, sx = bz + matrix[0, 2] * i, by + matrix[1, 2] * i, bx + matrix[2, 2] * i
                if projective:
                    inverse_w = 1.0 / (bw + matrix[3, 2] * i)
                    sz, sy, sx = sz * inverse_w, sy * inverse_w, sx * inverse_w
                z0, fz = _cell(sz, size_z)
                y0, fy = _cell(sy, size_y)
                x0, fx = _cell(sx, size_x)
                if z0 < 0 or y0 < 0 or x0 < 0:
                    continue
                z1, y1 = min(z0 + 1, size_z - 1), min(y0 + 1, size_y - 1)
                x1 = min(x0 + 1, size_x - 1)
                for c in range(n_c):
                    v000, v001 = np.float32(src[c, z0, y0, x0]), np.float32(src[c, z0, y0, x1])
                    v010, v011 = np.float32(src[c, z0, y1, x0]), np.float32(src[c, z0, y1, x1])
                    v100, v101 = np.float32(src[c, z1, y0, x0]), np.float32(src[c, z1, y0, x1])
                    v110, v111 = np.float32(src[c, z1, y1, x0]), np.float32(src[c, z1, y1, x1])
                    a = v000 + (v001 - v000) * fx
                    b = v010 + (v011 - v010) * fx
                    d = v100 + (v101 - v100) * fx
                    e = v110 + (v111 - v110) * fx
                    near = a + (b - a) * fy
                    far = d + (e - d) * fy
                    out[c, k, j, i] = near + (far - near) * fz


@numba.njit(cache=True, nogil=True)
def _warp_nearest_kernel(src, matrix, out):
    n_c, size_z, size_y, size_x = src.shape
    n_z, n_y, n_x = out.shape[1], out.shape[2], out.shape[3]
    projective = matrix[3, 0] != 0.0 or matrix[3, 1] != 0.0 or matrix[3, 2] != 0.0
    for k in range(n_z):
        for j in range(n_y):
            bz, by, bx, bw = _row_start(matrix, k, j)
            for i in range(n_x):
                sz, sy, sx = bz + matrix[0, 2] * i, by + matrix[1, 2] * i, bx + matrix[2, 2] * i
                if projective:
                    inverse_w = 1.0 / (bw + matrix[3, 2] * i)
                    sz, sy, sx = sz * inverse_w, sy * inverse_w, sx * inverse_w
                z, y, x = math.floor(sz + 0.5), math.floor(sy + 0.5), math.floor(sx + 0.5)
                if z < 0 or y < 0 or x < 0 or z >= size_z or y >= size_y or x >= size_x:
                    continue
                for c in range(n_c):
                    out[c, k, j, i] = src[c, z, y, x]


def _memory_friendly(src: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder the source axes so that the output's fastest axis walks contiguous memory.

    After axis swaps (e.g. patch x along volume z), gathering along a strided source
    axis is several times slower than a transposed copy of the source box.
    """
    order = []
    for out_axis in (2, 1, 0):  # the source axis each output axis mostly moves along
        weights = np.abs(matrix[:3, out_axis]).astype(float)
        weights[order] = -1
        order.append(int(np.argmax(weights)))
    order = order[::-1]
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    if order == [0, 1, 2]:
        return np.ascontiguousarray(src), matrix
    permutation = np.eye(4)[order + [3]]
    return np.ascontiguousarray(src.transpose([0] + [a + 1 for a in order])), permutation @ matrix


def warp_linear(src: np.ndarray, matrix: np.ndarray, out_shape: Sequence[int],
                fill: float = 0.0) -> np.ndarray:
    """Linear interpolation of ``src`` (c, z, y, x) of any dtype at ``matrix @ (k, j, i, 1)``.

    Returns float32 (c, *out_shape); points outside ``src`` get ``fill``.
    """
    src, matrix = _memory_friendly(src, matrix)
    out = np.full((src.shape[0],) + tuple(out_shape), fill, np.float32)
    _warp_linear_kernel(src, matrix, out)
    return out


def warp_nearest(src: np.ndarray, matrix: np.ndarray, out_shape: Sequence[int],
                 fill=0) -> np.ndarray:
    """Nearest-neighbour sampling of ``src`` (c, z, y, x), any dtype (e.g. label ids)."""
    src, matrix = _memory_friendly(src, matrix)
    out = np.full((src.shape[0],) + tuple(out_shape), fill, src.dtype)
    _warp_nearest_kernel(src, matrix, out)
    return out


# --- matrices -----------------------------------------------------------------------------
def translation(offset: Sequence[float]) -> np.ndarray:
    """4x4 matrix adding ``offset`` (z, y, x)."""
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def scaling(factors: Sequence[float]) -> np.ndarray:
    """4x4 matrix scaling each axis (z, y, x) by ``factors``."""
    return np.diag(list(factors) + [1.0])


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a homogeneous 4x4 matrix to points (n, 3); returns (n, 3)."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ matrix.T
    return homogeneous[:, :3] / homogeneous[:, 3:]


def box_corners(shape: Sequence[int]) -> np.ndarray:
    """The 8 corner indices (8, 3) of a grid of ``shape`` (z, y, x)."""
    return np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing='ij')).reshape(3, -1).T


def is_integer_translation(matrix: np.ndarray) -> bool:
    """Whether ``matrix`` only shifts by whole voxels (a plain crop)."""
    return (np.allclose(matrix[:3, :3], np.eye(3)) and np.allclose(matrix[3], [0, 0, 0, 1])
            and np.allclose(matrix[:3, 3], np.round(matrix[:3, 3])))


# --- random warps -------------------------------------------------------------------------
@dataclass(frozen=True)
class WarpParams:
    """Options of random warps (``warp_args`` of ``getbatch``; ELEKTRONN2 names first).

    Args:
        warp_amount: scales the rotation angles, distortion and perspective (0: only
            flips and axis swaps).
        lock_z: rotate, distort and swap only within the (y, x) plane.
        sample_aniso: patches keep the data's z anisotropy (else z is resampled to
            isotropic voxels, i.e. interpolated between slices).
        no_x_flip: neither flip x nor swap axes.
        perspective: add a small random perspective (projective) distortion.
        flips: random reflections of each axis.
        swaps: random axis permutations (y<->x; all axes unless lock_z, where anisotropy
            is respected through ``aniso_factor``).
        max_rotation: largest in-plane rotation angle in degrees (times warp_amount).
        max_tilt: largest out-of-plane rotation angle in degrees (lock_z=False).
        distortion: largest shear/stretch matrix entry (times warp_amount).
        elastic: largest displacement (voxels) of a smooth random elastic deformation
            added to each warp (0: none); in-plane only with lock_z.
        elastic_spacing: distance (voxels) between the control points of the elastic
            deformation; smaller gives more local bends.
    """
    warp_amount: float = 1.0
    lock_z: bool = True
    sample_aniso: bool = True
    no_x_flip: bool = False
    perspective: bool = False
    flips: bool = True
    swaps: bool = True
    max_rotation: float = 180.0
    max_tilt: float = 15.0
    distortion: float = 0.1
    elastic: float = 0.0
    elastic_spacing: float = 24.0

    @classmethod
    def from_args(cls, warp_args: dict | WarpParams | None) -> WarpParams:
        """Build from a ``warp_args`` dict; unknown keys are a ConfigError."""
        if isinstance(warp_args, WarpParams):
            return warp_args
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(warp_args or {}) - set(names))
        if unknown:
            raise ConfigError(f"Unknown warp_args {unknown}; valid keys: {', '.join(names)}")
        return cls(**(warp_args or {}))


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` (radians) about a unit ``axis`` (z, y, x)."""
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def random_transform(rng: np.random.Generator, params: WarpParams, aniso_factor: float = 1.0,
                     planar: bool = False) -> np.ndarray:
    """A random 4x4 map from patch offsets (voxels, from the patch centre) to source offsets.

    Composed in physical units (z scaled by ``aniso_factor``) as
    rotation @ distortion @ flip @ swap, plus an optional perspective row.
    ``planar`` (2-D data) implies lock_z.
    """
    lock_z = params.lock_z or planar
    amount = params.warp_amount
    in_plane = [1, 2]
    moving = in_plane if lock_z else [0, 1, 2]
    swap = np.eye(3)
    if params.swaps and not params.no_x_flip:
        swap = swap[np.concatenate([[0] if lock_z else [], rng.permutation(moving)]).astype(int)]
    flip = np.eye(3)
    if params.flips:
        signs = rng.choice([-1.0, 1.0], size=3)
        if params.no_x_flip:
            signs[2] = 1.0
        flip = np.diag(signs)
    linear = flip @ swap
    perspective_row = np.zeros(3)
    if amount:
        gamma = math.radians(params.max_rotation) * amount * rng.uniform(-1, 1)
        rotation = _rotation_about(np.array([1.0, 0, 0]), gamma)
        if not lock_z:
            phi = rng.uniform(0, 2 * math.pi)
            tilt_axis = np.array([0.0, math.sin(phi), math.cos(phi)])
            tilt = math.radians(params.max_tilt) * amount * rng.uniform(-1, 1)
            rotation = rotation @ _rotation_about(tilt_axis, tilt)
        distortion = rng.uniform(-1, 1, (3, 3)) * params.distortion * amount
        if lock_z:
            distortion[0, :] = distortion[:, 0] = 0
        linear = rotation @ (np.eye(3) + distortion) @ linear
        if params.perspective:
            perspective_row[moving] = rng.uniform(-1, 1, len(moving)) * 1e-3 * amount
    physical = np.eye(4)
    physical[:3, :3] = linear
    physical[3, :3] = perspective_row
    to_physical = scaling([aniso_factor if params.sample_aniso else 1.0, 1, 1])
    return scaling([1.0 / aniso_factor, 1, 1]) @ physical @ to_physical


@dataclass(frozen=True)
class ElasticField:
    """A smooth displacement (z, y, x voxels) of patch coordinates.

    Random control vectors on a grid ``spacing`` voxels apart (z: ``spacing /
    aniso_factor``), interpolated by cubic splines; every component stays within
    +-``amplitude``. ``control``: (3, n_z, n_y, n_x).
    """
    control: np.ndarray
    spacing: np.ndarray  # (3,) control point distance per axis (z, y, x)
    amplitude: float

    def at(self, points: np.ndarray) -> np.ndarray:
        """Displacements (n, 3) at patch coordinates ``points`` (n, 3)."""
        grid = (np.asarray(points, float) / self.spacing).T
        varying = [a for a in range(3) if self.control.shape[a + 1] > 1]  # 2-D: skip z
        moved = np.zeros((len(grid[0]), 3))
        for axis, component in enumerate(self.control):
            if component.any():
                moved[:, axis] = ndimage.map_coordinates(component.squeeze(), grid[varying],
                                                         order=3, mode='nearest')
        return np.clip(moved, -self.amplitude, self.amplitude)


def random_elastic_field(rng: np.random.Generator, params: WarpParams,
                         patch_shape: Sequence[int], aniso_factor: float = 1.0,
                         planar: bool = False) -> ElasticField | None:
    """A random :class:`ElasticField` over a patch (z, y, x), or None if ``params.elastic`` is 0.

    ``planar`` (2-D data) implies lock_z: no displacement along z.
    """
    if not params.elastic:
        return None
    spacing = np.array([params.elastic_spacing / aniso_factor, params.elastic_spacing,
                        params.elastic_spacing])
    n_points = [int(math.ceil((size - 1) / step)) + 1 for size, step in zip(patch_shape, spacing)]
    control = rng.uniform(-params.elastic, params.elastic, [3] + n_points)
    if params.lock_z or planar:
        control[0] = 0
    return ElasticField(control, spacing, float(params.elastic))


def grid_points(shape: Sequence[int]) -> np.ndarray:
    """All indices (n, 3) of a grid of ``shape`` (z, y, x), in C order."""
    return np.indices(shape).reshape(3, -1).T.astype(float)


def warped_points(matrix: np.ndarray, field: ElasticField | None, shape: Sequence[int],
                  grid: np.ndarray | None = None) -> np.ndarray:
    """Source coordinates (n, 3) of all indices of a grid of ``shape`` (C order).

    Index -> ``grid`` (4x4, to patch coordinates; default identity) -> displaced by
    ``field`` (if any) -> ``matrix`` (patch to source).
    """
    points = grid_points(shape)
    if grid is not None:
        points = map_points(grid, points)
    if field is not None:
        points = points + field.at(points)
    return map_points(matrix, points)


def extent_points(matrix: np.ndarray, field: ElasticField | None, shape: Sequence[int],
                  grid: np.ndarray | None = None) -> np.ndarray:
    """Points (n, 3) whose bounding box is that of :func:`warped_points`: the 8 mapped
    corners of an affine map, all points with a field."""
    if field is not None:
        return warped_points(matrix, field, shape, grid)
    return map_points(matrix if grid is None else matrix @ grid, box_corners(shape))


def sample_linear(src: np.ndarray, coords: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Linear interpolation of ``src`` (c, z, y, x) at ``coords`` (3, *shape); float32 (c, *shape)."""
    return np.stack([ndimage.map_coordinates(np.asarray(channel, np.float32), coords, order=1,
                                             mode='constant', cval=fill, prefilter=False)
                     for channel in src])


def sample_nearest(src: np.ndarray, coords: np.ndarray, fill=0) -> np.ndarray:
    """Nearest-neighbour values of ``src`` (c, z, y, x) at ``coords`` (3, *shape), ``src``'s dtype."""
    return np.stack([ndimage.map_coordinates(channel, coords, order=0, mode='constant', cval=fill,
                                             prefilter=False) for channel in src])


def patch_matrix(transform: np.ndarray, patch_shape: Sequence[int],
                 corner: Sequence[float]) -> np.ndarray:
    """Map patch indices to volume coordinates: ``transform`` about the patch centre.

    With the identity transform, index ``p`` maps to ``corner + p`` (a plain crop).
    """
    centre = (np.asarray(patch_shape, float) - 1) / 2
    return translation(np.asarray(corner, float) + centre) @ transform @ translation(-centre)


def grid_matrix(offsets: Sequence[float], strides: Sequence[int]) -> np.ndarray:
    """Map output indices ``i`` to patch coordinates ``offsets + strides * i``."""
    return translation(offsets) @ scaling(strides)


# --- grey values, noise, blur, erasing ---------------------------------------------------
def grey_augment(image: np.ndarray, channels: Sequence[int], rng: np.random.Generator,
                 strength: float = 0.15) -> np.ndarray:
    """Random contrast, brightness and gamma per channel of ``image`` (c, ...) in [0, 1].

    ``value -> clip(value * (1 + a) + b, 0, 1) ** gamma`` with a, b ~ U(-strength,
    strength) and gamma ~ 2**U(-1, 1). Returns a new array.
    """
    image = image.copy()
    for c in channels:
        contrast = 1 + rng.uniform(-strength, strength)
        brightness = rng.uniform(-strength, strength)
        gamma = 2.0 ** rng.uniform(-1, 1)
        channel = image[c]
        channel *= contrast
        channel += brightness
        np.clip(channel, 0, 1, out=channel)
        np.power(channel, gamma, out=channel)
    return image


def add_noise(image: np.ndarray, channels: Sequence[int], rng: np.random.Generator,
              max_sigma: float = 0.1) -> np.ndarray:
    """Add Gaussian noise of a random sigma in [0, max_sigma] to ``channels`` of (c, ...)."""
    image = image.copy()
    for c in channels:
        image[c] += rng.normal(0, rng.uniform(0, max_sigma), image[c].shape).astype(image.dtype)
    return image


def blur(image: np.ndarray, channels: Sequence[int], rng: np.random.Generator,
         max_sigma: float = 1.5, aniso_factor: float = 1.0) -> np.ndarray:
    """Gaussian blur with a random in-plane sigma in [0, max_sigma] (z: sigma/aniso)."""
    image = image.copy()
    for c in channels:
        sigma = rng.uniform(0, max_sigma)
        sigmas = [sigma] * image[c].ndim
        if image[c].ndim == 3:
            sigmas[0] = sigma / aniso_factor
        image[c] = ndimage.gaussian_filter(image[c], sigmas)
    return image


def random_erasing(image: np.ndarray, channels: Sequence[int], rng: np.random.Generator,
                   max_fraction: float = 0.4, fill: str = 'noise') -> np.ndarray:
    """Overwrite a random box (each side up to ``max_fraction`` of the patch) in ``channels``.

    ``fill``: 'noise' (uniform noise in [0, 1]) or 'uniform' (one random value).
    """
    if fill not in ('noise', 'uniform'):
        raise ConfigError(f"random_erasing fill={fill!r} is invalid; use 'noise' or 'uniform'")
    image = image.copy()
    spatial = image.shape[1:]
    sides = [max(1, int(rng.uniform(0.1, max_fraction) * s)) for s in spatial]
    starts = [int(rng.integers(0, s - side + 1)) for s, side in zip(spatial, sides)]
    box = tuple(slice(a, a + side) for a, side in zip(starts, sides))
    for c in channels:
        region = image[c][box]
        region[...] = (rng.uniform(0, 1, region.shape) if fill == 'noise'
                       else rng.uniform(0, 1))
    return image
