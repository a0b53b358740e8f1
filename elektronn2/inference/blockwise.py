"""Prediction of volumes larger than memory, block by block, serially or on dask.

A volume is split into output blocks (:class:`~.geometry.BlockGrid`); each block reads
only its tile plus the net's context from the input source (mirrored beyond the volume,
like ``predict_dense(pad_raw=True)``), is predicted by a block predictor
(:mod:`.predictors`) and goes to a writer (:mod:`.outputs`). Peak memory is that of
one block per worker, whatever the volume size.

Entry points: :func:`plan_prediction` (geometry and back end), :func:`run_prediction`
(blocks through an executor into a writer), :func:`predict_volume` (in memory) and
:func:`predict_to_file` (what ``elektronn2-predict`` runs).

Test-time augmentation (``tta='flips'`` or ``'dihedral'``, ``--tta``) averages every
patch's outputs over flips of the net's axes (and transposes of y and x): see
:mod:`elektronn2.neuromancer.dense`. It acts on patches, on the same patch placements
as without it, so blocks give the values of ``predict_dense(..., tta=...)``; it is part of
the predictor spec and of a zarr output's manifest. The transforms run one after
another: the work grows with their number, the memory only by a running sum of one
evaluation's outputs.

A ``region`` (volume coordinates) restricts the prediction to a box of the volume; the
output then covers only that box, its attribute ``voxel_offset`` records where the box
starts (as for ``valid_only``). For exact nets (valid convolutions) its values equal
those of a whole-volume prediction; blended nets place their windows from the box.

Interrupted (Ctrl+C), :func:`run_prediction` raises :class:`PredictionInterrupted`,
which says how many blocks are done; a zarr output keeps them for a resumed run.

Bad input is refused before anything is written where it can be: an input that is not
numeric, has the wrong channel count or is smaller than the net's field of view (plan),
a block shape whose estimated memory (:mod:`.memory`) does not fit; NaN or Inf input
voxels are refused as each block reads them (:func:`read_mirrored`).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ..data.sources import (
    VolumeSource,
    channel_volume_shape,
    first_nonfinite,
    open_source,
    read_channel_box,
    require_real,
)
from ..errors import ConfigError, DataError, ModelFileError, ShapeError
from ..neuromancer.dense import useful_macs_per_voxel
from ..neuromancer.footprint import Footprint
from ..neuromancer.modelfile import GRAPH_FILE
from ..neuromancer.summary import pretty_ops
from .ensemble import EnsembleSpec, check_members, resolve_ensemble_spec, widest_context
from .executors import DaskExecutor, Executor, SerialExecutor, check_counts
from .geometry import Block, BlockGrid, Box
from .memory import block_needs, check_block_memory, choose_block_shape, default_block_budget, gib
from .options import OUTPUT_DTYPES
from .outputs import ArrayWriter, BlockWriter, open_writer, output_attributes, source_attributes
from .predictors import PredictorSpec, cached_predictor, load_model, model_digest, resolve_spec

logger = logging.getLogger('elektronn2')

#: the model file inside a training checkpoint directory (:mod:`elektronn2.training.checkpoint`)
CHECKPOINT_MODEL = 'model.mdl'

#: one model file, or several: an ensemble whose probabilities are averaged (:mod:`.ensemble`)
ModelPaths = str | os.PathLike | Sequence[str | os.PathLike]


def model_path_list(model_path: ModelPaths) -> list[str | os.PathLike]:
    """The model files of ``model_path``: one path, or a sequence of them (an ensemble)."""
    if isinstance(model_path, (str, os.PathLike)):
        return [model_path]
    paths = list(model_path)
    if not paths:
        raise ConfigError("No model file given; give one, or several for an ensemble")
    return paths


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl+C during :func:`run_prediction`: ``n_done`` of ``n_blocks`` blocks are in the
    output, which ``resumable`` outputs keep for a rerun."""

    def __init__(self, n_done: int, n_blocks: int, resumable: bool):
        super().__init__(f"interrupted after {n_done} of {n_blocks} blocks")
        self.n_done, self.n_blocks, self.resumable = n_done, n_blocks, resumable


def mirror_indices(lo: int, hi: int, size: int) -> np.ndarray:
    """Indices ``lo..hi-1`` reflected into ``[0, size)`` ('symmetric' as np.pad: -1 -> 0)."""
    period = np.arange(lo, hi) % (2 * size)
    return np.where(period < size, period, 2 * size - 1 - period)


