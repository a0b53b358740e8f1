"""Segmentation of volumes larger than memory, block by block, with a result that does not
depend on the block size.

From a boundary map (or affinities, turned into one by
:func:`~.segmentation.boundaries_from_affinities`) to a segmentation in six steps; the
block steps run on any :class:`~.executors.Executor` and each block reads only itself and
a rim of one or two voxels (more by the radius of the seed erosion):

1. basins (blocks): the basins of steepest descent inside each block
   (:func:`~.basins.block_basins`): interior components (``1 - b > seed_threshold``,
   eroded by a ball of radius ``seed_erosion``) and the voxels that drain into them or
   into a minimum;
2. faces (blocks): the links across each block's lower faces (:func:`~.basins.face_links`);
3. basin ids (global): connected components of the basins and links, numbered in the
   raster order of their first voxel, with their sizes and interior sizes;
4. contacts (blocks): the region graph of the basins with exact integer statistics
   (:func:`~.basins.contact_graph`), every voxel pair counted by one block;
5. agglomeration (global, on the graph): a watershed cut (:func:`~.region_graph.seeded_cut`;
   basins whose interior has at least ``min_seed_size`` voxels are seeds, the others join
   the seeded region behind their lowest pass), then merging below ``merge_threshold``:
   mean linkage, or with an ``edge_model`` the learned agglomeration of
   :mod:`.edge_model` (the contacts then carry histograms of their values); then the
   absorption of segments under ``min_size`` voxels; final ids 1..n in the raster order
   of each segment's first voxel;
6. write (blocks): each block's ids mapped to segments, written with a pyramid by mode into
   an OME-Zarr group (:mod:`.ome_zarr`).

Every per-voxel decision depends on the voxel's six neighbours only (and on the voxels
within ``seed_erosion`` of them, which every block reads), the statistics are
integer sums and minima, and the global steps see the same graph whatever the blocks:
a volume segmented in one block and in blocks of any shape gives the same array, byte
for byte. (This watershed drains voxels along steepest descent where
:func:`~.segmentation.segment_boundaries` floods from the seeds; the two differ in
where a few boundary voxels go.) Memory: a block step holds a few arrays of one block;
the global steps hold the region graph (a few numbers per basin and contact), not voxels.

Resuming: the work directory ``OUTPUT.work`` keeps one file per finished block and step
(written whole, then renamed) and the global results; a rerun with the same input and
settings skips what is done, and the output is identical. It is deleted at the end
unless ``keep_work``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import zarr
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from ..data.sources import VolumeSource, is_zarr_store, open_source, zarr_array_keys
from ..errors import ConfigError, DataError, Error, ShapeError
from .basins import block_basins, contact_graph, face_links, rim_width
from .edge_model import (
    HISTOGRAM_BINS,
    EdgeModel,
    fit,
    learned_linkage,
    region_labels,
    training_examples,
)
from .executors import Executor, SerialExecutor
from .geometry import Block, BlockGrid, Box
from .landscape import Landscape
from .ome_zarr import create_label_pyramid, downsample_mode, pyramid_levels
from .outputs import stored_attributes
from .region_graph import (
    RegionGraph,
    absorb_small,
    first_member_numbering,
    mean_linkage,
    seeded_cut,
)

logger = logging.getLogger('elektronn2')

MANIFEST_ATTR = 'elektronn2_segment'
WORK_SUFFIX = '.work'
EDGE_VALUES = ('boundary', 'affinities')
#: The settings only the agglomeration (step 5) uses: a sweep over them reuses the basins.
AGGLOMERATION_SETTINGS = ('min_seed_size', 'merge_threshold', 'min_size', 'edge_model')
#: Largest seed erosion radius (voxels): every block reads this much more around itself.
MAX_SEED_EROSION = 16
STEPS = ('basins', 'faces', 'contacts', 'write')


@dataclass(frozen=True)
class SegmentSettings:
    """What the segmentation computes (see the module docstring)."""
    seed_threshold: float = 0.5
    min_seed_size: int = 1
    merge_threshold: float | None = None
    min_size: int = 0
    edge_values: str = 'boundary'
    seed_erosion: float = 0.0
    edge_model: str | None = None

    def __post_init__(self):
        if not 0 <= self.seed_threshold < 1:
            raise ConfigError(f"seed_threshold={self.seed_threshold} (--seed-threshold); it "
                              f"must be in [0, 1)")
        if not 0 <= self.seed_erosion <= MAX_SEED_EROSION:
            raise ConfigError(f"seed_erosion={self.seed_erosion} (--seed-erosion); it must be "
                              f"in [0, {MAX_SEED_EROSION}] voxels")
        if self.min_seed_size < 1 or self.min_size < 0:
            raise ConfigError(f"min_seed_size={self.min_seed_size}, min_size={self.min_size}: "
                              f"min_seed_size must be >= 1, min_size >= 0")
        if self.edge_values not in EDGE_VALUES:
            raise ConfigError(f"edge_values={self.edge_values!r}; valid: {EDGE_VALUES}")
        if self.edge_model is not None:
            object.__setattr__(self, 'edge_model', str(Path(self.edge_model).expanduser()))
            self.load_edge_model()       # a bad file is refused before any work
            if self.merge_threshold is not None and not 0 < self.merge_threshold <= 1:
                raise ConfigError(f"merge_threshold={self.merge_threshold} (--merge-threshold): "
                                  f"with an edge model, a probability in (0, 1]")

    def load_edge_model(self) -> EdgeModel | None:
        """The :class:`~.edge_model.EdgeModel` of ``edge_model`` (None without one)."""
        return None if self.edge_model is None else EdgeModel.load(self.edge_model)

    def edge_model_digest(self) -> str | None:
        """sha256 of the edge model file (a resumed run must use the same model)."""
        return (None if self.edge_model is None
                else hashlib.sha256(Path(self.edge_model).read_bytes()).hexdigest())

    @classmethod
    def of(cls, **settings) -> SegmentSettings:
        """The settings, refusing unknown names (with what is valid instead)."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise ConfigError(f"unknown segmentation setting(s) {unknown}; valid: {valid} "
                              f"(distance-transform seeds and masks: segment_boundaries, in "
                              f"memory)")
        return cls(**settings)


