"""BatchCreatorImage: random (warped) image/label patch pairs from lists of volumes.

Images are cut at the network's input patch size; targets are the labels under the
network's output voxels (the centre region given by the target node's offsets,
subsampled by its strides), cut with the same warp so both stay registered.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np

from ..errors import ConfigError, DataError
from ..neuromancer.footprint import Footprint, to_unit_float
from . import augmentation as aug
from . import non_geometric_augmentation as nga
from .derived import AxisOrder
from .labels import (
    affinity_components,
    affinity_edges,
    edges_known,
    ids2affinities,
    target_class_count,
)
from .labels import nhood_targets as make_nhood_targets
from .rng import ProcessRandom
from .sources import (
    HDF5Source,
    VolumeSource,
    channel_slabs,
    channel_volume_shape,
    first_nonfinite,
    open_source,
    read_channel_box,
    require_real,
)

logger = logging.getLogger('elektronn2')

BORDER_MODES = ('crop', 'mirror', '0-pad')
#: Warps that do not fit into a cube are redrawn this often before a plain crop is used.
MAX_WARP_TRIES = 20
#: Float volumes up to this size are checked for NaN/Inf (and fractional class labels)
#: when loaded; every patch is checked as it is cut.
SCAN_BYTES = 2 ** 28


def _local_grid(points: np.ndarray, lo: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Coordinates (3, *shape) relative to ``lo`` from points (n, 3) in C order."""
    return (points - np.asarray(lo)).T.reshape((3,) + tuple(shape))