def require_finite(data: np.ndarray, source: VolumeSource, lo: Sequence[int]) -> None:
    """Raise a DataError naming the first NaN/Inf voxel of ``data`` ((c, z, y, x) read from
    ``source`` at spatial offset ``lo``), in the source's own axis order."""
    bad = first_nonfinite(data)
    if bad is not None:
        c, *zyx = bad
        index = ((c,) + tuple(int(a + o) for a, o in zip(zyx, lo)))[-source.ndim:]
        axes = 'c,z,y,x'[-(2 * source.ndim - 1):]
        raise DataError(f"{source.name} holds {data[bad]} at voxel {index} ({axes}) (the first "
                        f"non-finite voxel of the block read at {tuple(lo)}); prediction needs "
                        f"finite input: replace NaN/Inf in the volume")


def read_mirrored(source: VolumeSource, box: Box) -> np.ndarray:
    """(c, *box.shape) input of ``box`` (z, y, x); voxels outside the volume are mirrored.

    Reads only the bounding box of the voxels needed; NaN or Inf in it raise a DataError.
    """
    n_channels, zyx = channel_volume_shape(source)
    index = [mirror_indices(lo, hi, n) for lo, hi, n in zip(box.lo, box.hi, zyx)]
    inner = Box([i.min() for i in index], [i.max() + 1 for i in index])
    data = read_channel_box(source, inner.lo, inner.hi)
    require_finite(data, source, inner.lo)
    if inner == box:
        return data
    return data[(slice(None),) + np.ix_(*(i - lo for i, lo in zip(index, inner.lo)))]


def to_output_dtype(probabilities: np.ndarray, dtype: str) -> np.ndarray:
    """float32 as is, or uint8 as round(p * 255)."""
    if dtype == 'uint8':
        return np.clip(np.round(probabilities * 255), 0, 255).astype(np.uint8)
    return probabilities.astype(np.float32, copy=False)


@dataclass(frozen=True)
class BlockJob:
    """What every block task needs (picklable): predictor recipe, input, output dtype,
    the writer when workers write themselves."""
    spec: PredictorSpec | EnsembleSpec
    source: VolumeSource
    dtype: str
    writer: BlockWriter | None = None


@dataclass(frozen=True)
class BlockResult:
    """A finished block: its data when the main process writes it, else None."""
    block: Block
    seconds: float
    data: np.ndarray | None


def read_block_input(job: BlockJob, block: Block) -> np.ndarray:
    """(c, z, y, x) input of ``block``: its compute box grown by the net's context."""
    return read_mirrored(job.source, cached_predictor(job.spec).input_box(block.compute))


@dataclass(frozen=True, repr=False)
class ReadBlock:
    """A block with its input, read ahead (:func:`read_ahead`)."""
    block: Block
    raw: np.ndarray

    def __repr__(self) -> str:
        return repr(self.block)


