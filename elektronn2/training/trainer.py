"""The Trainer: the training loop behind ``elektronn2-train``.

Each step takes a batch from the background workers and updates the model.
Every ``history_freq`` steps it monitors training and validation loss/errors
(and the model's ``debug_outputs``) into the history, plots and TensorBoard;
every ``param_save_it`` steps it writes a checkpoint; previews are written after
``initial_prev_h`` and then every ``prev_save_h`` hours.

Randomness is a function of the run's ``seed`` and the position alone: training batch
``i`` of ``seed`` (:func:`~elektronn2.data.workers.make_batch`), torch's generator
(dropout) re-seeded from ``(seed, step)`` before each step, monitoring batches from
``(seed, step, source)``. A run resumed from a checkpoint therefore continues exactly
as the uninterrupted run would have (same parameters, bit for bit, on the same machine
and settings).

A step whose loss is not finite is undone: parameters and optimiser state go back to
the last good state (the start, or the last monitoring point with finite values) and
lr is halved. After :data:`.nonfinite.MAX_ROLLBACKS` rollbacks without a new good state the run
stops with a :class:`~elektronn2.errors.TrainingError`; a batch with NaN or Inf input
stops it at once (:class:`~elektronn2.errors.DataError`). No model or checkpoint with
non-finite parameters is ever written.

Ctrl+C (SIGINT) pauses at the next step boundary and opens the interactive shell; a
shell attached through ``elektronn2-shell`` pauses it the same way. Time paused does
not count as training time (``max_runtime``, previews, ``time_h``). A value set by
hand (shell, rollback) is where its schedule continues from
(:meth:`.Schedule.continue_from`).

In data-parallel training (see :mod:`.distributed`) every rank runs a Trainer; only
the chief (rank 0) monitors, writes files and pauses, and the others follow its
decisions.

ELEKTRONN2's surface: ``Trainer(exp_config).run()`` builds the model, the data and the
run directory from the config alone; ``test_model``, ``debug_getcnnbatch``,
``preview_slice``, ``preview_slice_from_traindata`` and ``predict_and_write`` map onto
the monitoring, debug-batch and preview code here; besides ``model-final.mdl`` and the
checkpoints, a run directory holds ``<save_name>-FINAL.mdl``, ``<save_name>-LAST.mdl``
(the newest checkpoint's model) and ``Backup/`` (a copy of the config file).
"""
from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.debug import save_batch_picture, target_geometry
from ..data.rng import seed_of
from ..data.sources import open_source, read_channel_box
from ..data.workers import BackgroundBatches, make_batch
from ..errors import ConfigError, DataError, ModelFileError, TrainingError
from . import checkpoint
from .distributed import SingleProcess
from .experiment import ExperimentConfig, build_data, build_model, check_schedule_targets
from .history import History
from .nonfinite import LR_FACTOR_ON_NAN, MAX_ROLLBACKS, GoodState, check_finite_batch
from .preview import load_preview_volume, preview_options, save_preview
from .rundir import RunDirLock, backup_sources, create_run_dir
from .schedules import Schedule
from .shell import TrainingShell
from .status import LoopTimer, StatusLine, duration

logger = logging.getLogger('elektronn2')

PREVIEW_SHARE = 0.1  # longest preview, as a share of prev_save_h


