"""ELEKTRONN2's ``elektronn2.data.transformations``: homogeneous 4x4 matrices, random
warps and warped patches, under their original names.

Conventions as in ELEKTRONN2: a matrix ``M`` acts on homogeneous voxel coordinates
``(z, y, x, 1)`` in array order and maps *source* (volume) coordinates to
*destination* (patch) coordinates; patches are sampled through its inverse. Images
``(f, z, y, x)`` are interpolated linearly and discrete targets by nearest neighbour,
with the kernels of :mod:`elektronn2.data.augmentation`; random warps are
:func:`elektronn2.data.augmentation.random_transform` (as in ``BatchCreatorImage``).
``rng`` arguments take a ``np.random.RandomState`` or a ``np.random.Generator``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numba
import numpy as np
from scipy import ndimage

from ..errors import ConfigError, ShapeError
from . import augmentation as aug

__all__ = ['map_coordinates_nearest', 'map_coordinates_linear', 'map_coordinates_max_kernel',
           'identity', 'translate', 'rotate_z', 'rotate_y', 'rotate_x', 'scale_inv', 'scale',
           'chain_matrices', 'get_euler_angles', 'get_rotmat_from_direc', 'get_random_rotmat',
           'get_random_flipmat', 'get_random_swapmat', 'get_random_warpmat', 'make_dest_coords',
           'make_dest_corners', 'WarpingOOBError', 'Transform', 'trafo_from_array', 'warp_slice',
           'get_tracing_slice', 'get_warped_slice', 'xyz2zxy']

Rng = np.random.RandomState | np.random.Generator


def _rng(rng: Rng | None) -> Rng:
    return np.random.RandomState() if rng is None else rng


def _integer(rng: Rng, low: int, high: int) -> int:
    """A random int in [low, high) from either kind of generator."""
    draw = rng.integers if isinstance(rng, np.random.Generator) else rng.randint
    return int(draw(low, high))


# --- sampling at coordinate arrays --------------------------------------------------------
def _local(coords: np.ndarray, lo: Sequence[float]) -> np.ndarray:
    """Source coordinates (..., 3) relative to the corner ``lo`` of the array they index."""
    return np.asarray(coords, np.float64)[..., :3] - np.asarray(lo, np.float64)[:3]


def map_coordinates_nearest(src: np.ndarray, coords: np.ndarray, lo: np.ndarray,
                            dest: np.ndarray) -> np.ndarray:
    """``dest[...] = src`` at the rounded coordinates ``coords[..., :3] - lo``.

    src (z, y, x); coords (..., 3 or 4); dest (...) is written and returned.
    Coordinates beyond ``src`` take its edge values.
    """
    src = np.asarray(src)
    local = _local(coords, lo)
    index = tuple(np.clip(np.rint(local[..., a]).astype(np.intp), 0, src.shape[a] - 1)
                  for a in range(3))
    dest[...] = src[index]
    return dest


def map_coordinates_linear(src: np.ndarray, coords: np.ndarray, lo: np.ndarray,
                           dest: np.ndarray) -> np.ndarray:
    """``dest[...] = src`` trilinearly interpolated at ``coords[..., :3] - lo``.

    src (z, y, x); coords (..., 3 or 4); dest (...) is written and returned.
    Coordinates beyond ``src`` take its edge values.
    """
    local = np.moveaxis(_local(coords, lo), -1, 0)
    dest[...] = ndimage.map_coordinates(np.asarray(src, np.float32), local, order=1, mode='nearest')
    return dest


@numba.njit(cache=True, nogil=True)
def _max_kernel(src, coords, k, kz, out):
    size = src.shape
    for i in range(coords.shape[0]):
        box = np.empty(6, np.int64)
        for a in range(3):
            half = kz if a == 0 else k
            low = math.floor(min(max(coords[i, a] - half, 0.0), size[a]) + 0.5)
            high = math.floor(min(max(coords[i, a] + half, 0.0), size[a]) + 0.5)
            low = min(low, size[a] - 1)
            box[2 * a], box[2 * a + 1] = low, max(high, low + 1)
        out[i] = src[box[0]:box[1], box[2]:box[3], box[4]:box[5]].max()


def map_coordinates_max_kernel(src: np.ndarray, coords: np.ndarray, lo: np.ndarray, k: float,
                               dest: np.ndarray) -> np.ndarray:
    """``dest[...]`` = the maximum of ``src`` in a box around each ``coords[..., :3] - lo``:
    +-k voxels in y and x, +-min(0.5, k/2) in z (at least one voxel).

    src (z, y, x); coords (z', y', x', 3 or 4); dest (z', y', x') is written and returned.
    For thin structures (e.g. skeleton targets) that linear interpolation would blur.
    """
    local = np.ascontiguousarray(_local(coords, lo).reshape(-1, 3))
    out = np.empty(len(local), np.float32)
    _max_kernel(np.ascontiguousarray(src, np.float32), local, float(k), min(0.5, float(k) / 2), out)
    dest[...] = out.reshape(dest.shape)
    return dest


# --- matrices -------------------------------------------------------------------------------
def identity() -> np.ndarray:
    """4x4 float32 identity."""
    return np.eye(4, dtype=np.float32)


def translate(dz: float, dy: float, dx: float) -> np.ndarray:
    """4x4 float32 translation by (dz, dy, dx)."""
    return aug.translation((dz, dy, dx)).astype(np.float32)


def _rotation(axis: Sequence[float], a: float) -> np.ndarray:
    matrix = np.eye(4, dtype=np.float32)
    matrix[:3, :3] = aug._rotation_about(np.asarray(axis, float), a)
    return matrix


def rotate_z(a: float) -> np.ndarray:
    """4x4 float32 rotation by ``a`` (radians) in the (y, x) plane, about the z axis."""
    return _rotation((1, 0, 0), a)


def rotate_y(a: float) -> np.ndarray:
    """4x4 float32 rotation by ``a`` in the (z, y) plane (axes 0 and 1)."""
    return _rotation((0, 0, 1), a)


def rotate_x(a: float) -> np.ndarray:
    """4x4 float32 rotation by ``a`` in the (z, x) plane (axes 0 and 2)."""
    return _rotation((0, 1, 0), a)


def scale_inv(mz: float, my: float, mx: float) -> np.ndarray:
    """4x4 float32 scaling by (1/mz, 1/my, 1/mx)."""
    return scale(1 / mz, 1 / my, 1 / mx)


def scale(mz: float, my: float, mx: float) -> np.ndarray:
    """4x4 float32 scaling by (mz, my, mx)."""
    return aug.scaling((mz, my, mx)).astype(np.float32)


def chain_matrices(mat_list: Sequence[np.ndarray]) -> np.ndarray:
    """The product ``mat_list[0] @ mat_list[1] @ ...`` (the last one acts first)."""
    product = identity()
    for matrix in mat_list:
        product = product @ matrix
    return product


def get_euler_angles(direc: Sequence[float], gamma: float) -> tuple[float, float, float]:
    """(phi, theta, gamma) of a unit direction (z, y, x): phi = atan2(x, y), theta = acos(z)."""
    direc = np.asarray(direc, float)
    if abs(np.linalg.norm(direc) - 1) >= 1e-3:
        raise ValueError(f"direc={direc.tolist()} must be a unit vector (norm "
                         f"{np.linalg.norm(direc):.4f})")
    return float(np.arctan2(direc[2], direc[1])), float(np.arccos(np.clip(direc[0], -1, 1))), gamma


def get_rotmat_from_direc(direc: Sequence[float], gamma: float | str | None = None,
                          rng: Rng | None = None) -> np.ndarray:
    """4x4 rotation that turns the unit direction ``direc`` (z, y, x) onto the z axis,
    then rotates by ``gamma`` about z (None: 0, 'rand': uniform in [0, 2 pi))."""
    if gamma is None:
        gamma = 0.0
    elif isinstance(gamma, str):
        if gamma != 'rand':
            raise ConfigError(f"gamma={gamma!r}; use an angle, None or 'rand'")
        gamma = _rng(rng).random() * 2 * np.pi
    phi, theta, gamma = get_euler_angles(direc, gamma)
    return chain_matrices([rotate_z(gamma), rotate_y(-theta), rotate_z(-phi)])


def get_random_rotmat(lock_z: bool = False, amount: float = 1.0, rng: Rng | None = None) -> np.ndarray:
    """Random 4x4 rotation: about z by up to 2 pi * amount; unless ``lock_z`` also a tilt of
    the z axis by asin(U) * amount towards a random in-plane direction."""
    rng = _rng(rng)
    gamma = rng.random() * 2 * np.pi * amount
    if lock_z:
        return rotate_z(gamma)
    phi = rng.random() * 2 * np.pi * amount
    theta = np.arcsin(rng.random()) * amount
    return chain_matrices([rotate_z(gamma), rotate_y(-theta), rotate_z(-phi)])


def get_random_flipmat(no_x_flip: bool = False, rng: Rng | None = None) -> np.ndarray:
    """Random 4x4 reflection: each of z, y, x flipped with probability 1/2 (x never with
    ``no_x_flip``)."""
    signs = np.where(_rng(rng).random(3) < 0.5, -1.0, 1.0)
    if no_x_flip:
        signs[2] = 1.0
    return np.diag(np.append(signs, 1.0)).astype(np.float32)


def get_random_swapmat(lock_z: bool = False, rng: Rng | None = None) -> np.ndarray:
    """Random 4x4 axis permutation: y <-> x or not (``lock_z``), else any order of z, y, x."""
    rng = _rng(rng)
    orders = [(0, 1, 2), (0, 2, 1)] if lock_z else [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0),
                                                    (2, 0, 1), (2, 1, 0)]
    order = orders[_integer(rng, 0, len(orders))]
    return np.eye(4, dtype=np.float32)[list(order) + [3]]


def get_random_warpmat(lock_z: bool = False, perspective: bool = False, amount: float = 1.0,
                       rng: Rng | None = None) -> np.ndarray:
    """Identity plus uniform noise in +-0.1 * amount on the linear and translation entries
    (none involving z with ``lock_z``); with ``perspective`` the bottom row gets small
    entries (5 % of that, at most 3e-3)."""
    perturbation = _rng(rng).uniform(-0.1 * amount, 0.1 * amount, (4, 4))
    perturbation[3, 3] = 0
    if lock_z:
        perturbation[0] = perturbation[:, 0] = 0
    if perspective:
        perturbation[3, :3] = np.clip(perturbation[3, :3] * 0.05, -3e-3, 3e-3)
    else:
        perturbation[3] = 0
    return (np.eye(4) + perturbation).astype(np.float32)


def make_dest_coords(sh: Sequence[int]) -> np.ndarray:
    """float32 (*sh, 4): the homogeneous index (z, y, x, 1) of every voxel of a (z, y, x) grid."""
    grids = np.meshgrid(*[np.arange(int(n)) for n in sh], indexing='ij')
    return np.stack(list(grids) + [np.ones(tuple(int(n) for n in sh))], axis=-1).astype(np.float32)


def make_dest_corners(sh: Sequence[int]) -> np.ndarray:
    """(8, 4): homogeneous indices of the corners of a (z, y, x) grid, z varying slowest."""
    return np.hstack([aug.box_corners(sh), np.ones((8, 1))])


# --- transforms and warped patches -----------------------------------------------------------
class WarpingOOBError(ValueError):
    """A warped patch (or its target) needs voxels outside the volume."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)


