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
lr is halved. After :data:`MAX_ROLLBACKS` rollbacks without a new good state the run
stops with a :class:`~elektronn2.errors.TrainingError`; a batch with NaN or Inf input
stops it at once (:class:`~elektronn2.errors.DataError`). No model or checkpoint with
non-finite parameters is ever written.

Ctrl+C (SIGINT) pauses at the next step boundary and opens the interactive shell; a
shell attached through ``elektronn2-shell`` pauses it the same way.

In data-parallel training (see :mod:`.distributed`) every rank runs a Trainer; only
the chief (rank 0) monitors, writes files and pauses, and the others follow its
decisions.
"""
from __future__ import annotations

import copy
import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch

from ..data.rng import seed_of
from ..data.workers import BackgroundBatches, make_batch
from ..errors import DataError, ModelFileError, TrainingError
from . import checkpoint
from .distributed import SingleProcess
from .experiment import ExperimentConfig
from .history import History
from .preview import load_preview_volume, save_preview
from .schedules import Schedule
from .status import StatusLine

logger = logging.getLogger('elektronn2')

LR_FACTOR_ON_NAN = 0.5
MAX_ROLLBACKS = 3   # rollbacks to one good state before the run stops as diverged


class Trainer:
    """Trains ``model`` on ``data`` as configured by ``exp``, writing into ``run_dir``.

    ``parallel``: the coordination with other ranks in data-parallel training
    (:class:`~.distributed.DataParallel`); by default the run is a single process.
    """

    def __init__(self, exp: ExperimentConfig, model, data, run_dir: Path,
                 resume_state: dict | None = None, preview_volume: np.ndarray | None = None,
                 interactive: bool | None = None, parallel: SingleProcess | None = None):
        self.exp, self.model, self.data = exp, model, data
        self.parallel = parallel or SingleProcess()
        self.run_dir = Path(run_dir)
        self.history_freq = exp.history_freq
        self.batch_args = dict(exp.data_batch_args)
        self.step = 0
        self.start_time = time.time()
        self.elapsed_before = 0.0  # seconds trained before a resume
        self.batch: tuple | None = None
        self.last_monitor: dict = {}
        self.schedules = [Schedule.from_spec(k, v) for k, v in exp.schedules.items()]
        self.history = (History(self.run_dir, tuple(n.name for n in model.debug_outputs))
                        if self.parallel.is_chief else None)
        self.status = StatusLine()
        self.interactive = interactive
        if preview_volume is None and exp.preview_data_path is not None:
            preview_volume = load_preview_volume(exp.preview_data_path)
        self.preview_volume = preview_volume
        self.next_preview_h = exp.initial_prev_h
        self._rollbacks = 0         # since the last good state
        self._diverged: str | None = None   # why the run stops as diverged
        self._interrupted = False
        self._stop = False
        self._share_state = True    # the other ranks take over the chief's state first
        self.remote = None
        batch_position = 0
        if resume_state is not None:
            batch_position = self._restore(resume_state)
        self._saved_step = self.step
        self._good_state = self._snapshot() if self._params_finite() else None
        self.parallel.wrap(model)
        self.batches = self._start_batches(batch_position)

    # --- batches ---------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """This rank's seed (the run's ``seed`` on a single process)."""
        return self.parallel.rank_seed(self.exp.seed)

    def _start_batches(self, position: int) -> BackgroundBatches:
        return BackgroundBatches(self.data, self.exp.batch_size,
                                 n_workers=int(self.exp.background_processes),
                                 batch_kwargs=self.batch_args, seed=self.seed, start=position)

    def restart_batches(self) -> None:
        """Restart the batch workers with the current data object and batch arguments."""
        self.batches.restart(data=self.data, batch_kwargs=self.batch_args)

    # --- variables that schedules and the shell change -----------------------------------
    def get_variable(self, name: str) -> float:
        if name == 'dropout':
            rates = self.model.dropout_rates
            return float(rates[0]) if rates else 0.0
        if name in self.batch_args:
            return self.batch_args[name]
        return getattr(self.model, name)

    def set_variable(self, name: str, value: float) -> None:
        if name == 'dropout':
            self.model.dropout_rates = value
        elif name in self.batch_args:
            self.batch_args[name] = value
            self.restart_batches()
        else:
            setattr(self.model, name, value)

    # --- the loop ---------------------------------------------------------------------------
    @property
    def runtime(self) -> float:
        """Seconds trained, including before a resume."""
        return self.elapsed_before + time.time() - self.start_time

    def run(self) -> str:
        """Train until n_steps, max_runtime or 'kill'; returns the reason."""
        chief = self.parallel.is_chief
        previous_handler = signal.signal(signal.SIGINT,
                                         self._on_sigint if chief else signal.SIG_IGN)
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
                self.model.save(self.run_dir / 'model-final.mdl')
        except Exception:   # keep the steps since the last checkpoint (if finite)
            self._save_progress()
            raise
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            self.batches.close()
            if self.history is not None:
                self.history.close()
            if self.remote is not None:
                self.remote.close()
        return reason

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
        try:
            self.batch = self.batches.next()
        except KeyboardInterrupt:
            self._interrupted = True
            return
        self._check_finite_batch(self.batch, self.batches.position - 1)
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
        if self.preview_volume is not None and self.runtime / 3600 >= self.next_preview_h:
            self.preview()
            self.next_preview_h += self.exp.prev_save_h
        self.status.update(self.status_text())

    def _check_finite_batch(self, batch: tuple, index: int) -> None:
        """A DataError naming the first NaN/Inf of a floating-point array in ``batch``."""
        for i, array in enumerate(batch):
            if (isinstance(array, np.ndarray) and np.issubdtype(array.dtype, np.floating)
                    and not np.isfinite(array).all()):
                position = tuple(int(v) for v in np.argwhere(~np.isfinite(array))[0])
                raise DataError(
                    f"training batch {index} from {type(self.data).__name__}.getbatch: array "
                    f"{i} ({'input' if i == 0 else 'target' if i == 1 else 'extra'}, shape "
                    f"{array.shape}) holds {np.count_nonzero(~np.isfinite(array))} NaN/Inf "
                    f"values, the first at index {position}; training on it would make the "
                    f"parameters NaN. Check the data files (or clean them with np.nan_to_num)")

    def status_text(self) -> str:
        m = self.model
        steps_per_s = 1.0 / m.time_per_step if m.time_per_step > 0 else math.nan
        out = m.prediction_node.shape if m.prediction_node is not None else None
        voxels = self.exp.batch_size * (out.spatial_size or 1) if out is not None else 0
        return (f"step {self.step:>7d}  loss {m._last_losses[-1] if m._last_losses else math.nan:.4f}"
                f"  smooth {m.loss_smooth:.4f}  train_err {self.last_monitor.get('train_err', math.nan):.3f}"
                f"  valid_err {self.last_monitor.get('valid_err', math.nan):.3f}  lr {m.lr:.2e}"
                f"  {steps_per_s:.2f} it/s  {voxels * steps_per_s / 1e6:.2f} MVx/s")

    # --- monitoring, previews, checkpoints ------------------------------------------------
    def _evaluate(self, source: str) -> dict:
        """Mean loss, errors and debug outputs on monitor_batch_size examples of ``source``."""
        m = self.model
        error_node = m.error_node or next((n for n in m.prediction_ext
                                           if type(n).__name__ == 'Errors'), None)
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
               'steps_per_s': 1.0 / self.model.time_per_step,
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
        if math.isfinite(row['train_loss']) and self._params_finite():
            self._good_state = self._snapshot()
            self._rollbacks = 0
        return row

    def preview(self) -> list:
        """Write preview PNGs of the preview volume now."""
        if self.preview_volume is None:
            logger.warning("No preview_data_path configured")
            return []
        kwargs = {k: v for k, v in self.exp.preview_kwargs.items() if k in ('export_class', 'max_z_pred')}
        return save_preview(self.model, self.preview_volume, self.run_dir / 'previews', self.step, **kwargs)

    def save_checkpoint(self) -> Path | None:
        scaler = self.model.grad_scaler
        state = {'step': self.step, 'runtime': self.runtime, 'history_rows': len(self.history.rows),
                 'next_preview_h': self.next_preview_h, 'history_freq': self.history_freq,
                 'batch_args': self.batch_args, 'batch_position': self.batches.position,
                 'recent_losses': list(self.model._last_losses),
                 'schedules': {s.variable: s.state() for s in self.schedules},
                 'grad_scaler': scaler.state_dict() if scaler is not None else None}
        try:
            path = checkpoint.save(self.run_dir, self.model, state)
        except ModelFileError as err:
            logger.error("%s", err)
            return None
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
        self.model._last_losses.extend(state.get('recent_losses', []))  # older checkpoints: none
        if state.get('grad_scaler'):
            self.model.grad_scaler = torch.amp.GradScaler(self.model.device.type)
            self.model.grad_scaler.load_state_dict(state['grad_scaler'])
        checkpoint.set_rng_state(state['rng'])
        if self.history is not None:
            self.history.truncate_after(self.step)
        logger.info("Resumed %s at step %d", self.run_dir, self.step)
        return int(state.get('batch_position', self.step))  # older checkpoints: approximate

    # --- non-finite losses -----------------------------------------------------------------
    def _params_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.all_params().values())

    def _snapshot(self) -> dict:
        return {'step': self.step,
                'params': {k: p.detach().clone() for k, p in self.model.all_params().items()},
                'optimisers': copy.deepcopy(self.model.optimisers.state_dict())}

    def _recover_from_nonfinite(self, loss: float) -> None:
        """Undo the step (back to the last good state, lr halved) or, when that has been
        tried :data:`MAX_ROLLBACKS` times, mark the run as diverged."""
        self.status.clear()
        if self._good_state is None or self._rollbacks >= MAX_ROLLBACKS:
            tried = (f"after {self._rollbacks} rollbacks with lr lowered to {self.model.lr:.3g}"
                     if self._good_state is not None else "and no finite parameters to return to")
            self._diverged = (f"loss {loss} at step {self.step} {tried}: training diverged. "
                              f"Lower optimiser_params['lr'] or check the data for extreme "
                              f"values; no model with non-finite parameters was saved")
            logger.error("%s", self._diverged)
            return
        self._rollbacks += 1
        lowered_lr = self.model.lr * LR_FACTOR_ON_NAN
        with torch.no_grad():
            for key, param in self.model.all_params().items():
                param.copy_(self._good_state['params'][key])
        params = list(self.model.loss_node.all_trainable_params.values())
        self.model.optimisers.load_state_dict(copy.deepcopy(self._good_state['optimisers']), params)
        self.model.lr = lowered_lr    # after the optimiser state, which holds an lr too
        self._share_state = True
        logger.warning("Loss %s at step %d: parameters rolled back to step %d, lr lowered to "
                       "%.3g (rollback %d of %d)", loss, self.step, self._good_state['step'],
                       self.model.lr, self._rollbacks, MAX_ROLLBACKS)
        if self._is_interactive():
            self._interrupted = True

    def _is_interactive(self) -> bool:
        import sys
        return self.interactive if self.interactive is not None else sys.stdin.isatty()

    # --- the shell --------------------------------------------------------------------------
    def _pause(self) -> None:
        from .shell import TrainingShell
        self.status.clear()
        shell = TrainingShell(self)
        if self.remote is not None and self.remote.pending():
            action = self.remote.serve(shell)
        elif self._is_interactive():
            action = shell.run_local()
        else:
            logger.warning("Interrupted without a terminal: saving and stopping")
            action = 'kill'
        self._interrupted = False
        if action == 'kill':
            self._stop = True

    def debug_batch(self, path: Path | None = None) -> Path:
        """Save a picture of the current batch (image, target, overlay)."""
        from ..data.debug import save_batch_picture
        if self.batch is None:
            self.batch = self.batches.next()
        path = path or self.run_dir / f"debug_batch_step{self.step}.png"
        save_batch_picture(self.batch[0], self.batch[1], path)
        return Path(path)