@dataclass
class Cube:
    """One image volume with its (centred, possibly smaller) label volume."""
    image: VolumeSource
    labels: VolumeSource
    n_channels: int
    n_label_channels: int
    image_shape: tuple[int, int, int]
    label_shape: tuple[int, int, int]
    label_offset: np.ndarray  # (z, y, x) position of the label volume in the image

    @classmethod
    def from_sources(cls, image: VolumeSource, labels: VolumeSource) -> Cube:
        require_real(image.name, image.dtype, 'Image')
        require_real(labels.name, labels.dtype, 'Labels')
        n_channels, image_shape = channel_volume_shape(image)
        n_label_channels, label_shape = channel_volume_shape(labels)
        difference = np.subtract(image_shape, label_shape)
        if np.any(difference < 0) or np.any(difference % 2):
            raise DataError(f"Labels {labels.name} (z,y,x {label_shape}) cannot be centred in "
                            f"image {image.name} (z,y,x {image_shape}): labels must not be "
                            f"larger than the image and the size difference must be even per axis")
        return cls(image, labels, n_channels, n_label_channels, image_shape, label_shape,
                   difference // 2)


def _resolve(directory: str | None, entry, what: str, zxy: bool = True) -> VolumeSource:
    """A source from a d_files/l_files entry: (file, key), a path, an array or a source;
    ``zxy=False``: stored (x, y, z), read as (z, y, x)."""
    if isinstance(entry, (VolumeSource, np.ndarray)):
        source = open_source(entry)
    else:
        file, key = tuple(entry) if isinstance(entry, (tuple, list)) else (entry, None)
        path = Path(directory).expanduser() / file if directory else Path(file).expanduser()
        if not path.exists():
            raise DataError(f"{what} file {path} (key {key!r}) does not exist")
        source = open_source(path, key)
    return source if zxy else AxisOrder(source, 'xyz'[:min(source.ndim, 3)])


def _vector_channels(target_vec_ix, discrete: np.ndarray) -> list[tuple[int, int, int]]:
    """Checked ``target_vec_ix``: triples of distinct, continuous label channels."""
    triples = [tuple(int(c) for c in t) for t in (target_vec_ix or [])]
    for triple in triples:
        if len(triple) != 3 or len(set(triple)) != 3 or any(
                not 0 <= c < len(discrete) or discrete[c] for c in triple):
            raise ConfigError(f"target_vec_ix={target_vec_ix}: each entry must be 3 distinct "
                              f"label channels (z, y, x components) among the "
                              f"{len(discrete)} channel(s), none of them discrete")
    return triples


def _check_values(values: np.ndarray, source: VolumeSource, lo: Sequence[int],
                  integer: np.ndarray | None = None) -> None:
    """DataError naming ``source`` and the voxel if ``values`` -- a (c, z, y, x) box of it
    starting at spatial position ``lo`` -- holds NaN/Inf, or non-integers in the channels
    marked ``integer`` (class labels)."""
    bad = first_nonfinite(values)
    if bad is not None:
        raise DataError(f"{source.name} holds {values[bad]} at channel {bad[0]}, (z,y,x) "
                        f"{tuple(int(p) for p in np.add(lo, bad[1:]))}: NaN/Inf cannot be "
                        f"trained on; replace them (e.g. np.nan_to_num) in the file")
    if integer is None or not integer.any() or values.dtype.kind != 'f':
        return
    classes = values[integer]
    fractional = classes != np.round(classes)
    if fractional.any():
        c, *zyx = np.argwhere(fractional)[0]
        raise DataError(f"{source.name} holds the fractional class label {classes[(c, *zyx)]} at "
                        f"channel {np.flatnonzero(integer)[c]}, (z,y,x) "
                        f"{tuple(int(p) for p in np.add(lo, zyx))}: class labels must be "
                        f"integers; round the labels, or train regression on this channel "
                        f"(target_discrete_ix without it)")


def _scan(source: VolumeSource, integer: np.ndarray | None = None) -> None:
    """:func:`_check_values` on a whole float volume that is at most SCAN_BYTES large."""
    if source.dtype.kind == 'f' and np.prod(source.shape) * source.dtype.itemsize <= SCAN_BYTES:
        for z, slab in channel_slabs(source):
            _check_values(slab, source, (z, 0, 0), integer)


def _lazy_label_mask(labels: VolumeSource, n_class: int) -> np.ndarray:
    """(2, n_class) int16: classes labelled in a cube / known to be absent from it.

    Read from a dataset 'll_mask' in the labels' HDF5 file (ELEKTRONN2's lazy labels);
    default: all classes labelled, none known absent.
    """
    default = np.stack([np.ones(n_class), np.zeros(n_class)]).astype(np.int16)
    if not isinstance(labels, HDF5Source):
        return default
    with h5py.File(labels.path, 'r') as f:
        if 'll_mask' not in f:
            return default
        mask = np.asarray(f['ll_mask'], np.int16)
    if mask.shape != (2, n_class):
        raise DataError(f"{labels.path}:ll_mask has shape {mask.shape}; it must be (2, {n_class}): "
                        f"row 0 = classes labelled, row 1 = classes known to be absent")
    return mask


@dataclass(frozen=True)
class NonGeometric:
    """Probabilities (and arguments) of the non-geometric augmentations of a batch."""
    blur_noise: float = 0.0
    blurry_blobs: float = 0.0
    blurry_blobs_args: dict | None = None
    noisy_erasing: float = 0.0
    noisy_erasing_args: dict | None = None
    uniform_erasing: float = 0.0
    uniform_erasing_args: dict | None = None

    def blob_augmentations(self) -> list[tuple[float, Callable[..., np.ndarray], dict]]:
        """(probability, function, keyword arguments) of each blob augmentation in use."""
        table = [(self.blurry_blobs, nga.blurry_blobs, self.blurry_blobs_args,
                  {'diffuseness': None}),
                 (self.noisy_erasing, nga.noisy_random_erasing, self.noisy_erasing_args, {}),
                 (self.uniform_erasing, nga.uniform_random_erasing, self.uniform_erasing_args,
                  {'value': 0.0})]
        return [(p, fn, {**default, **(args or {})}) for p, fn, args, default in table if p > 0]


class BatchCreatorImage:
    """Random training patches from image volumes and their label volumes.

    Args:
        input_node, target_node: the network's input and target nodes; they give the
            patch size, axis tags, output offsets and strides, and (from the
            prediction) the number of classes.
        d_path, l_path: directories that the file names in d_files / l_files are in.
        d_files, l_files: one entry per cube: ``(file, key)`` (HDF5, zarr with key), a
            path (zarr store, .npy, KNOSSOS directory), a numpy array or a VolumeSource.
            Volumes are (z,y,x) or (c,z,y,x); label volumes may be smaller (centred).
        cube_prios: sampling weights of the training cubes (default: label volume size).
        valid_cubes: indices of cubes held out for ``source='valid'``.
        border_mode: 'crop': patches lie inside the image; 'mirror' / '0-pad': any
            output region inside the labels, the image reflected / zero-padded.
        aniso_factor: z voxel size / in-plane voxel size, used by warping.
        target_vec_ix: triples of label channels that hold vectors (their z, y, x
            components, e.g. directions): warps rotate them with the patch.
        target_discrete_ix: label channels that are class labels (nearest-neighbour
            sampling, int16 targets). Default: all when the prediction has classes or
            the target node an integer dtype, else none (regression, float32).
        h5stream: accepted for ELEKTRONN2 scripts; volumes are always read lazily, box by
            box (HDF5 files are never loaded whole).
        zxy: False for files whose spatial axes are stored (x, y, z) (ELEKTRONN2's
            flag): they are read as (z, y, x) through :class:`~.derived.AxisOrder`.
        seed: seed of the random generator (None: fresh entropy); worker processes
            get their own streams (see :class:`~elektronn2.data.rng.ProcessRandom`).
    """

    def __init__(self, input_node, target_node=None, d_path: str | None = None,
                 l_path: str | None = None, d_files: Sequence | None = None,
                 l_files: Sequence | None = None, cube_prios: Sequence[float] | None = None,
                 valid_cubes: Sequence[int] | None = None, border_mode: str = 'crop',
                 aniso_factor: float = 2, target_vec_ix: Sequence[Sequence[int]] | None = None,
                 target_discrete_ix: Sequence[int] | None = None, h5stream: bool = False,
                 zxy: bool = True, seed: int | None = None):
        if target_node is None:
            raise ConfigError("BatchCreatorImage needs the target node: its shape gives the "
                              "output grid that labels are sampled on")
        if not d_files or not l_files or len(d_files) != len(l_files):
            raise ConfigError(f"d_files and l_files must be non-empty lists of equal length "
                              f"(one entry per cube), got {len(d_files or [])} and "
                              f"{len(l_files or [])}")
        if border_mode not in BORDER_MODES:
            raise ConfigError(f"border_mode={border_mode!r} is invalid; use one of {BORDER_MODES}")
        self.geometry = Footprint.between(input_node, target_node)
        self.border_mode = border_mode
        self.aniso_factor = float(aniso_factor)
        self.n_class = target_class_count(target_node)
        self.target_n_f = target_node.shape['f'] if 'f' in target_node.shape.tags else None
        self.target_dtype = np.dtype(getattr(target_node, 'dtype', None) or 'float32')
        self.cubes = [Cube.from_sources(_resolve(d_path, image, 'Image', zxy),
                                        _resolve(l_path, labels, 'Label', zxy))
                      for image, labels in zip(d_files, l_files)]
        self._check_channels(input_node)
        n_label_channels = self.cubes[0].n_label_channels
        if target_discrete_ix is None:
            integer_target = np.dtype(getattr(target_node, 'dtype', 'float32')).kind in 'iu'
            discrete = self.n_class is not None or integer_target
            target_discrete_ix = range(n_label_channels) if discrete else ()
        if any(not 0 <= c < n_label_channels for c in target_discrete_ix):
            raise ConfigError(f"target_discrete_ix={list(target_discrete_ix)} must index the "
                              f"{n_label_channels} label channel(s)")
        self.discrete = np.array([c in target_discrete_ix for c in range(n_label_channels)])
        self.vector_channels = _vector_channels(target_vec_ix, self.discrete)
        self.valid_cubes = sorted(set(valid_cubes or ()))
        if any(not 0 <= i < len(self.cubes) for i in self.valid_cubes):
            raise ConfigError(f"valid_cubes={list(valid_cubes)} must index the {len(self.cubes)} "
                              f"cubes of d_files (0..{len(self.cubes) - 1})")
        self.train_cubes = [i for i in range(len(self.cubes)) if i not in self.valid_cubes]
        if not self.train_cubes:
            raise ConfigError("All cubes are in valid_cubes; no cube is left for training")
        self.train_weights = self._sampling_weights(cube_prios)
        for i, cube in enumerate(self.cubes):
            self._check_patch_fits(i, cube)
            _scan(cube.image)
            _scan(cube.labels, self.discrete)
        self.ll_masks = [_lazy_label_mask(cube.labels, self.n_class or n_label_channels)
                         for cube in self.cubes]
        self.n_warped = self.n_warp_fallbacks = 0
        self._random = ProcessRandom(seed)
        logger.info("%r", self)

    # --- construction checks ------------------------------------------------------------
    def _check_channels(self, input_node) -> None:
        first = self.cubes[0]
        input_f = input_node.shape['f'] if 'f' in input_node.shape.tags else None
        for cube in self.cubes:
            if input_f is not None and cube.n_channels != input_f:
                raise DataError(f"Image {cube.image.name} has {cube.n_channels} channel(s), but "
                                f"the input node {input_node.name!r} expects {input_f}")
            if cube.n_label_channels != first.n_label_channels:
                raise DataError(f"Labels {cube.labels.name} have {cube.n_label_channels} "
                                f"channel(s), {first.labels.name} has {first.n_label_channels}; "
                                f"all label volumes need the same number")

    def _sampling_weights(self, cube_prios) -> np.ndarray:
        if cube_prios is None:
            weights = [np.prod(self.cubes[i].label_shape) for i in self.train_cubes]
        elif len(cube_prios) == len(self.cubes):
            weights = [cube_prios[i] for i in self.train_cubes]
        elif len(cube_prios) == len(self.train_cubes):
            weights = list(cube_prios)
        else:
            raise ConfigError(f"cube_prios has {len(cube_prios)} entries; give one per cube "
                              f"({len(self.cubes)}) or per training cube ({len(self.train_cubes)})")
        weights = np.asarray(weights, float)
        if np.any(weights < 0) or weights.sum() <= 0:
            raise ConfigError(f"cube_prios must be non-negative with a positive sum, "
                              f"got {cube_prios}")
        return weights / weights.sum()

    def _check_patch_fits(self, index: int, cube: Cube) -> None:
        lo, hi = self._corner_bounds(cube, np.eye(4), self.geometry)
        if np.all(lo <= hi):
            return
        g = self.geometry
        extent = (np.asarray(g.out) - 1) * np.asarray(g.strides) + 1
        problems = [f"axis {tag!r}: input patch {g.patch[a]}, image {cube.image_shape[a]}, "
                    f"output region {extent[a]}, labels {cube.label_shape[a]} (starting "
                    f"{cube.label_offset[a]} into the image)"
                    for a, tag in enumerate('zyx') if lo[a] > hi[a]]
        flat = [s.name for s in (cube.image, cube.labels) if s.ndim == 2]
        if flat and g.patch[0] > 1:
            problems.append(f"2-D (y,x) volume {' and '.join(flat)}, but the network is 3-D: "
                            f"it needs (z,y,x) volumes of at least {g.patch[0]} slices")
        largest = g.net_order(tuple(min(p, s) for p, s in zip(g.patch, cube.image_shape)))
        raise DataError(f"The patch does not fit into cube {index} (image {cube.image.name}, "
                        f"labels {cube.labels.name}, border_mode {self.border_mode!r}): "
                        + '; '.join(problems) + f". The largest input patch "
                        f"({','.join(g.net_tags)}) that fits the image is {largest}; choose a "
                        f"network input size that fits, with the output region inside the labels")

    # --- geometry of one example ----------------------------------------------------------
    def _corner_bounds(self, cube: Cube, transform: np.ndarray, geometry: Footprint,
                       field: aug.ElasticField | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest integer patch corner (z,y,x) at which ``transform`` (and the
        elastic ``field``) fit."""
        patch_to_source = aug.patch_matrix(transform, geometry.patch, np.zeros(3))
        target_points = aug.extent_points(
            patch_to_source, field, geometry.out,
            aug.grid_matrix(geometry.offsets, geometry.strides)) - cube.label_offset
        lo = -target_points.min(0)
        hi = np.asarray(cube.label_shape) - 1 - target_points.max(0)
        if self.border_mode == 'crop':
            image_points = aug.extent_points(patch_to_source, field, geometry.patch)
            lo = np.maximum(lo, -image_points.min(0))
            hi = np.minimum(hi, np.asarray(cube.image_shape) - 1 - image_points.max(0))
        return (np.ceil(lo - aug.COORD_TOLERANCE).astype(int),
                np.floor(hi + aug.COORD_TOLERANCE).astype(int))

    def _draw_placement(self, cube: Cube, warp: float, params: aug.WarpParams, geometry: Footprint
                        ) -> tuple[np.ndarray, aug.ElasticField | None, np.ndarray]:
        """A random (transform, elastic field, corner) that fits the cube; a plain crop if
        warps do not fit."""
        if warp and self.rng.random() < warp:
            for _ in range(MAX_WARP_TRIES):
                transform = aug.random_transform(self.rng, params, self.aniso_factor,
                                                 planar=geometry.planar)
                field = aug.random_elastic_field(self.rng, params, geometry.patch,
                                                 self.aniso_factor, planar=geometry.planar)
                lo, hi = self._corner_bounds(cube, transform, geometry, field)
                if np.all(lo <= hi):
                    self.n_warped += 1
                    return transform, field, self.rng.integers(lo, hi + 1)
            self.n_warp_fallbacks += 1
            logger.debug("No random warp fits %s; using a plain crop", cube.image.name)
        lo, hi = self._corner_bounds(cube, np.eye(4), geometry)
        return np.eye(4), None, self.rng.integers(lo, hi + 1)

    def _cut(self, cube: Cube, corner: Sequence[int], transform: np.ndarray,
             geometry: Footprint, field: aug.ElasticField | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Image (c, z,y,x) float32 in [0,1] and labels (t, z,y,x) under the output grid.

        ``transform`` (4x4, about the patch centre) and the elastic ``field`` (patch
        coordinates) are applied to both; the identity gives the plain crop at ``corner``.
        """
        matrix = aug.patch_matrix(transform, geometry.patch, corner)
        if field is None and aug.is_integer_translation(matrix):
            start = np.round(matrix[:3, 3]).astype(int)
            image = read_channel_box(cube.image, start, start + geometry.patch,
                                     self.border_mode)
            _check_values(image, cube.image, start)
        else:
            points = aug.extent_points(matrix, field, geometry.patch)
            lo = np.floor(points.min(0) - aug.COORD_TOLERANCE).astype(int)
            hi = np.floor(points.max(0) + aug.COORD_TOLERANCE).astype(int) + 2
            if self.border_mode == 'crop':
                lo, hi = np.maximum(lo, 0), np.minimum(hi, cube.image_shape)
            box = read_channel_box(cube.image, lo, hi, self.border_mode)
            _check_values(box, cube.image, lo)
            if field is None:
                image = aug.warp_linear(box, aug.translation(-lo) @ matrix, geometry.patch)
            else:
                image = aug.sample_linear(box, _local_grid(points, lo, geometry.patch))
        image = to_unit_float(image, cube.image.dtype)
        return image, self._sample_labels(cube, aug.translation(-cube.label_offset) @ matrix,
                                          geometry, field)

    def _label_box(self, cube: Cube, matrix: np.ndarray, field: aug.ElasticField | None,
                   shape: Sequence[int], grid: np.ndarray) -> tuple[np.ndarray, Callable, Callable]:
        """The label box (t, ...) under the points ``matrix @ grid @ index`` of a grid of
        ``shape`` (``field`` displacing patch coordinates), and the linear and
        nearest-neighbour samplers of arrays shaped like the box at those points."""
        points = aug.extent_points(matrix, field, shape, grid)
        lo = np.maximum(np.floor(points.min(0) - aug.COORD_TOLERANCE).astype(int), 0)
        hi = np.minimum(np.floor(points.max(0) + aug.COORD_TOLERANCE).astype(int) + 2,
                        cube.label_shape)
        box = read_channel_box(cube.labels, lo, hi)
        _check_values(box, cube.labels, lo, self.discrete)
        if field is None:
            box_matrix = aug.translation(-lo) @ matrix @ grid
            return (box, partial(aug.warp_linear, matrix=box_matrix, out_shape=shape),
                    partial(aug.warp_nearest, matrix=box_matrix, out_shape=shape))
        coords = _local_grid(points, lo, shape)
        return (box, partial(aug.sample_linear, coords=coords),
                partial(aug.sample_nearest, coords=coords))

    def _sample_labels(self, cube: Cube, matrix: np.ndarray, geometry: Footprint,
                       field: aug.ElasticField | None) -> np.ndarray:
        """Labels (t, *out) at the output grid, ``matrix`` mapping patch to label coordinates."""
        box, linear, nearest = self._label_box(
            cube, matrix, field, geometry.out, aug.grid_matrix(geometry.offsets, geometry.strides))
        if self.discrete.all():
            return nearest(box)
        labels = linear(box)
        if self.discrete.any():
            labels[self.discrete] = nearest(box[self.discrete])
        if self.vector_channels:  # source-frame vectors -> patch frame (the affine part)
            to_patch = np.linalg.inv(matrix[:3, :3])
            for channels in self.vector_channels:
                labels[list(channels)] = np.einsum('ij,j...->i...', to_patch,
                                                   labels[list(channels)])
        return labels

    def example_at(self, cube_index: int, corner: Sequence[int],
                   transform: np.ndarray | None = None, force_dense: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
        """The example whose (unwarped) input patch starts at ``corner`` (z,y,x) of a cube.

        Returns image (f, *patch) float32 and target (t, *out) in the network's axis
        order, without random augmentation; ``transform`` is an optional 4x4 warp about
        the patch centre (see :func:`~elektronn2.data.augmentation.random_transform`).
        """
        geometry = self.geometry.dense() if force_dense else self.geometry
        image, labels = self._cut(self.cubes[cube_index], corner,
                                  np.eye(4) if transform is None else transform, geometry)
        self._check_labels(labels, self.cubes[cube_index])
        return geometry.patch_to_net(image), geometry.patch_to_net(self._target_dtype(labels))

    # --- batches ------------------------------------------------------------------------
    @property
    def rng(self) -> np.random.Generator:
        """The random generator (its own stream in every worker process)."""
        return self._random.generator

    def reseed(self, seed: int | None = None) -> None:
        """New random stream (e.g. one seed per worker process)."""
        self._random.reseed(seed)

    def _cube_for(self, source: str) -> int:
        if source == 'train':
            return int(self.rng.choice(self.train_cubes, p=self.train_weights))
        if source == 'valid':
            if not self.valid_cubes:
                raise DataError("No validation cubes: pass valid_cubes=[...] to BatchCreatorImage")
            return int(self.rng.choice(self.valid_cubes))
        raise ConfigError(f"source={source!r} is invalid; use 'train' or 'valid'")

    def _check_labels(self, labels: np.ndarray, cube: Cube) -> None:
        if not self.discrete.any() or labels.size == 0:
            return
        top = labels[self.discrete].max()
        if self.n_class is not None and top >= self.n_class:
            raise DataError(f"Labels {cube.labels.name} contain the value {top}, but the network "
                            f"predicts {self.n_class} classes: valid labels are "
                            f"0..{self.n_class - 1} (negative: unlabelled). Convert the label "
                            f"file (e.g. 0/255 masks to 0/1)")

    def _target_dtype(self, labels: np.ndarray) -> np.ndarray:
        if not self.discrete.all():
            return labels.astype(np.float32)
        info = np.iinfo(np.int16)
        if labels.size and (labels.min() < info.min or labels.max() > info.max):
            raise DataError(f"Class labels range {labels.min()}..{labels.max()}, beyond int16; "
                            f"relabel them (ids belong in targets only with affinities=True)")
        return labels.astype(np.int16)

    def _augment(self, image: np.ndarray, channels: Sequence[int],
                 extras: NonGeometric) -> np.ndarray:
        """Grey-value augmentation of ``channels``, then the non-geometric augmentations
        of ``extras`` (on every channel), each with its probability."""
        image = aug.grey_augment(image, channels, self.rng)
        if self.rng.random() < extras.blur_noise:  # every channel, as ELEKTRONN2
            every = range(len(image))
            image = aug.add_noise(aug.blur(image, every, self.rng, aniso_factor=self.aniso_factor),
                                  every, self.rng)
        for probability, blobs, args in extras.blob_augmentations():
            if self.rng.random() < probability:
                image = blobs(image, **args)
        return image

    def getbatch(self, batch_size: int = 1, source: str = 'train',
                 grey_augment_channels: Sequence[int] | None = None, warp: bool | float = False,
                 warp_args: dict | None = None, ignore_thresh: float | bool = False,
                 force_dense: bool = False, ignore_thresh_raw: float | None = None,
                 affinities: bool | str = False, nhood_targets: bool | np.ndarray = False,
                 affinity_offsets: Sequence[Sequence[int]] | np.ndarray | None = None,
                 ret_ll_mask: bool = False, nga_blur_noise_probability: bool | float = False,
                 intensity_thresh: float = 0, blurry_blobs_probability: bool | float = False,
                 blurry_blobs_args: dict | None = None,
                 noisy_random_erasing_probability: float = 0,
                 noisy_random_erasing_args: dict | None = None,
                 uniform_random_erasing_probability: float = 0,
                 uniform_random_erasing_args: dict | None = None) -> tuple[np.ndarray, ...]:
        """A batch of random examples.

        Args:
            batch_size: number of examples.
            source: 'train' or 'valid' (cubes in ``valid_cubes``).
            grey_augment_channels: input channels that get grey-value augmentation
                (None: none); augmentations apply to source='train' only.
            warp: probability (True = 1) that an example is warped (rotation, shear,
                stretch, flips, axis swaps, see ``warp_args``); others are plain crops.
            warp_args: options of :class:`~elektronn2.data.augmentation.WarpParams`.
            ignore_thresh: redraw examples whose fraction of negative (unlabelled)
                target voxels exceeds this.
            force_dense: targets at every input voxel of the output region (stride 1).
            ignore_thresh_raw: redraw examples whose fraction of image voxels at or below
                ``intensity_thresh`` (0..1) exceeds this (empty regions).
            affinities: True / 'affinity': labels are object ids (0: background, never
                connected; < 0: unlabelled); targets become affinities (b, k, *out):
                channel k of output voxel p is 1 where p and p + affinity_offsets[k]
                hold the same id, 0 where not, and unknown where the partner lies
                outside the label volume or either id is < 0. The partners are sampled
                with the same warp as the output voxels, from beyond the output region
                where needed. Unknown edges are -1 in int16 targets (a Softmax per
                edge: MultinoulliNLL / Errors with ``target_is_sparse`` skip labels
                < 0) and NaN in float32 targets (a sigmoid prediction without classes:
                BinaryNLL skips NaN); int16 where the prediction has classes or the
                target node an integer dtype. 'malis': affinities (unknown: 0) and the
                segments they connect (b, 1, *out) (for
                :class:`~elektronn2.neuromancer.loss.MalisNLL`, whose ``nhood`` is the
                same offsets in output voxels).
            affinity_offsets: the edges of ``affinities``, (k, n_spatial) integer
                offsets in network axis order (the order of the spatial tags, as for
                ``nhood_targets``), in voxels of an output of stride 1, i.e. of the
                volume and of a dense prediction. Long-range edges, e.g. ``[[-1, 0, 0],
                [0, -1, 0], [0, 0, -1], [-3, 0, 0], [0, -9, 0], [0, 0, -9]]``, take
                their partners from beyond the output region. Needs an output of stride
                1 (or ``force_dense``): on a strided output, offsets in input and in
                output voxels would differ. Default (None): each output voxel to its
                predecessor along every axis (on a strided output the previous output
                voxel, ``stride`` input voxels away).
            nhood_targets: True (6-neighbourhood plus centre) or an array of offsets
                (k, n_spatial) in network axis order: target channel k holds the label at
                p - offset[k] (-1 outside).
            ret_ll_mask: also return the lazy-label masks of each example's cube,
                ``mask_class_labeled`` and ``mask_class_not_present`` (b, n_class) int16,
                for MultinoulliNLL (from an HDF5 dataset 'll_mask' (2, n_class) next to
                the labels; default: all classes labelled, none absent).
            nga_blur_noise_probability: probability of Gaussian blur plus noise.
            blurry_blobs_probability: probability of blurred random cubes
                (:mod:`.non_geometric_augmentation`, arguments ``blurry_blobs_args``).
            noisy_random_erasing_probability: probability of random cubes of noise
                (arguments ``noisy_random_erasing_args``).
            uniform_random_erasing_probability: probability of random cubes of one value
                (arguments ``uniform_random_erasing_args``).
        Returns:
            images float32 (b, f, *patch) and targets (b, t, *out) in the network's axis
            order: int16 class labels, or float32 for regression (then the segments for
            ``affinities='malis'``, then the two masks if ``ret_ll_mask``).
        """
        if affinities not in (False, True, 'affinity', 'malis'):
            raise ConfigError(f"affinities={affinities!r} is invalid; use False, True/'affinity' "
                              f"or 'malis'")
        if affinities and not self.discrete.all():
            raise ConfigError("affinities=True needs object ids sampled as discrete labels; "
                              "pass target_discrete_ix=[0]")
        if affinities and self.cubes[0].n_label_channels != 1:
            raise DataError(f"affinities=True needs one label channel of object ids, the "
                            f"labels have {self.cubes[0].n_label_channels}")
        warp = float(warp)
        params = aug.WarpParams.from_args(warp_args)
        extras = NonGeometric(float(nga_blur_noise_probability), float(blurry_blobs_probability),
                              blurry_blobs_args, float(noisy_random_erasing_probability),
                              noisy_random_erasing_args, float(uniform_random_erasing_probability),
                              uniform_random_erasing_args)
        geometry = self.geometry.dense() if force_dense else self.geometry
        edges = affinity_edges(affinities, affinity_offsets, geometry.net_tags,
                               geometry.net_order(geometry.strides), self.target_n_f)
        images, targets, masks = [], [], []
        redraws = 0
        while len(images) < batch_size:
            cube_index = self._cube_for(source)
            cube = self.cubes[cube_index]
            transform, field, corner = self._draw_placement(cube, warp, params, geometry)
            image, labels = self._cut(cube, corner, transform, geometry, field)
            empty = (ignore_thresh_raw is not None
                     and np.mean(image <= intensity_thresh) > ignore_thresh_raw)
            if empty or (ignore_thresh is not False and np.mean(labels < 0) > ignore_thresh):
                redraws += 1
                if redraws > 100 * batch_size:
                    raise DataError(f"More than {100 * batch_size} patches were refused by "
                                    f"ignore_thresh={ignore_thresh} (unlabelled target voxels) "
                                    f"or ignore_thresh_raw={ignore_thresh_raw} (image voxels "
                                    f"<= {intensity_thresh}); lower them or check the data")
                continue
            if not affinities:
                self._check_labels(labels, cube)
            if source == 'train':
                image = self._augment(image, grey_augment_channels or (), extras)
            if affinities:
                labels = self._affinity_target(cube, corner, transform, geometry, field, edges,
                                               unknown=0 if affinities == 'malis' else None)
            images.append(geometry.patch_to_net(image))
            targets.append(geometry.patch_to_net(labels))
            masks.append(self.ll_masks[cube_index])
        target = self._finish_targets(np.stack(targets), affinities, nhood_targets)
        batch: tuple[np.ndarray, ...] = (np.stack(images), target)
        if affinities == 'malis':
            on_grid = np.array([geometry.net_order(row)
                                for row in edges // np.asarray(geometry.strides)], int)
            batch += (np.stack([affinity_components(a > 0, on_grid)[0][None] for a in target]),)
        return batch + tuple(np.stack(masks, axis=1)) if ret_ll_mask else batch

    # --- affinities -----------------------------------------------------------------------
    def _affinity_target(self, cube: Cube, corner: Sequence[int], transform: np.ndarray,
                         geometry: Footprint, field: aug.ElasticField | None, edges: np.ndarray,
                         unknown=None) -> np.ndarray:
        """Affinities (k, *out) (z, y, x) of one example: the ids are sampled, with the warp
        of the output voxels, on the dense region that holds the outputs and all their
        partners; edges to partners outside the labels or with ids < 0 get ``unknown``
        (None: -1 for int16, NaN for float32 targets)."""
        before = np.maximum(-edges.min(0), 0)
        extent = (np.asarray(geometry.out) - 1) * np.asarray(geometry.strides) + 1
        shape = tuple(int(n) for n in extent + before + np.maximum(edges.max(0), 0))
        grid = aug.grid_matrix(np.asarray(geometry.offsets) - before, (1, 1, 1))
        matrix = (aug.translation(-cube.label_offset)
                  @ aug.patch_matrix(transform, geometry.patch, corner))
        ids, labelled = self._sample_ids(cube, matrix, shape, grid, field)
        inner = tuple(slice(int(b), int(b + e), int(s))
                      for b, e, s in zip(before, extent, geometry.strides))
        aff = ids2affinities(ids, edges)[(slice(None),) + inner]
        known = edges_known(labelled & (ids >= 0), edges)[(slice(None),) + inner]
        integer = self.n_class is not None or self.target_dtype.kind in 'iu'
        if unknown is None:
            unknown = -1 if integer else np.nan
        out = aff.astype(np.int16 if integer else np.float32)
        out[~known] = unknown
        return out

    def _sample_ids(self, cube: Cube, matrix: np.ndarray, shape: Sequence[int],
                    grid: np.ndarray, field: aug.ElasticField | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids (*shape) (z, y, x) by nearest-neighbour sampling at ``matrix @ grid @ index``
        (``field`` displacing patch coordinates, as :meth:`_sample_labels` samples), and
        whether each point lies inside the label volume."""
        box, _, sample = self._label_box(cube, matrix, field, shape, grid)
        inside = np.ones((1,) + box.shape[1:], np.uint8)
        return sample(box)[0], sample(inside)[0].astype(bool)

    def _finish_targets(self, target: np.ndarray, affinities, nhood) -> np.ndarray:
        """Neighbourhood conversion, dtype, and the check against the target node
        (affinities are made per example by :meth:`_affinity_target`)."""
        if not affinities:
            offsets = None if nhood is True else nhood
            target = self._target_dtype(target if nhood is False
                                        else make_nhood_targets(target, offsets))
        if self.target_n_f is not None and target.shape[1] != self.target_n_f:
            raise DataError(f"Targets have {target.shape[1]} channel(s) but the target node "
                            f"expects {self.target_n_f}; check l_files, affinities, "
                            f"affinity_offsets and nhood_targets")
        return target

    # --- information ----------------------------------------------------------------------
    @property
    def n_f(self) -> int:
        """Number of input channels."""
        return self.cubes[0].n_channels

    @property
    def warp_stats(self) -> str:
        return (f"warped examples: {self.n_warped}, warps that did not fit (plain crop "
                f"instead): {self.n_warp_fallbacks}")

    def __repr__(self) -> str:
        g = self.geometry
        kind = ('regression' if not self.discrete.any() else
                f"{self.n_class}-class" if self.n_class else 'class-label')
        return (f"BatchCreatorImage({len(self.train_cubes)} train / {len(self.valid_cubes)} "
                f"valid cubes, {self.n_f} input channel(s), {kind} targets; patch "
                f"{g.net_order(g.patch)} -> output {g.net_order(g.out)}, strides "
                f"{g.net_order(g.strides)} ({','.join(g.net_tags)}), border_mode "
                f"{self.border_mode!r})")