class Transform:
    """A patch's transform ``M`` (source -> patch coordinates) with the patch position in
    the source (``position_l``, z, y, x) and the anisotropy (z voxel size / in-plane)."""

    def __init__(self, M: np.ndarray, position_l: Sequence[float] | None = None,  # noqa: N803
                 aniso_factor: float = 2):
        self.M = np.asarray(M)
        self.M_inv = np.linalg.inv(self.M.astype(np.float64)).astype(np.float32)
        self.position_l = None if position_l is None else np.asarray(position_l, float)
        self.aniso_factor = aniso_factor
        self.is_projective = not np.allclose(self.M[3, :3], 0.0)

    def _require_affine(self) -> None:
        if self.is_projective:
            raise ValueError("This transform is projective; its linear part alone does not map "
                             "vectors (use homogeneous coordinates)")

    @property
    def M_lin(self) -> np.ndarray:  # noqa: N802
        """The 3x3 linear part of M (affine transforms only)."""
        self._require_affine()
        return self.M[:3, :3]

    @property
    def M_lin_inv(self) -> np.ndarray:  # noqa: N802
        """The 3x3 linear part of M's inverse (affine transforms only)."""
        self._require_affine()
        return self.M_inv[:3, :3]

    def to_array(self) -> np.ndarray:
        """(20,): M row by row, position_l (3), aniso_factor (see :func:`trafo_from_array`)."""
        return np.hstack([self.M.ravel(), self.position_l, self.aniso_factor])

    def lab_coord2cnn_coord(self, vec_l: np.ndarray) -> np.ndarray:
        """Vectors (3,) or (n, 3) from source (lab) to patch (CNN) orientation."""
        vec_l = np.asarray(vec_l)
        return self.M_lin @ vec_l if vec_l.ndim == 1 else vec_l @ self.M_lin.T

    def cnn_coord2lab_coord(self, vec_c: np.ndarray, add_offset_l: bool = False) -> np.ndarray:
        """Vectors (3,) or (n, 3) from patch to source orientation (plus position_l if
        ``add_offset_l``)."""
        vec_c = np.asarray(vec_c)
        vec_l = self.M_lin_inv @ vec_c if vec_c.ndim == 1 else vec_c @ self.M_lin_inv.T
        return vec_l + self.position_l if add_offset_l else vec_l

    def cnn_pred2lab_position(self, prediction_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A predicted step (patch orientation) -> (new position in the source, unit step
        direction in isotropic source units)."""
        step_l = self.cnn_coord2lab_coord(prediction_c)
        direction = step_l * [self.aniso_factor, 1, 1]
        norm = np.linalg.norm(direction)
        if norm == 0:
            raise ValueError("The predicted step is zero; it has no direction")
        return step_l + self.position_l, direction / norm


def trafo_from_array(a: np.ndarray) -> Transform:
    """The :class:`Transform` of :meth:`Transform.to_array`'s (20,) array."""
    a = np.asarray(a)
    return Transform(a[:16].reshape(4, 4), a[16:19], a[19])


def _source_box(matrix: np.ndarray, patch_shape: Sequence[int], shape: Sequence[int],
                what: str) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of the source voxels that ``matrix`` (patch index -> source coordinate)
    reads; WarpingOOBError if the patch leaves the source."""
    points = aug.map_points(matrix, aug.box_corners(patch_shape))
    low, high = points.min(0), points.max(0)
    if np.any(low < -aug.COORD_TOLERANCE) or np.any(high > np.subtract(shape, 1) + aug.COORD_TOLERANCE):
        raise WarpingOOBError(f"The warped {what} patch needs source coordinates "
                              f"{np.round(low, 2).tolist()}..{np.round(high, 2).tolist()} (z,y,x), "
                              f"outside the {what} of shape {tuple(shape)}")
    lo = np.maximum(np.floor(low + aug.COORD_TOLERANCE).astype(int), 0)
    hi = np.minimum(np.floor(high + aug.COORD_TOLERANCE).astype(int) + 2, shape)
    return lo, hi


def _volume_shape(volume, name: str) -> tuple[int, tuple[int, ...]]:
    """(channels, (z, y, x)) of an array-like (f, z, y, x) or (z, y, x) (e.g. a KnossosArray,
    which is read only where a patch needs it)."""
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) not in (3, 4):
        raise ShapeError(f"{name} of shape {shape} must be (f, z, y, x) or (z, y, x)")
    return (1, shape) if len(shape) == 3 else (shape[0], shape[1:])


def _read_box(volume, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The box [lo, hi) (z, y, x) of every channel, as an array (f, z, y, x)."""
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    if len(volume.shape) == 3:
        return np.asarray(volume[box])[None]
    return np.asarray(volume[(slice(None),) + box])


def _centring(outer: Sequence[int], inner: Sequence[int], what: str) -> np.ndarray:
    difference = np.subtract(outer, inner)
    if np.any(difference % 2) or np.any(difference < 0):
        raise ValueError(f"{what}: {tuple(inner)} must be centred in {tuple(outer)} (not larger, "
                         f"even size difference per axis)")
    return difference // 2


def warp_slice(img: np.ndarray, ps: Sequence[int], M: np.ndarray,  # noqa: N803
               target: np.ndarray | None = None, target_ps: Sequence[int] | None = None,
               target_vec_ix: Sequence[Sequence[int]] | None = None,
               target_discrete_ix: Sequence[int] | None = None, last_ch_max_interp: bool = False,
               ksize: float = 0.5) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut the patch ``M`` maps onto the grid ``ps`` (z, y, x) out of ``img``, and the
    centred target patch out of ``target``.

    Args:
        img: (f, z, y, x) (or (z, y, x)); interpolated linearly.
        ps: patch shape (z, y, x).
        M: 4x4 source -> patch coordinates (may be projective).
        target: (t, z', y', x') (or (z', y', x')) centred in ``img``.
        target_ps: target patch shape, centred in ``ps``.
        target_vec_ix: triples of target channels holding vectors (z, y, x); they are
            rotated with M's linear part (affine M only).
        target_discrete_ix: target channels sampled by nearest neighbour (default: all);
            the others are interpolated linearly.
        last_ch_max_interp: with ``ksize`` > 0.5, the last image channel is sampled by
            :func:`map_coordinates_max_kernel` of size ``ksize``.
    Returns:
        float32 image patch (f, *ps) and target patch (t, *target_ps) or None.
    Raises:
        WarpingOOBError: if either patch needs voxels outside its volume.
    """
    n_f, shape = _volume_shape(img, 'img')
    ps = tuple(int(p) for p in ps)
    inverse = np.linalg.inv(np.asarray(M, np.float64))
    lo, hi = _source_box(inverse, ps, shape, 'image')
    box = _read_box(img, lo, hi)
    matrix = aug.translation(-lo) @ inverse
    n_linear = n_f - 1 if last_ch_max_interp and ksize > 0.5 else n_f
    img_new = np.empty((n_f,) + ps, np.float32)
    img_new[:n_linear] = aug.warp_linear(box[:n_linear], matrix, ps)
    if n_linear < n_f:
        coords = aug.map_points(matrix, make_dest_coords(ps).reshape(-1, 4)[:, :3]).reshape(ps + (3,))
        map_coordinates_max_kernel(box[-1], coords, np.zeros(3), ksize, img_new[-1])
    if target is None:
        return img_new, None
    if target_ps is None:
        raise ConfigError("warp_slice with a target needs target_ps, the target patch shape")
    n_t, target_shape = _volume_shape(target, 'target')
    target_ps = tuple(int(p) for p in target_ps)
    offset = _centring(shape, target_shape, 'target volume in image volume')
    patch_offset = _centring(ps, target_ps, 'target patch in image patch')
    matrix = aug.translation(-offset) @ inverse @ aug.translation(patch_offset)
    lo, hi = _source_box(matrix, target_ps, target_shape, 'target')
    box = _read_box(target, lo, hi)
    matrix = aug.translation(-lo) @ matrix
    discrete = np.array([target_discrete_ix is None or c in target_discrete_ix for c in range(n_t)])
    target_new = np.empty((n_t,) + target_ps, np.float32)
    if discrete.any():
        target_new[discrete] = aug.warp_nearest(box[discrete], matrix, target_ps)
    if not discrete.all():
        target_new[~discrete] = aug.warp_linear(box[~discrete], matrix, target_ps)
    if target_vec_ix is not None:
        linear = Transform(np.asarray(M)).M_lin
        for ix in target_vec_ix:
            ix = list(ix)
            target_new[ix] = np.tensordot(linear, target_new[ix], axes=([1], [0]))
    return img_new, target_new


def get_tracing_slice(img: np.ndarray, ps: Sequence[int], pos: Sequence[float], z_shift: float = 0,
                      aniso_factor: float = 2, sample_aniso: bool = True, gamma: float | str = 0,
                      scale_factor: float = 1.0, direction_iso: Sequence[float] | None = None,
                      target: np.ndarray | None = None, target_ps: Sequence[int] | None = None,
                      target_vec_ix: Sequence[Sequence[int]] | None = None,
                      target_discrete_ix: Sequence[int] | None = None, rng: Rng | None = None,
                      last_ch_max_interp: bool = False
                      ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A patch centred on ``pos`` (z, y, x; ``z_shift`` more slices ahead) and oriented
    along ``direction_iso`` (unit vector in isotropic units, default z), rotated by
    ``gamma`` about it and magnified by ``scale_factor``.

    Returns (image patch, target patch or None, M) as :func:`warp_slice`.
    """
    centre = np.asarray(ps, float) / 2
    centre[0] -= z_shift
    rotation = get_rotmat_from_direc((1.0, 0.0, 0.0) if direction_iso is None else direction_iso,
                                     gamma, rng)
    M = chain_matrices([translate(*centre), scale(scale_factor, scale_factor, scale_factor),  # noqa: N806
                        scale_inv(aniso_factor, 1, 1) if sample_aniso else identity(), rotation,
                        scale(aniso_factor, 1, 1), translate(-pos[0], -pos[1], -pos[2])])
    img_new, target_new = warp_slice(img, ps, M, target=target, target_ps=target_ps,
                                     target_vec_ix=target_vec_ix,
                                     target_discrete_ix=target_discrete_ix,
                                     last_ch_max_interp=last_ch_max_interp,
                                     ksize=min(0.5, 0.5 / scale_factor))
    return img_new, target_new, M