def read_ahead(job: BlockJob, blocks: Sequence[Block]) -> Iterator[ReadBlock]:
    """The blocks with their inputs, the next one read by a thread while the caller
    predicts this one (reading from disk overlaps computing)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix='elektronn2-read') as reader:
        upcoming = reader.submit(read_block_input, job, blocks[0]) if blocks else None
        for i, block in enumerate(blocks):
            assert upcoming is not None
            raw = upcoming.result()
            upcoming = (reader.submit(read_block_input, job, blocks[i + 1])
                        if i + 1 < len(blocks) else None)
            yield ReadBlock(block, raw)


def process_block(job: BlockJob, item: Block | ReadBlock) -> BlockResult:
    """Read (unless ``item`` comes with its input), predict and (with ``job.writer``)
    write one block; the data is returned otherwise."""
    t0 = time.perf_counter()
    predictor = cached_predictor(job.spec)
    block, raw = ((item.block, item.raw) if isinstance(item, ReadBlock)
                  else (item, read_block_input(job, item)))
    probabilities = predictor.predict(raw, block.compute)
    data = to_output_dtype(probabilities[(slice(None),) + block.write.slices_in(block.compute)],
                           job.dtype)
    if job.writer is None:
        return BlockResult(block, time.perf_counter() - t0, data)
    job.writer.write(block, data)
    return BlockResult(block, time.perf_counter() - t0, None)


@dataclass(frozen=True)
class PredictionPlan:
    """Resolved geometry of one volume prediction.

    ``region``: output voxels in volume coordinates (the whole volume, or its valid part);
    ``grid``: the blocks; ``spec``: the block predictor; ``geometry``: the net's footprint
    (an ensemble's first model's: all share the input channels and output features).
    """
    spec: PredictorSpec | EnsembleSpec
    geometry: Footprint
    grid: BlockGrid

    @property
    def region(self) -> Box:
        return self.grid.region

    def manifest(self, source: VolumeSource, dtype: str) -> dict:
        """Everything a resumed run must share with the first one (JSON-able)."""
        digest = '+'.join(model_digest(path) for path in self.spec.model_paths)
        return {'model_sha256': digest, 'input': source.name,
                'input_shape': list(source.shape), 'predictor': self.spec.describe(),
                'region': [list(self.region.lo), list(self.region.hi)],
                'block_shape': list(self.grid.block_shape), 'dtype': dtype}


def plan_prediction(model_path: ModelPaths, source: VolumeSource,
                    block_shape: Sequence[int] = (64, 64, 64), mfp: str = 'auto',
                    blend: str = 'auto', overlap: float = 0.25, valid_only: bool = False,
                    region: Box | None = None, precision: str | None = None,
                    tta: str = 'none') -> PredictionPlan:
    """Choose the back end and lay out the blocks for ``source`` ((z,y,x) or (c,z,y,x)).

    Args:
        model_path: a model file, or several: an ensemble (:mod:`.ensemble`).
        block_shape: output voxels per block (z, y, x); the zarr chunk shape.
        mfp, blend, overlap, precision, tta: see :func:`.predictors.resolve_spec`.
        valid_only: predict only where the net's field of view lies inside the volume
            (else the whole volume, mirrored at the border).
        region: predict only this box (volume coordinates, z, y, x; within the valid
            part with ``valid_only``); see the module docstring.
    """
    if len(block_shape) != 3 or min(block_shape) < 1:
        raise ConfigError(f"block_shape={tuple(block_shape)} (--block-shape) needs 3 positive "
                          f"sizes (z, y, x)")
    paths = model_path_list(model_path)
    geometries = [Footprint.of(load_model(path).prediction_node) for path in paths]
    check_members(geometries, [str(path) for path in paths])
    for geometry, path in zip(geometries, paths):   # every model must suit the input
        zyx = check_input(source, geometry, path)
    region = _output_region(zyx, widest_context(geometries), valid_only, region, source.name)
    spec: PredictorSpec | EnsembleSpec
    if len(paths) == 1:
        spec, block_shape = resolve_spec(paths[0], block_shape, region, mfp, blend, overlap,
                                         precision, tta)
    else:
        spec, block_shape = resolve_ensemble_spec(paths, block_shape, region, mfp, blend,
                                                  overlap, precision, tta)
    logger.info("Prediction plan: backend %s, blocks %s, region %s", spec.backend, block_shape, region)
    return PredictionPlan(spec, geometries[0], BlockGrid(region, block_shape))


def _output_region(zyx: Sequence[int], context: tuple[Sequence[int], Sequence[int]],
                   valid_only: bool, region: Box | None, name: str) -> Box:
    """The output voxels: the volume (its valid part, where the nets' ``context``
    (before, after) lies inside, with ``valid_only``), or ``region`` once it is known to
    lie there and to be non-empty."""
    allowed = Box.from_shape(zyx)
    if valid_only:
        before, after = context
        allowed = Box(before, [n - a for n, a in zip(zyx, after)])
    if region is None:
        return allowed
    if len(region.lo) != 3 or not allowed.contains(region) or min(region.shape) < 1:
        where = "the valid part " if valid_only else ""
        raise ShapeError(f"region {region} (--region, z,y,x) must be a non-empty box inside "
                         f"{where}{allowed} of {name} (spatial shape {tuple(zyx)})")
    return region


def check_input(source: VolumeSource, geometry: Footprint,
                model_path: str | os.PathLike) -> tuple[int, int, int]:
    """The spatial shape (z, y, x) of ``source`` once it is known to suit the net: a
    numeric dtype, the net's channel count and at least its field of view per axis."""
    require_real(source.name, source.dtype, 'Input')
    n_channels, zyx = channel_volume_shape(source)
    if n_channels != geometry.n_channels:
        raise ShapeError(f"{source.name} has {n_channels} channel(s) (shape {source.shape}); "
                         f"the model {model_path} needs {geometry.n_channels}")
    geometry.check_volume(zyx, source.name)
    return zyx