@dataclass(frozen=True)
class Job:
    """What every block task needs (picklable): input, grid, settings, work directory and
    the histogram bins of the contacts (0: none)."""
    landscape: Landscape
    grid: BlockGrid
    settings: SegmentSettings
    work: str
    bins: int = 0

    def file(self, step: str, block: Block, suffix: str = '.npz') -> Path:
        return Path(self.work, step, block.name + suffix)

    def basin_store(self):
        return zarr.open_array(store=str(Path(self.work, 'basins.zarr')), mode='r+')

    def basin_ids(self, box: Box) -> np.ndarray:
        """int64 basin ids (step 3) of ``box``, read block by block through their maps."""
        out = np.zeros(box.shape, np.int64)
        store = self.basin_store()
        first = [(lo - r) // b for lo, r, b in zip(box.lo, self.grid.region.lo,
                                                    self.grid.block_shape)]
        last = [(hi - 1 - r) // b for hi, r, b in zip(box.hi, self.grid.region.lo,
                                                       self.grid.block_shape)]
        for index in np.ndindex(*(b - a + 1 for a, b in zip(first, last))):
            block = self.grid.block([a + i for a, i in zip(first, index)])
            part = Box([max(a, b) for a, b in zip(block.write.lo, box.lo)],
                       [min(a, b) for a, b in zip(block.write.hi, box.hi)])
            local = store[part.slices_in(self.grid.region)]
            out[part.slices_in(box)] = np.load(self.file('maps', block, '.npy'))[local]
        return out


def _write_whole(path: Path, write: Callable) -> None:
    """``write(file)`` into a temporary file, renamed to ``path`` when complete (so that
    ``path`` is a done-marker of its step)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix='.tmp', delete=False) as f:
        write(f)
    os.replace(f.name, path)


def _save(path: Path, **arrays) -> None:
    """The arrays as an npz file, written whole."""
    _write_whole(path, lambda f: np.savez(f, **arrays))


def _save_npy(path: Path, array: np.ndarray) -> None:
    """One array as an npy file (memory-mappable), written whole."""
    _write_whole(path, lambda f: np.save(f, array))


def _load(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz file (closed again at once)."""
    with np.load(path) as stored:
        return dict(stored)