def get_warped_slice(img: np.ndarray, ps: Sequence[int], aniso_factor: float = 2,
                     sample_aniso: bool = True, warp_amount: float = 1.0, lock_z: bool = True,
                     no_x_flip: bool = False, perspective: bool = False,
                     target: np.ndarray | None = None, target_ps: Sequence[int] | None = None,
                     target_vec_ix: Sequence[Sequence[int]] | None = None,
                     target_discrete_ix: Sequence[int] | None = None, rng: Rng | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """A randomly placed, randomly warped patch of ``img`` and the centred target patch.

    The unwarped patch (and target patch) lie inside their volumes; the warp (rotation,
    shear/stretch, flips, axis swaps; see
    :class:`~elektronn2.data.augmentation.WarpParams` for the options, which have these
    names) turns about the patch centre. 2-D ``ps`` (y, x) cut one z slice of a
    (f, z, y, x) volume and return (f, y, x) patches.

    Returns (image patch, target patch or None) as :func:`warp_slice`.
    Raises:
        WarpingOOBError: if the warped patch leaves the volume (draw again).
    """
    rng = _rng(rng)
    planar = len(ps) == 2
    ps = np.array(((1,) if planar else ()) + tuple(ps), int)
    shape = np.array(_volume_shape(img, 'img')[1])
    lo, hi = np.zeros(3, int), shape - ps
    if target is not None:
        if target_ps is None:
            raise ConfigError("get_warped_slice with a target needs target_ps")
        target_shape = np.array(_volume_shape(target, 'target')[1])
        target_ps = np.array(((1,) if planar else ()) + tuple(target_ps), int)
        offset = _centring(shape, target_shape, 'target volume in image volume')
        patch_offset = _centring(ps, target_ps, 'target patch in image patch')
        lo = np.maximum(lo, offset - patch_offset)
        hi = np.minimum(hi, offset + target_shape - target_ps - patch_offset)
    if np.any(lo > hi):
        raise WarpingOOBError(f"A patch of {ps.tolist()} (target {target_ps}) does not fit into "
                              f"the image {shape.tolist()} (z,y,x)")
    corner = [_integer(rng, a, b + 1) for a, b in zip(lo, hi)]
    params = aug.WarpParams(warp_amount=warp_amount, lock_z=lock_z, sample_aniso=sample_aniso,
                            no_x_flip=no_x_flip, perspective=perspective)
    transform = aug.random_transform(rng, params, aniso_factor, planar=planar)
    M = np.linalg.inv(aug.patch_matrix(transform, ps, corner))  # noqa: N806
    img_new, target_new = warp_slice(img, ps, M, target=target, target_ps=target_ps,
                                     target_vec_ix=target_vec_ix,
                                     target_discrete_ix=target_discrete_ix)
    if planar:
        img_new = img_new[:, 0]
        target_new = None if target_new is None else target_new[:, 0]
    return img_new, target_new


def xyz2zxy(vol: np.ndarray) -> np.ndarray:
    """Axes (..., x, y, z) -> (..., z, x, y) (a view)."""
    return np.moveaxis(np.asarray(vol), -1, -3)