@dataclass(frozen=True)
class PredictionReport:
    """What a run did: blocks predicted now, blocks found done, output voxels, seconds."""
    n_blocks: int
    n_predicted: int
    n_resumed: int
    voxels: int
    seconds: float
    backend: str
    block_shape: tuple[int, ...]

    @property
    def mvx_per_s(self) -> float:
        """Output megavoxels per second over the blocks predicted in this run."""
        return self.voxels / 1e6 / self.seconds if self.seconds > 0 else float('nan')


def run_prediction(plan: PredictionPlan, source: VolumeSource, writer: BlockWriter,
                   dtype: str = 'float32', executor: Executor | None = None,
                   retries: int = 2, progress: bool = True) -> PredictionReport:
    """Predict every block of ``plan`` not yet done and hand it to ``writer``."""
    if dtype not in OUTPUT_DTYPES:
        raise ConfigError(f"dtype={dtype!r}; valid: {OUTPUT_DTYPES}")
    executor = executor or SerialExecutor()
    done = writer.done()
    todo = [b for b in plan.grid if b.name not in done]
    n_resumed = len(plan.grid) - len(todo)
    job = BlockJob(plan.spec, source, dtype, writer if writer.parallel_safe else None)
    voxels = n_predicted = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(plan.grid), initial=n_resumed, unit='block', desc='predict',
               disable=not progress)
    # in this process: the next block is read while one is predicted and the last one is
    # written (one write in flight); workers of a cluster overlap by running side by side
    items = read_ahead(job, todo) if isinstance(executor, SerialExecutor) else todo
    try:
        with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix='elektronn2-write') \
                as write_behind:
            writing: Future | None = None
            for result in executor.map(partial(process_block, job), items, retries):
                if result.data is not None:
                    if writing is not None:
                        writing.result()
                    writing = write_behind.submit(writer.write, result.block, result.data)
                voxels += result.block.write.size
                n_predicted += 1
                logger.debug("Block %s predicted in %.2f s", result.block.name, result.seconds)
                bar.update(1)
                bar.set_postfix_str(f"{voxels / 1e6 / (time.perf_counter() - t0):.2f} MVx/s")
            if writing is not None:
                writing.result()
    except KeyboardInterrupt:
        writer.abort()
        # a resumable writer's markers count blocks that workers wrote but did not report
        n_done = len(writer.done()) if writer.resumable else n_resumed + n_predicted
        raise PredictionInterrupted(n_done, len(plan.grid), writer.resumable) from None
    except BaseException:
        writer.abort()
        raise
    writer.finish()
    report = PredictionReport(len(plan.grid), len(todo), n_resumed, voxels,
                              time.perf_counter() - t0, plan.spec.backend, plan.grid.block_shape)
    logger.info("Predicted %d blocks (%d resumed), %.2f MVx in %.1f s: %.3f MVx/s",
                report.n_predicted, report.n_resumed, voxels / 1e6, report.seconds,
                report.mvx_per_s)
    return report


def predict_volume(model_path: ModelPaths, volume: VolumeSource | np.ndarray,
                   block_shape: Sequence[int] | None = None, mfp: str = 'auto',
                   blend: str = 'auto', overlap: float = 0.25, valid_only: bool = False,
                   dtype: str = 'float32', progress: bool = False,
                   region: Box | None = None, precision: str | None = None,
                   tta: str = 'none') -> np.ndarray:
    """(f, z, y, x) class probabilities of a whole volume ((z,y,x) or (c,z,y,x)), or of
    its box ``region``, in memory; ``precision``: see :func:`.predictors.resolve_precision`;
    ``tta``: test-time augmentation, 'none', 'flips' or 'dihedral' (module docstring);
    ``block_shape`` None: chosen (:func:`.memory.choose_block_shape`); several
    ``model_path``: an ensemble, the mean of their probabilities (:mod:`.ensemble`)."""
    source = open_source(volume)
    replan = partial(plan_prediction, model_path, source, mfp=mfp, blend=blend,
                     overlap=overlap, valid_only=valid_only, region=region,
                     precision=precision, tta=tta)
    plan = _planned(replan, source, block_shape, 1)
    check_block_memory(plan, source, 1, replan)
    writer = ArrayWriter(plan.grid, plan.geometry.n_outputs, dtype)
    run_prediction(plan, source, writer, dtype, progress=progress)
    return writer.result