class Trainer:
    """Trains a model as configured by ``exp_config``, writing into a run directory.

    ``model``, ``data`` and ``run_dir`` are built from the config when not given (as
    ELEKTRONN2's ``Trainer(exp_config)``): the model by ``create_model()`` or
    ``model_load_path``, the data by ``data_class``; the run directory is the one a
    :class:`.trainutils.ExperimentConfig` made, else a new ``save_path/save_name``
    (``-1``, ``-2``, ... if taken), locked until :meth:`run` ends. ``preview_volume``:
    one preview cube (ch, z, y, x) or a list of them (default: ``preview_data_path``).
    ``parallel``: the coordination with other ranks in data-parallel training
    (:class:`~.distributed.DataParallel`); by default the run is a single process.
    """

    def __init__(self, exp_config: ExperimentConfig, model=None, data=None,
                 run_dir: Path | None = None, resume_state: dict | None = None,
                 preview_volume: np.ndarray | Sequence[np.ndarray] | None = None,
                 interactive: bool | None = None, parallel: SingleProcess | None = None):
        exp = self.exp = exp_config
        self.parallel = parallel or SingleProcess()
        self._owned = contextlib.ExitStack()  # the run directory's lock, if this trainer made it
        if model is None:
            if run_dir is None and exp.existing_run_dir() is None:
                exp.check_save_path()   # before the work of building
            exp.apply_execution_settings()
            model = build_model(exp)
            check_schedule_targets(exp, model)
        if data is None:
            data = build_data(exp, model)
        if preview_volume is None and exp.preview_data_path is not None:
            preview_volume = load_preview_volume(exp.preview_data_path, model, exp.preview_kwargs)
        self.model, self.data = model, data
        #: the preview cubes (each ch, z, y, x), or None
        self.preview_data = ([preview_volume] if isinstance(preview_volume, np.ndarray)
                             else list(preview_volume) if preview_volume is not None else None)
        self.preview_options = preview_options(exp.preview_kwargs) if self.preview_data else {}
        try:
            self.run_dir = Path(run_dir) if run_dir is not None else self._open_run_dir()
            self._setup(resume_state, interactive)
        except BaseException:
            self._owned.close()
            raise

    @property
    def exp_config(self) -> ExperimentConfig:
        """The config (ELEKTRONN2's name for :attr:`exp`)."""
        return self.exp

    def _open_run_dir(self) -> Path:
        """The run directory of a trainer built from its config (see the class), locked
        and with the config and sources backed up (as ``elektronn2-train`` does)."""
        run_dir = None
        if self.parallel.is_chief:
            exp = self.exp
            run_dir = exp.existing_run_dir() or create_run_dir(exp.save_path, exp.save_name)
            self._owned.enter_context(RunDirLock(run_dir))
            backup_sources(exp.path, run_dir)
        return Path(self.parallel.from_chief(run_dir))

    def _setup(self, resume_state: dict | None, interactive: bool | None) -> None:
        exp, model = self.exp, self.model
        self.history_freq = exp.history_freq
        self.batch_args = dict(exp.data_batch_args)
        self.step = 0
        self.start_time = time.time()
        self.elapsed_before = 0.0  # seconds trained before a resume
        self.paused_seconds = 0.0  # in the shell, since start_time
        self.timer = LoopTimer()
        self.batch: tuple | None = None
        self.last_monitor: dict = {}
        self.schedules = [Schedule.from_spec(k, v) for k, v in exp.schedules.items()]
        self.history = (History(self.run_dir, tuple(n.name for n in model.debug_outputs))
                        if self.parallel.is_chief else None)
        self.status = StatusLine()
        self.interactive = interactive
        self.next_preview_h = exp.initial_prev_h
        self._diverged: str | None = None   # why the run stops as diverged
        self._interrupted = False
        self._stop = False
        self._share_state = True    # the other ranks take over the chief's state first
        self._debug_batches = 0     # drawn by debug_getcnnbatch
        self.remote = None
        batch_position = 0
        if resume_state is not None:
            batch_position = self._restore(resume_state)
        elif self.parallel.is_chief:
            self._backup_config()
        self._saved_step = self.step
        self._good_state = GoodState(model, self.step)
        self.parallel.wrap(model)
        self.batches = self._start_batches(batch_position)

    def _backup_config(self) -> None:
        """``Backup/`` with a copy of the config file, as ELEKTRONN2's run directories."""
        backup = self.run_dir / 'Backup'
        try:
            backup.mkdir(exist_ok=True)
            shutil.copy2(self.exp.path, backup / self.exp.path.name)
        except OSError as err:
            logger.warning("Config not backed up into %s: %s", backup, err)

    # --- batches ---------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """This rank's seed (the run's ``seed`` on a single process)."""
        return self.parallel.rank_seed(self.exp.seed)

    def _start_batches(self, position: int) -> BackgroundBatches:
        return BackgroundBatches(self.data, self.exp.batch_size,
                                 n_workers=_worker_count(self.exp.background_processes),
                                 batch_kwargs=self.batch_args, seed=self.seed, start=position)

    def restart_batches(self) -> None:
        """Restart the batch workers with the current data object and batch arguments."""
        self.batches.restart(data=self.data, batch_kwargs=self.batch_args)

    # --- variables that schedules and the shell change -----------------------------------
    def get_variable(self, name: str) -> float | list[float]:
        """The value of a schedulable variable; dropout: one rate, or the per-layer list
        where the layers differ."""
        if name == 'dropout':
            rates = [float(r) for r in self.model.dropout_rates]
            return rates[0] if len(set(rates)) == 1 else rates if rates else 0.0
        if name in self.batch_args:
            return self.batch_args[name]
        return getattr(self.model, name)

    def set_variable(self, name: str, value: float | list[float]) -> None:
        if name == 'dropout':
            self.model.dropout_rates = value
        elif name in self.batch_args:
            self.batch_args[name] = value
            self.restart_batches()
        else:
            setattr(self.model, name, value)

    def set_by_hand(self, name: str, value: float) -> str:
        """Set ``name`` from outside the schedules (shell, rollback); its schedule, if any,
        continues from the new value. Returns how it does ('' without a schedule)."""
        self.set_variable(name, value)
        schedule = next((s for s in self.schedules if s.variable == name), None)
        return schedule.continue_from(self.step, self.get_variable(name)) if schedule else ''

    def _follow_hand_changes(self, before: dict) -> None:
        """Schedules continue from the values that shell Python changed (``before``: the
        values when the shell opened)."""
        for schedule in self.schedules:
            value = self.get_variable(schedule.variable)
            rebased = (schedule.start_step, schedule.start_value) == (self.step, value)
            if value != before[schedule.variable] and not rebased:
                logger.info("%s = %s set in the shell: %s", schedule.variable, value,
                            schedule.continue_from(self.step, value))

    # --- the loop ---------------------------------------------------------------------------
    @property
    def runtime(self) -> float:
        """Seconds trained, including before a resume, not counting shell pauses."""
        return self.elapsed_before + time.time() - self.start_time - self.paused_seconds

    def run(self) -> str:
        """Train until n_steps, max_runtime or 'kill'; returns the reason."""
        chief = self.parallel.is_chief
        previous_handler = signal.signal(signal.SIGINT,
                                         self._on_sigint if chief else signal.SIG_IGN)
        self.timer.restart()
        try:
            while True:
                reason, share_state = self.parallel.agree(
                    self._stop_reason() if chief else None, self._share_state)
                if share_state:
                    self.parallel.share_state(self)
                    self._share_state = False
                if reason is not None:
                    break
                self._train_one_step()
            if reason == 'diverged':
                raise TrainingError(self._diverged or "the loss is not finite (on rank 0)")
            if chief:
                self.status.clear()
                logger.info("Training ends (%s) at step %d after %.2f h", reason, self.step,
                            self.runtime / 3600)
                self.save_checkpoint()
                final = self.model.save(self.run_dir / 'model-final.mdl')
                checkpoint.alias(final, self.run_dir / f"{self.exp.save_name}-FINAL.mdl")
        except Exception:   # keep the steps since the last checkpoint (if finite)
            self._save_progress()
            raise
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            self.close()
        return reason

    def close(self) -> None:
        """Release what the trainer holds (batch workers, history files, the remote shell,
        the run directory's lock if it made the directory); :meth:`run` does at its end."""
        self.batches.close()
        if self.history is not None:
            self.history.close()
        if self.remote is not None:
            self.remote.close()
        self._owned.close()

    def _stop_reason(self) -> str | None:
        """Why training ends now ('n_steps', 'max_runtime', 'kill' from the shell), or None;
        a pending pause is taken first."""
        while True:
            if self._diverged is not None:
                return 'diverged'
            if self.step >= self.exp.n_steps:
                return 'n_steps'
            if self.runtime > self.exp.max_runtime:
                return 'max_runtime'
            if not (self._interrupted or (self.remote is not None and self.remote.pending())):
                return None
            self._pause()
            self._share_state = True
            if self._stop:
                return 'kill'

    def _on_sigint(self, signum, frame) -> None:
        if self._interrupted:  # a second Ctrl+C while waiting: stop waiting for the batch
            raise KeyboardInterrupt
        self._interrupted = True

    def _train_one_step(self) -> None:
        waiting_since = time.monotonic()
        try:
            self.batch = self.batches.next()
        except KeyboardInterrupt:
            self._interrupted = True
            return
        wait_seconds = time.monotonic() - waiting_since
        check_finite_batch(self.batch, self.batches.position - 1, self.model.target_node,
                           f"{type(self.data).__name__}.getbatch")
        torch.manual_seed(seed_of(self.seed, 1, self.step))
        loss, seconds, _ = self.model.trainingstep(*self.batch, optimiser=self.exp.optimiser)
        loss = self.parallel.mean(loss)
        if not math.isfinite(loss):
            if self.parallel.is_chief:
                self._recover_from_nonfinite(loss)
            return
        self.step += 1
        for schedule in self.schedules:
            value = schedule.value_at(self.step, self.get_variable(schedule.variable))
            if value is not None:
                self.set_variable(schedule.variable, value)
        if not self.parallel.is_chief:
            return
        if self.step % self.history_freq == 0 or self.step == 1:
            self.monitor()
        if self.step % self.exp.param_save_it == 0:
            self.save_checkpoint()
        if self.preview_data and self.runtime / 3600 >= self.next_preview_h:
            self.preview()
            self.next_preview_h = self.runtime / 3600 + self.exp.prev_save_h  # no catch-up
        self.timer.step_done(wait_seconds)
        self.status.update(self.status_text())

    def status_text(self) -> str:
        """Losses, errors, lr; steps/s of the whole loop (data wait, monitoring, ...) and
        of the training step alone; ETA; the share of time spent waiting for data."""
        m, rate = self.model, self.timer.steps_per_s
        step_rate = 1.0 / m.time_per_step if m.time_per_step > 0 else None
        out = m.prediction_node.shape if m.prediction_node is not None else None
        voxels = self.exp.batch_size * (out.spatial_size or 1) if out is not None else 0
        left = None if rate is None else min((self.exp.n_steps - self.step) / rate,
                                             self.exp.max_runtime - self.runtime)
        return (f"step {self.step:>7d}/{self.exp.n_steps}"
                f"  loss {_fmt(m.recent_losses[-1] if m.recent_losses else None, '.4f')}"
                f"  smooth {_fmt(m.loss_smooth, '.4f')}"
                f"  train_err {_fmt(self.last_monitor.get('train_err'), '.3f')}"
                f"  valid_err {_fmt(self.last_monitor.get('valid_err'), '.3f')}  lr {m.lr:.2e}"
                f"  {_fmt(rate, '.2f')} steps/s  ETA {'-' if left is None else duration(left)}"
                f"  data wait {_fmt(self.timer.wait_fraction, '.0%')}"
                f"  step alone {_fmt(step_rate, '.2f')}/s"
                f"  {_fmt(rate and voxels * rate / 1e6, '.2f')} MVx/s")

    # --- monitoring, previews, checkpoints ------------------------------------------------
    def _evaluate(self, source: str) -> dict:
        """Mean loss, errors and debug outputs on monitor_batch_size examples of ``source``."""
        m = self.model
        error_node = m.error_node or next((n for n in m.prediction_ext if n.is_error), None)
        nodes = [m.loss_node] + ([error_node] if error_node is not None else []) + m.debug_outputs
        fn = m.function(nodes, training=False)
        sums: dict = {}
        remaining = self.exp.monitor_batch_size
        chunk = 0
        while remaining > 0:
            n = min(remaining, self.exp.batch_size)
            batch = make_batch(self.data, n, source, self.batch_args,
                               (self.seed, 2, self.step, ('train', 'valid').index(source), chunk))
            chunk += 1
            for node, value in zip(nodes, fn.numpy(*batch[:len(fn.inputs)])):
                sums[node.name] = sums.get(node.name, 0.0) + float(np.mean(value)) * n
            remaining -= n
        values = {k: v / self.exp.monitor_batch_size for k, v in sums.items()}
        result = {f"{source}_loss": values[m.loss_node.name]}
        if error_node is not None:
            result[f"{source}_err"] = values[error_node.name]
        if source == 'train':
            result.update({n.name: values[n.name] for n in m.debug_outputs})
        return result

    def monitor(self) -> dict:
        """Append a history row (train and valid loss/errors), redraw plots, keep good params."""
        row = {'step': self.step, 'time_h': self.runtime / 3600, 'loss_smooth': self.model.loss_smooth,
               'lr': self.model.lr, 'mom': self.model.mom, 'wd': self.model.wd,
               'steps_per_s': self.timer.steps_per_s or math.nan,
               'data_wait_fraction': self.batches.stats.wait_fraction}
        row.update(self._evaluate('train'))
        try:
            row.update(self._evaluate('valid'))
        except DataError as err:
            logger.debug("No validation monitoring: %s", err)
        self.history.append(row)
        self.history.plot(self.run_dir)
        self.batches.reset_stats()
        self.last_monitor = row
        if math.isfinite(row['train_loss']):
            self._good_state.record(self.step)
        return row

    def preview(self) -> list[Path]:
        """Write preview PNGs of the preview cubes now. A preview never ends the run: a
        failure, Ctrl+C during it or running over :data:`PREVIEW_SHARE` of ``prev_save_h``
        stops it with a one-line warning (traceback at debug level)."""
        if not self.preview_data:
            logger.warning("No preview_data_path configured")
            return []
        in_shell = self._interrupted   # from the shell: only a new Ctrl+C stops it
        try:
            return self._write_previews(
                None, self.preview_data, self.model, **self.preview_options,
                should_stop=lambda: self._interrupted and not in_shell,
                max_seconds=PREVIEW_SHARE * self.exp.prev_save_h * 3600)
        except (Exception, KeyboardInterrupt) as err:   # a second Ctrl+C raises the latter
            self._interrupted |= isinstance(err, KeyboardInterrupt)
            self.status.clear()
            logger.warning("Preview of step %d not written (training continues): %s: %s",
                           self.step, type(err).__name__, err)
            logger.debug("Preview failure", exc_info=True)
            return []

    def _write_previews(self, name: str | None, cubes: Sequence[np.ndarray], node,
                        export_class='all', max_z_pred: int = 5,
                        should_stop=lambda: False, max_seconds: float = math.inf) -> list[Path]:
        """:func:`.save_preview` of each cube with ``node`` (or a model) into ``previews/``,
        all within ``max_seconds``; files ``<name>[_cube<i>]_class<c>.png`` (``name``
        None: ``preview_step<step>``)."""
        deadline = time.monotonic() + max_seconds
        written: list[Path] = []
        for i, cube in enumerate(cubes):
            label = name if len(cubes) == 1 else f"{name or f'preview_step{self.step:09d}'}_cube{i}"
            written += save_preview(node, cube, self.run_dir / 'previews', self.step,
                                    export_class, max_z_pred, should_stop,
                                    deadline - time.monotonic(), name=label)
        return written

    # --- ELEKTRONN2's trainer methods -------------------------------------------------------
    def test_model(self, data_source: str = 'valid') -> tuple[float, float]:
        """(loss, error) on ``monitor_batch_size`` examples of ``data_source`` ('train' or
        'valid'), as at a monitoring point (error as a fraction, NaN without an error
        node); (NaN, NaN) with a warning when the data has no such examples."""
        if data_source not in ('train', 'valid'):
            raise ConfigError(f"test_model: data_source {data_source!r} must be 'train' or "
                              f"'valid'")
        try:
            values = self._evaluate(data_source)
        except DataError as err:
            logger.warning("test_model(%r): no batch (%s)", data_source, err)
            return math.nan, math.nan
        return values[f"{data_source}_loss"], values.get(f"{data_source}_err", math.nan)

    def debug_getcnnbatch(self) -> tuple:
        """A new training batch (outside the training stream, which it leaves as it is),
        drawn into ``Batch_test_image.png`` in the run directory (:meth:`debug_batch`)."""
        self._debug_batches += 1
        batch = make_batch(self.data, self.exp.batch_size, 'train', self.batch_args,
                           (self.seed, 3, self.step, self._debug_batches))
        self.debug_batch(self.run_dir / 'Batch_test_image.png', batch)
        return batch

    def preview_slice(self, number=0, export_class='all', max_z_pred: int = 5) -> list[Path]:
        """Previews of the preview cubes now, named ``preview_<number>``; errors are raised
        (the previews during training, :meth:`preview`, only log them)."""
        if not self.preview_data:
            raise ConfigError("preview_slice needs preview data: set preview_data_path in the "
                              "config")
        options = preview_options({'export_class': export_class, 'max_z_pred': max_z_pred})
        return self._write_previews(f"preview_{number}", self.preview_data, self.model, **options)

    def preview_slice_from_traindata(self, cube_i: int = 0, off: Sequence[int] = (0, 0, 0),
                                     sh: Sequence[int] = (10, 400, 400), number=0,
                                     export_class='all') -> list[Path]:
        """Previews of the box at ``off`` of shape ``sh`` (z, y, x) of training cube
        ``cube_i``, named ``preview_<number>_train<cube_i>`` (:meth:`predict_and_write`)."""
        image = self._training_cube(cube_i)
        lo = np.asarray(off, dtype=int)
        raw = read_channel_box(image, lo, lo + np.asarray(sh, dtype=int))
        return self.predict_and_write(self.model.prediction_node, raw, number, export_class,
                                      block_name=f"train{cube_i}", z_thick=int(sh[0]))

    def _training_cube(self, index: int):
        """Training cube ``index`` of the data as a volume source (z, y, x or c, z, y, x)."""
        data = self.data
        if hasattr(data, 'train_cubes'):      # BatchCreatorImage
            cubes = [data.cubes[i].image for i in data.train_cubes]
        elif getattr(data, 'train_d', None) is not None:
            cubes = [open_source(np.asarray(d)) for d in data.train_d]
        else:
            raise ConfigError(f"{type(self.data).__name__} has no training cubes to preview")
        if not 0 <= index < len(cubes):
            raise ConfigError(f"cube_i={index}: there are {len(cubes)} training cubes "
                              f"(0..{len(cubes) - 1})")
        return cubes[index]

    def predict_and_write(self, pred_node, raw_img: np.ndarray, number=0, export_class='all',
                          block_name: str = '', z_thick: int = 5) -> list[Path]:
        """Previews of the central ``z_thick`` slices of ``raw_img`` ((ch,) z, y, x)
        predicted by ``pred_node`` (a node or a model), named
        ``preview_<number>[_<block_name>]``."""
        raw = np.asarray(raw_img)
        options = preview_options({'export_class': export_class, 'max_z_pred': z_thick})
        name = f"preview_{number}" + (f"_{block_name}" if str(block_name) else '')
        return self._write_previews(name, [raw[None] if raw.ndim == 3 else raw], pred_node,
                                    **options)

    def save_checkpoint(self) -> Path | None:
        scaler = self.model.grad_scaler
        state = {'step': self.step, 'runtime': self.runtime, 'history_rows': len(self.history.rows),
                 'next_preview_h': self.next_preview_h, 'history_freq': self.history_freq,
                 'batch_args': self.batch_args, 'batch_position': self.batches.position,
                 'recent_losses': list(self.model.recent_losses),
                 'schedules': {s.variable: s.state() for s in self.schedules},
                 'grad_scaler': scaler.state_dict() if scaler is not None else None}
        try:
            path = checkpoint.save(self.run_dir, self.model, state)
        except ModelFileError as err:
            logger.error("%s", err)
            return None
        checkpoint.alias(path / 'model.mdl', self.run_dir / f"{self.exp.save_name}-LAST.mdl")
        self._saved_step = self.step
        logger.debug("Checkpoint %s", path)
        return path

    def _save_progress(self) -> None:
        """After a fatal error: a checkpoint of the steps since the last one."""
        if self.parallel.is_chief and self.step > self._saved_step:
            self.save_checkpoint()

    def _restore(self, state: dict) -> int:
        """Take over a checkpoint's trainer state; returns the index of the next batch."""
        self.step = int(state['step'])
        self.elapsed_before = float(state['runtime'])
        self.next_preview_h = float(state['next_preview_h'])
        self.history_freq = int(state['history_freq'])
        self.batch_args.update(state['batch_args'])
        for schedule in self.schedules:
            schedule.load_state(state['schedules'].get(schedule.variable, {}))
        params = list(self.model.loss_node.all_trainable_params.values())
        self.model.optimisers.load_state_dict(state['optimisers'], params)
        self.model.iterations = int(state['iterations'])
        self.model.elapsed_time = float(state['elapsed_time'])
        self.model.restore_recent_losses(state.get('recent_losses', []))  # older: none
        if state.get('grad_scaler'):
            self.model.grad_scaler = torch.amp.GradScaler(self.model.device.type)
            self.model.grad_scaler.load_state_dict(state['grad_scaler'])
        checkpoint.set_rng_state(state['rng'])
        if self.history is not None:
            self.history.truncate_after(self.step)
            self.last_monitor = dict(self.history.rows[-1]) if self.history.rows else {}
        logger.info("Resumed %s at step %d", self.run_dir, self.step)
        return int(state.get('batch_position', self.step))  # older checkpoints: approximate

    # --- non-finite losses -----------------------------------------------------------------
    def _recover_from_nonfinite(self, loss: float) -> None:
        """Undo the step (back to the last good state, lr halved) or, when that has been
        tried :data:`MAX_ROLLBACKS` times, mark the run as diverged."""
        self.status.clear()
        good = self._good_state
        if good.exhausted:
            tried = (f"after {good.rollbacks} rollbacks with lr lowered to {self.model.lr:.3g}"
                     if good.saved is not None else "and no finite parameters to return to")
            self._diverged = (f"loss {loss} at step {self.step} {tried}: training diverged. "
                              f"Lower optimiser_params['lr'] or check the data for extreme "
                              f"values; no model with non-finite parameters was saved")
            logger.error("%s", self._diverged)
            return
        lr = self.model.lr
        good_step = good.restore()
        note = self.set_by_hand('lr', lr * LR_FACTOR_ON_NAN)
        self._share_state = True
        logger.warning("Loss %s at step %d: parameters rolled back to step %d, lr lowered to "
                       "%.3g (rollback %d of %d)%s", loss, self.step, good_step,
                       self.model.lr, good.rollbacks, MAX_ROLLBACKS, note and f"; {note}")
        if self._is_interactive():
            self._interrupted = True

    def _is_interactive(self) -> bool:
        import sys
        return self.interactive if self.interactive is not None else sys.stdin.isatty()

    # --- the shell --------------------------------------------------------------------------
    def _pause(self) -> None:
        """The shell until it continues or kills; its time does not count as training."""
        self.status.clear()
        paused_at = time.time()
        before = {s.variable: self.get_variable(s.variable) for s in self.schedules}
        shell = TrainingShell(self)
        if self.remote is not None and self.remote.pending():
            action = self.remote.serve(shell)
        elif self._is_interactive():
            action = shell.run_local()
        else:
            logger.warning("Interrupted without a terminal: saving and stopping")
            action = 'kill'
        self._interrupted = False
        self._follow_hand_changes(before)
        self.paused_seconds += time.time() - paused_at
        self.timer.restart()
        if action == 'kill':
            self._stop = True

    def debug_batch(self, path: Path | None = None, batch: tuple | None = None) -> Path:
        """Save a picture of ``batch`` (default: the current one): image, target, overlay;
        the targets lie where the prediction's offsets and strides put them."""
        if batch is None:
            if self.batch is None:
                self.batch = self.batches.next()
            batch = self.batch
        path = path or self.run_dir / f"debug_batch_step{self.step}.png"
        save_batch_picture(batch[0], batch[1], path,
                           **target_geometry(self.model.prediction_node, batch[0].ndim - 2))
        return Path(path)


def _worker_count(background_processes: bool | int) -> int:
    """Batch worker processes of the setting: True is ELEKTRONN2's default of 2."""
    if background_processes is True:
        return 2
    return int(background_processes)


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, '-' when unknown (None or NaN)."""
    return '-' if value is None or value != value else format(value, spec)