# --- block steps ---------------------------------------------------------------------------
def basins_step(job: Job, block: Block) -> None:
    """Step 1: local basins of ``block`` into ``basins.zarr``, their statistics into npz."""
    settings = job.settings
    ids, interior, first = block_basins(
        job.landscape.rim(block.write, rim_width(settings.seed_erosion)),
        settings.seed_threshold, settings.seed_erosion)
    job.basin_store()[block.write.slices_in(job.grid.region)] = ids.astype(np.uint32)
    coords = np.unravel_index(first, block.write.shape)
    first_voxel = np.ravel_multi_index([c + lo for c, lo in zip(coords, block.write.lo)],
                                       job.landscape.shape)
    _save(job.file('basins', block), sizes=np.bincount(ids.ravel()), interior=interior,
          first=first_voxel.astype(np.int64))


def faces_step(job: Job, block: Block) -> None:
    """Step 2: links across the lower faces of ``block`` as (block index, local id) pairs."""
    store, settings = job.basin_store(), job.settings
    found = {}
    for axis in range(3):
        if block.write.lo[axis] == job.grid.region.lo[axis]:
            continue
        lo = list(block.write.lo)
        hi = list(block.write.hi)
        lo[axis], hi[axis] = lo[axis] - 1, lo[axis] + 1
        face = Box(lo, hi)
        ids = store[face.slices_in(job.grid.region)].astype(np.int64)
        low, high = face_links(ids, job.landscape.rim(face, rim_width(settings.seed_erosion)),
                               axis, settings.seed_threshold, settings.seed_erosion)
        neighbour = list(block.index)
        neighbour[axis] -= 1
        found[f'axis{axis}'] = np.stack([low, high])
        found[f'neighbour{axis}'] = np.asarray(neighbour)
    _save(job.file('faces', block), **found)


def contacts_step(job: Job, block: Block) -> None:
    """Step 4: the region graph of the voxel pairs whose upper voxel lies in ``block``."""
    origin = [int(lo > r) for lo, r in zip(block.write.lo, job.grid.region.lo)]
    box = block.write.grow(origin, (0, 0, 0))
    ids = job.basin_ids(box)
    edges = (job.landscape.edge_boundary(box) if job.settings.edge_values == 'affinities'
             else None)
    graph = contact_graph(ids, job.landscape.read(box), origin, edges, job.bins)
    _save(job.file('contacts', block), **{k: v for k, v in asdict(graph).items() if v is not None})


