"""Speed of a network per input patch size (ELEKTRONN2's ``elektronn2-profile``).

For each of a range of patch sizes the network is rebuilt at the nearest size it accepts
(:func:`~elektronn2.neuromancer.loading.rebuild_model`, so every size tried is valid), its
forward pass and (where it has a loss) a training step are timed on random input, and
the speed is reported in output voxels per second:

>>> profile = profile_patch_sizes(model, candidate_patch_sizes(model, n_sizes=6))
>>> profile.write_csv('net-Speed.csv'); profile.plot('net-Speed.png')

Larger patches amortise the context of valid convolutions until memory runs out: the
first size that does not fit ends the sweep (so give the sizes in increasing order).
Evaluation follows :data:`elektronn2.config.config` (device, precision, compile), as in
training and prediction.
"""
from __future__ import annotations

import contextlib
import csv
import gc
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, Error
from ..neuromancer.container import Model
from ..neuromancer.loading import rebuild_model
from ..neuromancer.registry import model_manager
from .plotting import new_figure, save_figure
from .timer import Timer

logger = logging.getLogger('elektronn2')


@dataclass(frozen=True)
class PatchSpeed:
    """Timings of one patch size (sizes in the network's spatial tag order); a size that
    could not run has ``note`` saying why and no times."""
    patch_size: tuple[int, ...]
    batch_size: int
    output_size: tuple[int, ...] = ()
    forward_s: float | None = None
    train_step_s: float | None = None
    note: str = ''

    @property
    def output_voxels(self) -> int | None:
        """Output voxels of one evaluation (all examples of the batch)."""
        return self.batch_size * math.prod(self.output_size) if self.forward_s else None

    @property
    def forward_voxels_per_s(self) -> float | None:
        return self.output_voxels / self.forward_s if self.forward_s else None

    @property
    def train_voxels_per_s(self) -> float | None:
        return self.output_voxels / self.train_step_s if self.forward_s and self.train_step_s \
            else None