def predict_to_file(model_path: ModelPaths, input_path: str | os.PathLike,
                    output_path: str | os.PathLike, input_key: str | None = None,
                    output_key: str = 'probabilities', block_shape: Sequence[int] | None = None,
                    mfp: str = 'auto', blend: str = 'auto', overlap: float = 0.25,
                    valid_only: bool = False, dtype: str = 'float32', workers: int = 1,
                    scheduler: str | None = None, retries: int = 2,
                    progress: bool = True, region: Box | None = None,
                    precision: str | None = None, tta: str = 'none') -> PredictionReport:
    """Predict a volume file (HDF5, zarr, KNOSSOS) into a zarr or HDF5 output.

    ``workers > 1`` or a ``scheduler`` address run the blocks on dask.distributed
    (zarr outputs are written by the workers; HDF5 by this process). A zarr output
    left by a killed run with the same settings is resumed. ``block_shape`` None: the
    largest blocks within a share of the machine's memory per worker
    (:func:`.memory.choose_block_shape`). Without a scheduler, a block shape whose
    ``workers`` blocks at once would not fit into memory is refused.
    ``model_path`` may be a training checkpoint directory (:func:`resolve_model_path`),
    or several model files or checkpoints: an ensemble (:mod:`.ensemble`);
    ``region``: see the module docstring; ``precision`` of the network's evaluation
    (fp32 unless 'bf16' or 'fp16' is asked for): :func:`.predictors.resolve_precision`,
    and ``tta`` (test-time augmentation, module docstring), both recorded in the manifest
    of a zarr output (a resumed run must use the same).
    """
    if dtype not in OUTPUT_DTYPES:
        raise ConfigError(f"dtype={dtype!r}; valid: {OUTPUT_DTYPES}")
    check_counts(workers, retries)
    model_paths = [resolve_model_path(path) for path in model_path_list(model_path)]
    # absolute paths: workers of a remote cluster may start elsewhere
    source = open_source(Path(input_path).resolve(), input_key)
    replan = partial(plan_prediction, model_paths, source, mfp=mfp, blend=blend,
                     overlap=overlap, valid_only=valid_only, region=region,
                     precision=precision, tta=tta)
    plan = _planned(replan, source, block_shape, workers)
    if not scheduler:  # a remote cluster's memory is unknown here
        check_block_memory(plan, source, workers, replan)
    attrs = output_attributes(source_attributes(source), plan.region.lo)
    writer = open_writer(Path(output_path), output_key, plan.grid, plan.geometry.n_outputs,
                         dtype, attrs, plan.manifest(source, dtype))
    executor = (DaskExecutor(scheduler, workers) if scheduler or workers > 1
                else SerialExecutor())
    return run_prediction(plan, source, writer, dtype, executor, retries, progress)


def _planned(replan: Callable[[tuple[int, ...]], PredictionPlan], source: VolumeSource,
             block_shape: Sequence[int] | None, parallel: int) -> PredictionPlan:
    """The plan with ``block_shape``, or with blocks chosen for ``parallel`` tasks at once;
    logged with the work it implies (executed vs useful multiply-adds per voxel)."""
    if block_shape is not None:
        plan = replan(tuple(block_shape))
    else:
        plan = choose_block_shape(replan, source, default_block_budget(parallel))
    predictor = cached_predictor(plan.spec)
    block = plan.grid.block((0, 0, 0)).compute
    useful = sum(useful_macs_per_voxel(load_model(path).prediction_node)
                 for path in plan.spec.model_paths)
    logger.info("Plan: %s, %d blocks of %s (z,y,x), %s MAC per output voxel executed "
                "(%.2fx the %s of a dense evaluation without redundancy), about %s per "
                "block task", plan.spec.backend, len(plan.grid), plan.grid.block_shape,
                pretty_ops(predictor.executed_macs(block) / block.size).strip(),
                predictor.executed_macs(block) / block.size / useful,
                pretty_ops(useful).strip(), gib(sum(n.total for n in block_needs(plan, source))))
    return plan


def resolve_model_path(path: str | os.PathLike) -> Path:
    """``path``, or the ``model.mdl`` inside it when it is a training checkpoint directory
    (``RUN/checkpoints/step-N/``); a directory that is neither is refused."""
    path = Path(path).expanduser()
    if not path.is_dir() or (path / GRAPH_FILE).is_file():
        return path
    if (path / CHECKPOINT_MODEL).exists():
        logger.info("%s is a training checkpoint: predicting with its %s", path,
                    CHECKPOINT_MODEL)
        return path / CHECKPOINT_MODEL
    raise ModelFileError(f"{path} is a directory without {GRAPH_FILE} or {CHECKPOINT_MODEL}: "
                         f"give a model file (*.mdl) saved by Model.save, or a training "
                         f"checkpoint directory (RUN/checkpoints/step-N/)")