def write_step(job: Job, n_levels: int, output: str, block: Block) -> None:
    """Step 6: the segment ids of ``block`` at every pyramid level, then its marker."""
    segments = np.load(Path(job.work, 'segments.npy'), mmap_mode='r')
    group: Any = zarr.open_group(store=output, mode='r+')
    labels = segments[job.basin_ids(block.write)].astype(group['0'].dtype)
    for level in range(n_levels):
        factor = 2 ** level
        if level:
            labels = downsample_mode(labels)
        lo = [(a - r) // factor for a, r in zip(block.write.lo, job.grid.region.lo)]
        group[str(level)][tuple(slice(a, a + n) for a, n in zip(lo, labels.shape))] = labels
    job.file('write', block, '').parent.mkdir(exist_ok=True)
    job.file('write', block, '').touch()


# --- global steps --------------------------------------------------------------------------
def number_basins(job: Job) -> None:
    """Step 3: global basins from the blocks' basins and face links; per-block id maps."""
    blocks = list(job.grid)
    stats = [_load(job.file('basins', b)) for b in blocks]
    offsets = np.cumsum([0] + [len(s['sizes']) for s in stats])
    linear = {b.index: i for i, b in enumerate(blocks)}
    first, second = [], []
    for i, block in enumerate(blocks):
        faces = _load(job.file('faces', block))
        for axis in range(3):
            if f'axis{axis}' in faces:
                low, high = faces[f'axis{axis}']
                first.append(offsets[linear[tuple(faces[f'neighbour{axis}'])]] + low)
                second.append(offsets[i] + high)
    n = int(offsets[-1])
    pairs = (np.concatenate(first), np.concatenate(second)) if first else (np.zeros(0, int),) * 2
    graph = coo_matrix((np.ones(len(pairs[0]), np.int8), pairs), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    is_basin = np.ones(n, bool)
    is_basin[offsets[:-1]] = False                    # each block's unused local id 0
    first_voxel = np.full(n, np.iinfo(np.int64).max)
    first_voxel[is_basin] = np.concatenate([s['first'] for s in stats])
    lowest = np.full(component.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(lowest, component, first_voxel)
    used = np.unique(component[is_basin])
    number = np.zeros(component.max() + 1, np.int64)
    number[used[np.argsort(lowest[used], kind='stable')]] = np.arange(1, len(used) + 1)
    basin = np.where(is_basin, number[component], 0)
    for i, block in enumerate(blocks):
        _save_npy(job.file('maps', block, '.npy'), basin[offsets[i]:offsets[i + 1]])
    sizes = np.bincount(basin, np.concatenate([s['sizes'] for s in stats]))
    interior = np.bincount(basin, np.concatenate([s['interior'] for s in stats]))
    _save(Path(job.work, 'basins.npz'), sizes=sizes.astype(np.int64),
          interior=interior.astype(np.int64))


def cut(job: Job) -> tuple[np.ndarray, RegionGraph, np.ndarray]:
    """The first part of step 5: the watershed cut's region of every basin (n + 1,), the
    region graph of the basins and their sizes (n + 1,)."""
    settings = job.settings
    stats = _load(Path(job.work, 'basins.npz'))
    sizes, interior = stats['sizes'], stats['interior']
    graph = RegionGraph.concat([RegionGraph(**_load(job.file('contacts', b)))
                                for b in job.grid])
    seeded = interior >= settings.min_seed_size
    seeded[0] = False
    if not seeded.any():
        raise ConfigError(f"No seeds: no interior region (1 - boundary > seed_threshold="
                          f"{settings.seed_threshold}) of at least min_seed_size="
                          f"{settings.min_seed_size} voxels; lower the threshold")
    return seeded_cut(len(sizes) - 1, graph, seeded), graph, sizes


def agglomerate(job: Job) -> int:
    """Step 5: the segment of every basin (``segments.npy``); returns the number of segments."""
    settings = job.settings
    region, graph, sizes = cut(job)
    n = len(sizes) - 1
    model = settings.load_edge_model()
    if settings.merge_threshold is not None and model is not None:
        if graph.histograms is None:
            raise ConfigError(f"edge_model={settings.edge_model!r}: the contacts were counted "
                              f"without histograms; give the edge model to the run's settings")
        grouped = np.bincount(region, sizes, minlength=n + 1)
        region = learned_linkage(n, graph.relabel(region), grouped, model,
                                 settings.merge_threshold)[region]
    elif settings.merge_threshold is not None:
        region = mean_linkage(n, graph.relabel(region), settings.merge_threshold)[region]
    if settings.min_size > 1:
        grouped = np.bincount(region, sizes, minlength=n + 1)
        region = absorb_small(n, graph.relabel(region), grouped, settings.min_size)[region]
    segments = first_member_numbering(region)
    _save_npy(Path(job.work, 'segments.npy'), segments)
    return int(segments.max())


# --- the run -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentationReport:
    """What a run did: blocks, segments, basins, seconds per step, blocks found done."""
    n_blocks: int
    n_basins: int
    n_segments: int
    voxels: int
    seconds: dict = field(default_factory=dict)
    resumed: dict = field(default_factory=dict)

    def summary(self) -> str:
        steps = ', '.join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        done = sum(self.resumed.values())
        return (f"{self.n_segments} segments from {self.n_basins} basins, {self.voxels / 1e6:.2f} "
                f"MVx in {self.n_blocks} blocks ({done} block steps done before): {steps}")


class BlockStepError(RuntimeError):
    """An unexpected exception in a block step, naming the step and the block."""


def _named(step: str, fn: Callable, block: Block) -> None:
    """``fn(block)``; an unexpected exception says which step and block it came from."""
    try:
        fn(block)
    except Error:
        raise                            # bad input or settings: their messages name them
    except Exception as err:
        raise BlockStepError(f"step {step!r}, block {block.name} {block.write} (z, y, x): "
                             f"{type(err).__name__}: {err}") from err


def _run_blocks(step: str, fn: Callable, job: Job, executor: Executor, retries: int,
                progress: bool, seconds: dict, resumed: dict, suffix: str = '.npz') -> None:
    """``fn(block)`` for every block without its ``step`` file, with a progress bar."""
    todo = [b for b in job.grid if not job.file(step, b, suffix).exists()]
    resumed[step] = len(job.grid) - len(todo)
    t0 = time.perf_counter()
    with tqdm(total=len(job.grid), initial=resumed[step], unit='block', desc=step,
              disable=not progress) as bar:
        for _ in executor.map(partial(_named, step, fn), todo, retries):
            bar.update(1)
    seconds[step] = time.perf_counter() - t0


def _global(name: str, fn: Callable, done: bool, seconds: dict) -> None:
    """``fn()`` unless an earlier run has ``done`` it, timed."""
    if not done:
        t0 = time.perf_counter()
        fn()
        seconds[name] = time.perf_counter() - t0


def _prepare_work(work: Path, manifest: dict, shape: tuple, chunks: tuple) -> None:
    """Create the work directory, or check that the one there is of the same run."""
    path = work / 'manifest.json'
    if path.exists():
        earlier = json.loads(path.read_text())
        if earlier != manifest:
            differs = sorted(k for k in set(earlier) | set(manifest)
                             if earlier.get(k) != manifest.get(k))
            raise ConfigError(f"{work} holds the work of another run (differs in {differs}); "
                              f"delete it, or rerun with the same input and settings")
        return
    work.mkdir(parents=True, exist_ok=True)
    zarr.open_array(store=str(work / 'basins.zarr'), mode='w', shape=shape, chunks=chunks,
                    dtype='uint32', fill_value=0)
    path.write_text(json.dumps(manifest))


def run_segmentation(landscape: Landscape, output: str | os.PathLike,
                     block_shape: Sequence[int] = (64, 64, 64),
                     settings: SegmentSettings = SegmentSettings(),
                     executor: Executor | None = None, retries: int = 2,
                     progress: bool = True, keep_work: bool = False,
                     unit: str | None = None, bins: int = 0) -> SegmentationReport:
    """Segment ``landscape`` into the OME-Zarr group ``output`` (see the module docstring).

    ``bins``: count histograms of the contact values with this many bins even without an
    edge model (:func:`fit_edge_model`); with one, its bins are counted.
    """
    output = Path(output).expanduser().resolve()
    if output.suffix.lower() != '.zarr':
        raise ConfigError(f"Output {output}: name it *.zarr (an OME-Zarr group)")
    grid = BlockGrid(Box.from_shape(landscape.shape), block_shape)
    unit = unit or landscape.unit
    model = settings.load_edge_model()
    bins = bins if model is None else model.bins
    manifest = json.loads(json.dumps({'input': landscape.describe(),  # as stored: lists
                                      'block_shape': list(grid.block_shape), 'unit': unit,
                                      **asdict(settings), 'histogram_bins': bins,
                                      'edge_model_sha256': settings.edge_model_digest()}))
    work = Path(str(output) + WORK_SUFFIX)
    if output.exists():
        finished = _check_output(output, manifest)
        if finished is not None:
            logger.info("%s is complete; nothing to do", output)
            if not keep_work:    # left by a run stopped while cleaning up
                shutil.rmtree(work, ignore_errors=True)
            return SegmentationReport(len(grid), finished['n_basins'], finished['n_segments'],
                                      int(np.prod(landscape.shape)),
                                      resumed={step: len(grid) for step in STEPS})
    _prepare_work(work, manifest, landscape.shape, grid.block_shape)
    job = Job(landscape, grid, settings, str(work), bins)
    executor = executor or SerialExecutor()
    seconds: dict = {}
    resumed: dict = {}
    run = partial(_run_blocks, job=job, executor=executor, retries=retries, progress=progress,
                  seconds=seconds, resumed=resumed)
    run('basins', partial(basins_step, job))
    run('faces', partial(faces_step, job))
    _global('number', partial(number_basins, job), (work / 'basins.npz').exists(), seconds)
    run('contacts', partial(contacts_step, job))
    _global('agglomerate', partial(agglomerate, job), (work / 'segments.npy').exists(), seconds)
    segments = np.load(work / 'segments.npy', mmap_mode='r')
    n_segments = int(segments.max())
    n_levels = pyramid_levels(landscape.shape, grid.block_shape)
    if not output.exists():          # made in the work directory, then renamed: whole or absent
        dtype = np.uint32 if n_segments < 2 ** 32 else np.uint64
        staged = work / 'output.zarr'
        shutil.rmtree(staged, ignore_errors=True)
        create_label_pyramid(staged, landscape.shape, grid.block_shape, dtype, n_levels,
                             landscape.voxel_size, landscape.translation, unit,
                             {MANIFEST_ATTR: manifest, 'complete': None}, output.stem)
        zarr.open_array(store=str(staged), path='0', mode='r+').attrs['voxel_offset'] = list(
            landscape.voxel_offset)       # as elektronn2-predict's outputs: for evaluation
        os.replace(staged, output)
    run('write', partial(write_step, job, n_levels, str(output)), suffix='')
    report = SegmentationReport(len(grid), len(segments) - 1, n_segments,
                                int(np.prod(landscape.shape)), seconds, resumed)
    zarr.open_group(store=str(output), mode='r+').attrs['complete'] = {
        'n_basins': report.n_basins, 'n_segments': n_segments}
    if not keep_work:
        shutil.rmtree(work)
    logger.info("Segmented %s: %s", output, report.summary())
    return report


def _check_output(output: Path, manifest: dict) -> dict | None:
    """Refuse an existing output that is not a segmentation of this run; its ``complete``
    attribute (None while unfinished)."""
    try:
        attrs: dict[str, Any] = dict(zarr.open_group(store=str(output), mode='r').attrs)
    except Exception:  # zarr raises different errors for a file or a foreign directory
        raise DataError(f"Output {output} exists and is not a zarr group; choose another "
                        f"output path") from None
    if attrs.get(MANIFEST_ATTR) != manifest:
        raise ConfigError(f"Output {output} exists from another run or program; delete it or "
                          f"choose another output path")
    return attrs.get('complete') or None


def segment_to_file(input_path: str | os.PathLike, output_path: str | os.PathLike,
                    input_key: str | None = None, block_shape: Sequence[int] = (64, 64, 64),
                    affinities: bool = False, channel: int = -1,
                    nhood: Sequence[Sequence[int]] | None = None,
                    affinity_channels: Sequence[int] | None = None, executor: Executor | None = None,
                    retries: int = 2, progress: bool = True, keep_work: bool = False,
                    unit: str | None = None, **settings) -> SegmentationReport:
    """Segment a prediction file (HDF5, zarr) as ``elektronn2-predict`` writes it; options
    as :class:`~.landscape.Landscape` and :class:`SegmentSettings`."""
    source = open_prediction(input_path, input_key)
    landscape = Landscape.of(source, affinities, channel, nhood, stored_attributes(source),
                             affinity_channels)
    return run_segmentation(landscape, output_path, block_shape, SegmentSettings.of(**settings),
                            executor, retries, progress, keep_work, unit)


def open_prediction(path: str | os.PathLike, key: str | None = None) -> VolumeSource:
    """The source of a prediction file (HDF5, zarr); ``key`` None for a zarr store that
    holds ``probabilities``: that (what ``elektronn2-predict`` writes)."""
    path = Path(path).resolve()
    if key is None and is_zarr_store(path) and 'probabilities' in zarr_array_keys(path):
        key = 'probabilities'
    return open_source(path, key)


def segment_volume(volume: np.ndarray | VolumeSource, block_shape: Sequence[int] | None = None,
                   affinities: bool = False, channel: int = -1,
                   nhood: Sequence[Sequence[int]] | None = None,
                   affinity_channels: Sequence[int] | None = None, **settings) -> np.ndarray:
    """uint32 (z, y, x) segment ids of a boundary map ((z, y, x) or (c, z, y, x)) or
    affinities (k, z, y, x) in memory; ``block_shape`` None: the volume in one block."""
    return next(sweep_volume(volume, [{}], block_shape, affinities, channel, nhood,
                             affinity_channels, **settings))


def sweep_volume(volume: np.ndarray | VolumeSource, sweep: Sequence[dict],
                 block_shape: Sequence[int] | None = None, affinities: bool = False,
                 channel: int = -1, nhood: Sequence[Sequence[int]] | None = None,
                 affinity_channels: Sequence[int] | None = None, **settings
                 ) -> Iterator[np.ndarray]:
    """For each entry of ``sweep`` (agglomeration settings, :data:`AGGLOMERATION_SETTINGS`,
    over ``settings``) the uint32 (z, y, x) segmentation of ``volume`` in memory (as
    :func:`segment_volume`), from one computation of the basins and the region graph (a
    parameter search pays the block steps once): the basins of :func:`run_segmentation`
    mapped to the segments of each entry's agglomeration. Raises ConfigError before the
    first result if ``settings`` find no seeds or an entry sets anything else."""
    for entry in sweep:
        other = sorted(set(entry) - set(AGGLOMERATION_SETTINGS))
        if other:
            raise ConfigError(f"sweep entry {entry} sets {other}; a sweep reuses the basins, "
                              f"so it may only vary {list(AGGLOMERATION_SETTINGS)}")
    base = SegmentSettings.of(**settings)
    landscape = Landscape.of(open_source(volume), affinities, channel, nhood,
                             affinity_channels=affinity_channels)
    grid = BlockGrid(Box.from_shape(landscape.shape), block_shape or landscape.shape)
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp, 'seg.zarr')
        run_segmentation(landscape, output, grid.block_shape, base, progress=False,
                         keep_work=True)
        work = str(output) + WORK_SUFFIX
        basins = Job(landscape, grid, base, work).basin_ids(grid.region)
        for entry in sweep:
            agglomerate(Job(landscape, grid, replace(base, **entry), work))
            yield np.load(Path(work, 'segments.npy'))[basins].astype(np.uint32)


def fit_edge_model(volume: np.ndarray | VolumeSource, truth: np.ndarray,
                   block_shape: Sequence[int] | None = None, affinities: bool = False,
                   channel: int = -1, nhood: Sequence[Sequence[int]] | None = None,
                   affinity_channels: Sequence[int] | None = None, l2: float = 1.0,
                   **settings) -> EdgeModel:
    """An :class:`~.edge_model.EdgeModel` for the learned agglomeration, fitted on a
    boundary map (or affinities; options as :func:`segment_volume`) in memory and its
    ground truth ``truth`` (z, y, x) neuron ids (0: unlabelled).

    The regions of the watershed cut with ``settings`` (use the seeds of the segmentation
    the model is meant for; merging settings are ignored), each labelled with the neuron
    most of its voxels belong to, give the :func:`~.edge_model.training_examples`.
    """
    base = replace(SegmentSettings.of(**settings), merge_threshold=None, min_size=0,
                   edge_model=None)
    landscape = Landscape.of(open_source(volume), affinities, channel, nhood,
                             affinity_channels=affinity_channels)
    if np.shape(truth) != tuple(landscape.shape):
        raise ShapeError(f"ground truth of shape {np.shape(truth)} for a volume of "
                         f"{tuple(landscape.shape)} (z, y, x); they must be equal")
    grid = BlockGrid(Box.from_shape(landscape.shape), block_shape or landscape.shape)
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp, 'seg.zarr')
        run_segmentation(landscape, output, grid.block_shape, base, progress=False,
                         keep_work=True, bins=HISTOGRAM_BINS)
        job = Job(landscape, grid, base, str(output) + WORK_SUFFIX, HISTOGRAM_BINS)
        region, graph, sizes = cut(job)
        labels = region_labels(region[job.basin_ids(grid.region)], truth)
    grouped = np.bincount(region, sizes, minlength=len(sizes))
    features, different = training_examples(graph.relabel(region), grouped, labels)
    return fit(features, different, l2, info={'settings': {
        k: v for k, v in asdict(base).items() if k not in ('merge_threshold', 'min_size',
                                                          'edge_model')}})