@dataclass
class SpeedProfile:
    """The :class:`PatchSpeed` of each size tried, for the spatial axes ``tags`` of the
    input and ``output_tags`` of the prediction."""
    tags: tuple[str, ...]
    output_tags: tuple[str, ...]
    device: str
    rows: list[PatchSpeed] = field(default_factory=list)

    @property
    def fastest(self) -> PatchSpeed | None:
        """The size with the most forward output voxels per second."""
        timed = [r for r in self.rows if r.forward_s]
        return max(timed, key=lambda r: r.forward_voxels_per_s) if timed else None

    def write_csv(self, path: str | os.PathLike) -> Path:
        """One row per size: patch size per axis, batch size, output size per axis, output
        voxels, seconds and voxels/s of forward and training step, note."""
        path = Path(os.path.expanduser(os.fspath(path)))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow([*self.tags, 'batch_size', *(f"out_{t}" for t in self.output_tags),
                             'output_voxels', 'forward_s', 'forward_voxels_per_s',
                             'train_step_s', 'train_voxels_per_s', 'note'])
            for r in self.rows:
                writer.writerow([*r.patch_size, r.batch_size,
                                 *(r.output_size or ('',) * len(self.output_tags)),
                                 *(_number(v) for v in (r.output_voxels, r.forward_s,
                                                        r.forward_voxels_per_s, r.train_step_s,
                                                        r.train_voxels_per_s)), r.note])
        return path

    def plot(self, path: str | os.PathLike, title: str = '') -> Path:
        """Voxels per second against input voxels per patch (forward and training step)."""
        fig = new_figure(7, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        timed = [r for r in self.rows if r.forward_s]
        for label, speed in (('forward', 'forward_voxels_per_s'),
                             ('training step', 'train_voxels_per_s')):
            points = [(math.prod(r.patch_size), getattr(r, speed)) for r in timed
                      if getattr(r, speed)]
            if points:
                ax.plot(*zip(*points), 'o-', label=label)
        for r in timed:
            ax.annotate('x'.join(map(str, r.patch_size)),
                        (math.prod(r.patch_size), r.forward_voxels_per_s), fontsize=7,
                        textcoords='offset points', xytext=(3, 3))
        ax.set_xscale('log')
        ax.set_xlabel(f"input voxels per patch ({','.join(self.tags)})")
        ax.set_ylabel('output voxels / s')
        ax.set_title(title or f"speed per patch size on {self.device}")
        ax.grid(alpha=0.3)
        if timed:
            ax.legend()
        return save_figure(fig, path)


def _number(value: float | None) -> str:
    return '' if value is None else f"{value:.6g}"


def candidate_patch_sizes(model: Model, n_sizes: int = 8, max_factor: float = 4.0,
                          min_factor: float = 1.0) -> list[tuple[int, ...]]:
    """``n_sizes`` patch sizes from ``min_factor`` to ``max_factor`` times the input's
    spatial size (each axis scaled alike, geometrically spaced); they are snapped to
    valid sizes when profiled."""
    if n_sizes < 1 or not 0 < min_factor <= max_factor:
        raise ConfigError(f"patch sizes: need n_sizes >= 1 (got {n_sizes}) and "
                          f"0 < min_factor <= max_factor (got {min_factor}, {max_factor})")
    base = model.input_node.shape.spatial_shape
    if any(s is None for s in base):
        raise ConfigError(f"the input {model.input_node.name!r} has no fixed spatial size "
                          f"{tuple(base)}: give the patch sizes explicitly")
    sizes = []
    for factor in np.geomspace(min_factor, max_factor, n_sizes):
        size = tuple(max(1, round(s * factor)) for s in base)
        if size not in sizes:
            sizes.append(size)
    return sizes


def profile_patch_sizes(model: Model, patch_sizes: Sequence[Sequence[int]], batch_size: int = 1,
                        repeats: int = 5, warmup: int = 2, train: bool = True,
                        optimiser: str = 'Adam', progress: bool = True) -> SpeedProfile:
    """Time ``model`` at each of ``patch_sizes`` (spatial sizes in its tag order), each
    snapped to the nearest valid size (sizes met twice are timed once).

    Per size: ``warmup`` untimed runs, then the mean time of ``repeats`` forward passes
    (no gradients) and, when ``train`` and the model has a loss, of training steps with
    ``optimiser`` (on a copy: ``model`` is not changed). Running out of memory ends the
    sweep with a row saying so; a size that fails otherwise gets a row with the error.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ConfigError(f"profiling needs repeats >= 1, warmup >= 0 and batch_size >= 1 "
                          f"(got {repeats}, {warmup}, {batch_size})")
    profile = SpeedProfile(tuple(model.input_node.shape.spatial_tags),
                           tuple(model.prediction_node.shape.spatial_tags), str(model.device))
    seen: set[tuple[int, ...]] = set()
    for desired in tqdm(list(patch_sizes), desc='profile', unit='size', disable=not progress):
        try:
            with _rebuilt(model, tuple(desired)) as copy:
                size = tuple(copy.input_node.shape.spatial_shape)
                if size not in seen:
                    seen.add(size)
                    profile.rows.append(_time_model(copy, size, batch_size, repeats, warmup,
                                                    train and copy.loss_node is not None,
                                                    optimiser))
        except (Error, RuntimeError, MemoryError) as err:  # reported; the sweep goes on
            out_of_memory = _is_out_of_memory(err)
            note = 'out of memory' if out_of_memory else f"{type(err).__name__}: {err}"
            logger.debug("patch size %s: %s", desired, note, exc_info=not out_of_memory)
            profile.rows.append(PatchSpeed(tuple(desired), batch_size, note=note))
            if out_of_memory:
                break
    return profile


@contextlib.contextmanager
def _rebuilt(model: Model, patch_size: tuple[int, ...]) -> Iterator[Model]:
    """A copy of ``model`` at the valid size nearest ``patch_size`` (not the current model;
    its build log quieted), forgotten and its memory freed afterwards; torch.compile's
    caches are reset too, so that each size is compiled afresh and none runs uncompiled
    for having hit the recompilation limit."""
    log_level = logger.level
    logger.setLevel(max(log_level, logging.ERROR))
    try:
        copy = rebuild_model(model, imposed_patch_size=patch_size, make_current=False)
    finally:
        logger.setLevel(log_level)
    try:
        yield copy
    finally:
        model_manager.discard(copy)
        del copy
        gc.collect()
        torch.compiler.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _time_model(model: Model, size: tuple[int, ...], batch_size: int, repeats: int,
                warmup: int, train: bool, optimiser: str) -> PatchSpeed:
    """Mean seconds of a forward pass and of a training step after ``warmup`` runs."""
    timer = Timer(synchronize_cuda=True)
    forward = model.function([model.prediction_node], training=False)
    tensors = forward.to_tensors(*(n.random_value(batch_size) for n in forward.inputs))
    with torch.no_grad():
        output_shape = forward(*tensors)[0].shape
        for i in range(warmup + repeats):
            if i == warmup:
                timer.reset()
            with timer.section('forward'):
                forward(*tensors)
    forward_s = timer.mean('forward')
    del tensors
    train_s = None
    if train:
        step = model.function([model.loss_node, *model.debug_outputs], training=True)
        inputs = [n.random_value(batch_size) for n in step.inputs]
        for i in range(warmup + repeats):
            if i == warmup:
                timer.reset()
            with timer.section('train'):
                model.trainingstep(*inputs, optimiser=optimiser)
        train_s = timer.mean('train')
    shape = model.prediction_node.shape
    batch = output_shape[shape.tag2index('b')] if shape.hasbatch else batch_size
    return PatchSpeed(size, int(batch), tuple(int(output_shape[shape.tag2index(t)])
                                              for t in shape.spatial_tags), forward_s, train_s)


def _is_out_of_memory(err: BaseException | None) -> bool:
    """Whether ``err`` or an error it was raised from is a (CPU or CUDA) allocation failure."""
    while err is not None:
        if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or \
                'out of memory' in str(err).lower() or "can't allocate memory" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
