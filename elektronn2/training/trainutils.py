"""ELEKTRONN2's ``elektronn2.training.trainutils``: schedules, the history tracker, the
experiment config, the training shell and the evaluation of binary classifiers.

The old names map onto this package where the concept lives here:

* ``Schedule`` -> :class:`elektronn2.training.schedules.Schedule` (bound to a variable
  with ``bind_variable`` and driven by ``update(step)`` at ``next_update``);
* ``ExperimentConfig`` -> :class:`elektronn2.training.experiment.ExperimentConfig`, plus
  the run directory ELEKTRONN2 made for it (a new ``save_name-N`` instead of overwriting);
* ``user_input`` -> :class:`elektronn2.training.shell.TrainingShell`;
* ``HistoryTracker`` keeps ELEKTRONN2's in-memory records and plots them with
  :mod:`elektronn2.utils.plotting` (the trainer's own is :mod:`.history`).

Binary evaluation: labels are 0/1 with -1 for "ignore"; predictions are probabilities of
class 1. Arrays may be given as one array or a list of arrays (e.g. one per cube).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import change_logging_file
from ..data.image import center_cubes, optimise_segmentation
from ..errors import ConfigError, ShapeError
from ..utils import plotting
from ..utils.utils_basic import AccumulationArray, h5load, h5save, pickleload, picklesave
from . import experiment as _experiment
from . import schedules as _schedules
from .rundir import create_run_dir
from .shell import TrainingShell

logger = logging.getLogger('elektronn2')

__all__ = ['user_input', 'Schedule', 'loadhistorytracker', 'HistoryTracker', 'ExperimentConfig',
           'confusion_table', 'performance_measure', 'roc_area', 'eval_thresh', 'find_nearest',
           'evaluate', 'error_hist', 'rescale_fudge', 'binary_nll', 'evaluate_model_binary']

LOSS_SMOOTHING_LENGTH = 200  # ELEKTRONN2's config.loss_smoothing_length


# --- the shell ----------------------------------------------------------------------------------
def user_input(local_vars: dict) -> str:
    """The training shell on this terminal for the trainer ``local_vars['self']``
    (:class:`~elektronn2.training.shell.TrainingShell`); returns 'q' (continue) or 'kill'."""
    if 'self' not in local_vars:
        raise ConfigError("user_input needs local_vars['self'], the paused trainer")
    action = TrainingShell(local_vars['self']).run_local()
    return 'kill' if action == 'kill' else 'q'


# --- schedules ---------------------------------------------------------------------------------
class Schedule:
    """How a variable changes with the training step, in ELEKTRONN2's forms:

    * ``Schedule(dec=0.95)``: multiply by 0.95 every 1000 steps;
    * ``Schedule(updates=[(500, 0.8), (1000, 0.7)])``: set values at steps;
    * ``Schedule(lindec=[4000, 0.001])``: from 0.001 down to 0 over 4000 steps, in steps
      of 1000.

    ``bind_variable(obj=model, prop_name='lr')`` (or ``variable_param=`` an object with
    ``get_value``/``set_value``) says what it changes; the training loop calls
    ``update(step)`` when ``step == next_update`` (-1: nothing more to do).
    """

    def __init__(self, **kwargs):
        self._schedule = _schedules.Schedule.from_spec('variable', dict(kwargs))
        self.mode = ('mult' if self._schedule.dec is not None else
                     'lin' if self._schedule.lindec is not None else 'set')
        self.factor = self._schedule.dec if self._schedule.dec is not None else 1.0
        self.variable_getter: Callable[[], Any] | None = None
        self.variable_setter: Callable[[Any], None] | None = None
        self._target: str | None = None
        self.next_update = self._next_after(0)

    @property
    def update_steps(self) -> list[int]:
        return [step for step, _ in self._schedule.updates]

    def _next_after(self, step: int) -> int:
        interval = _schedules.DEC_INTERVAL
        if self.mode == 'set':
            later = [s for s in self.update_steps if s > step]
            return later[0] if later else -1
        following = (step // interval + 1) * interval
        if self.mode == 'lin' and following > self._schedule.lindec[0]:
            return -1
        return following

    def bind_variable(self, variable_param=None, obj=None, prop_name: str | None = None) -> None:
        """Drive ``variable_param`` (``get_value``/``set_value``) or ``obj.<prop_name>``."""
        if variable_param is not None and hasattr(variable_param, 'get_value'):
            self.variable_getter, self.variable_setter = (variable_param.get_value,
                                                          variable_param.set_value)
            self._target = getattr(variable_param, 'name', 'variable')
        elif obj is not None and prop_name is not None:
            if not hasattr(obj, prop_name):
                raise ConfigError(f"Schedule.bind_variable: {type(obj).__name__} has no "
                                  f"attribute {prop_name!r}")
            self.variable_getter = lambda: getattr(obj, prop_name)
            self.variable_setter = lambda value: setattr(obj, prop_name, value)
            self._target = prop_name
        else:
            raise ConfigError("Schedule.bind_variable needs variable_param (with get_value and "
                              "set_value) or obj and prop_name")
        self._schedule.variable = self._target

    def update(self, iteration: int) -> None:
        """Apply the schedule at step ``iteration`` and advance ``next_update``."""
        if self.variable_getter is None:
            raise ConfigError("Schedule.update before bind_variable: say what it changes")
        value = self._schedule.value_at(iteration, self.variable_getter())
        if value is not None:
            self.variable_setter(value)
        self.next_update = self._next_after(iteration)

    def __repr__(self) -> str:
        return (f"Schedule for {self._target}: mode={self.mode}, factor={self.factor:g}, "
                f"next update={self.next_update}")


# --- history -------------------------------------------------------------------------------------
TIMELINE_FIELDS = dict(names=['time', 'loss', 'batch_char'], formats=['f4'] * 3)
HISTORY_FIELDS = dict(names=['steps', 'time', 'train_loss', 'valid_loss', 'loss_gain', 'train_err',
                             'valid_err', 'lr', 'mom', 'gradnetrate'], formats=['i4'] + ['f4'] * 9)


def loadhistorytracker(file_name: str | os.PathLike) -> HistoryTracker:
    """A :class:`HistoryTracker` read from ``file_name`` (``<save_name>.history.pkl``)."""
    tracker = HistoryTracker()
    tracker.load(file_name)
    return tracker


class HistoryTracker:
    """ELEKTRONN2's training records in memory: ``timeline`` (per update: time, loss,
    batch_char), ``history`` (per monitoring point: steps, time, train_loss, valid_loss,
    loss_gain, train_err, valid_err, lr, mom, gradnetrate), optional debug outputs and
    (prediction, target) pairs of regressions."""

    def __init__(self):
        self.debug_outputs: AccumulationArray | None = None
        self.regression_track: list[AccumulationArray] | None = None
        self.debug_output_names: list[str] | None = None
        self.timeline = AccumulationArray(n_init=1000, dtype=TIMELINE_FIELDS)
        self.history = AccumulationArray(n_init=100, dtype=HISTORY_FIELDS)

    def update_timeline(self, vals: Sequence[float]) -> None:
        self.timeline.append(vals)

    def register_debug_output_names(self, names: Sequence[str]) -> None:
        self.debug_output_names = list(names)

    def update_history(self, vals: Sequence[float]) -> None:
        self.history.append(vals)

    def update_debug_outputs(self, vals: Sequence[float]) -> None:
        if self.debug_outputs is None:
            self.debug_outputs = AccumulationArray(n_init=1000, right_shape=len(vals))
        self.debug_outputs.append(vals)

    def update_regression(self, pred: Sequence[float], target: Sequence[float]) -> None:
        if len(pred) != len(target):
            raise ShapeError(f"update_regression: {len(pred)} predictions for {len(target)} targets")
        if self.regression_track is None:
            self.regression_track = [AccumulationArray(n_init=1000, right_shape=len(pred))
                                     for _ in range(2)]
        self.regression_track[0].append(pred)
        self.regression_track[1].append(target)

    def save(self, save_name: str) -> None:
        """Pickle the records to ``<save_name>.history.pkl``."""
        picklesave([self.timeline, self.history, self.debug_outputs, self.debug_output_names,
                    self.regression_track], save_name + '.history.pkl')

    def load(self, file_name: str | os.PathLike) -> None:
        (self.timeline, self.history, self.debug_outputs, self.debug_output_names,
         self.regression_track) = pickleload(file_name)

    def plot(self, save_name: str | None = None, autoscale: bool = True, close: bool = True) -> None:
        """Write ``0-<save_name>.timeline.png``, ``.history.png`` (and ``.Debug.png``,
        ``.regression.png``, ``.regression_kde.png`` when there are such records).
        ``close`` is accepted for ELEKTRONN2's signature (figures are never left open)."""
        save_name = '0-' + (save_name or 'history')
        plotting.plot_hist(self.timeline, self.history, save_name, LOSS_SMOOTHING_LENGTH, autoscale)
        if self.debug_output_names and self.debug_outputs is not None and len(self.debug_outputs):
            plotting.plot_debug(self.debug_outputs.data, self.debug_output_names, save_name)
        if self.regression_track:
            plotting.plot_regression(*self.regression_track, save_name)
            plotting.plot_kde(*self.regression_track, save_name)


# --- the experiment config --------------------------------------------------------------------
class ExperimentConfig(_experiment.ExperimentConfig):
    """A training config file, read and checked by
    :class:`elektronn2.training.experiment.ExperimentConfig`, with ELEKTRONN2's run
    directory: ``save_path`` becomes ``<save_path>/<save_name>`` (``-1``, ``-2``, ... if
    taken; never overwritten), holding ``0-<config file>``, ``Backup/`` (with a copy of
    ``host_script_file``) and the log ``0-<save_name>.log``. ``use_existing_dir`` skips
    making it."""

    def __init__(self, exp_file: str | os.PathLike, host_script_file: str | None = None,
                 use_existing_dir: bool = False):
        super().__init__(exp_file)
        self.exp_file = str(self.path)
        self.host_script_file = host_script_file
        self.use_existing_dir = use_existing_dir
        if use_existing_dir:
            self.save_path = os.path.join(self.save_path, self.save_name)
        else:
            self.make_dir()
        change_logging_file(logging.getLogger('elektronn2'), self.save_path,
                            f"0-{self.save_name}.log")

    def existing_run_dir(self) -> Path:
        """ELEKTRONN2's configs make their run directory: ``save_path``."""
        return Path(self.save_path)

    def make_dir(self) -> None:
        """Create the run directory and back the config (and host script) up into it."""
        run_dir = create_run_dir(self.save_path, self.save_name)
        if run_dir.name != self.save_name:
            logger.warning("%s exists; this run goes to %s", Path(self.save_path) / self.save_name,
                           run_dir)
        self.save_path = str(run_dir)
        (run_dir / 'Backup').mkdir(mode=0o755)
        shutil.copy(self.exp_file, run_dir / f"0-{Path(self.exp_file).name}")
        if self.host_script_file:
            shutil.copy(self.host_script_file, run_dir / 'Backup' / Path(self.host_script_file).name)


# --- evaluation of binary classifiers -----------------------------------------------------------
def _as_list(arrays) -> list[np.ndarray]:
    return [np.asarray(a) for a in arrays] if isinstance(arrays, (list, tuple)) else [np.asarray(arrays)]


def confusion_table(labs, preds) -> tuple[int, int, int, int]:
    """(true positives, true negatives, false positives, false negatives) of 0/1
    predictions against labels (-1: ignored); pairs of arrays or lists of arrays."""
    tp = tn = fp = fn = 0
    for lab, pred in zip(_as_list(labs), _as_list(preds)):
        known = lab >= 0
        lab, pred = lab[known].astype(bool), np.asarray(pred)[known].astype(bool)
        tp += int(np.count_nonzero(lab & pred))
        tn += int(np.count_nonzero(~lab & ~pred))
        fp += int(np.count_nonzero(~lab & pred))
        fn += int(np.count_nonzero(lab & ~pred))
    return tp, tn, fp, fn


def performance_measure(tp: int, tn: int, fp: int, fn: int) -> tuple[float, ...]:
    """(tpr, fpr, precision, recall, balanced accuracy, accuracy, f1) of a confusion table;
    rates of empty classes are 0, precision without positive predictions 1."""
    tpr = tp / (tp + fn) if tp + fn else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tpr
    accuracy = (tp + tn) / (tp + tn + fp + fn) if tp + tn + fp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return tpr, fpr, precision, recall, 0.5 * (tpr + tnr), accuracy, f1


def roc_area(tpr: np.ndarray, fpr: np.ndarray) -> float:
    """Area under a curve given over increasing thresholds (e.g. the ROC curve: tpr over
    fpr), by the trapezoid rule."""
    return float(np.trapezoid(np.asarray(tpr)[::-1], np.asarray(fpr)[::-1]))


def eval_thresh(args: tuple) -> tuple[float, ...]:
    """:func:`performance_measure` of ``preds >= thresh`` for ``args = (thresh, labs,
    preds)``; prints accuracy, precision, recall and F1."""
    thresh, labs, preds = args
    classes = [p >= thresh for p in _as_list(preds)]
    perf = performance_measure(*confusion_table(labs, classes))
    print(f"thresh={thresh:.2f}, acc={perf[5]:.4f}, prec={perf[2]:.4f}, recall={perf[3]:.4f}, "
          f"F1={perf[6]:.4f}")
    return perf


def find_nearest(array: np.ndarray, value: float):
    """The entry of ``array`` closest to ``value``."""
    array = np.asarray(array)
    return array[np.abs(array - value).argmin()]


def evaluate(gt, preds, save_name: str, thresh: float | None = None,
             n_proc: int | None = None) -> tuple[float, float, float]:
    """Scan 64 thresholds of ``preds`` (probabilities) against ``gt`` (0/1, -1 ignored),
    plot F1, accuracy, precision-recall and ROC to ``<save_name>.performance.png``.

    ``thresh`` (e.g. tuned on validation data) picks the threshold reported (the nearest
    scanned one); default: the one of best accuracy. ``n_proc`` > 2 scans in 6 processes.
    Returns (accuracy at the threshold, ROC area, threshold).
    """
    threshs = np.linspace(0, 1, 64)
    jobs = list(zip(threshs, repeat(gt), repeat(preds)))
    print("Scanning for best probmap THRESHOLD")
    if n_proc and n_proc > 2:
        with multiprocessing.get_context('forkserver').Pool(6) as pool:
            perf = np.array(pool.map(eval_thresh, jobs)).T
    else:
        perf = np.array([eval_thresh(job) for job in jobs]).T
    thresh = float(find_nearest(threshs, thresh) if thresh else threshs[perf[5].argmax()])
    at = int(np.argmin(np.abs(threshs - thresh)))
    area, pr_area = roc_area(perf[0], perf[1]), roc_area(perf[2], perf[3])
    fig = plotting.new_figure(12, 9)
    for k, (x, y, title, xlabel, ylabel) in enumerate((
            (threshs, perf[6], f"F1={perf[6, at]:.2f} at {thresh:.4f}", 'Classifier Threshold', ''),
            (threshs, perf[5], f"Accuracy max={perf[5, at]:.2f} at {thresh:.4f}",
             'Classifier Threshold', ''),
            (perf[3], perf[2], f"Precision-Recall AUC={pr_area:.4f}", 'Recall', 'Precision'),
            (perf[1], perf[0], f"ROC AUC={area:.4f}", 'False Positive Rate', 'True Positive Rate'))):
        ax = fig.add_subplot(2, 2, k + 1)
        ax.plot(x, y)
        if k < 2:
            ax.axvline(thresh, color='gray')
        if k < 3:
            ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    plotting.save_figure(fig, f"{save_name}.performance.png")
    return float(perf[5, at]), area, thresh


def error_hist(gt: np.ndarray, preds: np.ndarray, save_name: str, thresh: float = 0.42) -> None:
    """Histograms (log counts) of the predicted probabilities of class 1, for all voxels
    and by ground truth, with the threshold -> ``<save_name>.error_histogram.png``."""
    gt, preds = np.asarray(gt), np.asarray(preds)
    n_bins = int(max(1, min(500, preds.size / 3)))
    total, edges = np.histogram(preds.ravel(), bins=n_bins, range=(0, 1))
    centres = 0.5 * (edges[:-1] + edges[1:])
    fig = plotting.new_figure(12, 9)
    ax = fig.add_subplot(111)
    ax.plot(centres, total, 'k', label='total')
    positives = np.histogram(preds[gt == 1], bins=n_bins, range=(0, 1))[0]
    ax.plot(centres, positives, 'g', label='pos GT label')
    ax.plot(centres, np.histogram(preds[gt == 0], bins=n_bins, range=(0, 1))[0], 'r',
            label='neg GT label')
    ax.axvline(thresh, color='gray')
    ax.legend(loc=9)
    ax.set_yscale('log')
    ax.set_xlim(0, 1)
    ax.set_title('Error Histogram')
    plotting.save_figure(fig, f"{save_name}.error_histogram.png")


def rescale_fudge(pred: np.ndarray, fudge: float = 0.15) -> np.ndarray:
    """Clip probabilities to [fudge, 1 - fudge] and stretch that range to [0, 1]
    (in place for float arrays; returns the result)."""
    np.clip(pred, fudge, 1 - fudge, out=pred)
    pred -= fudge
    pred *= 1.0 / (1 - 2 * fudge)
    return pred


def binary_nll(pred, gt) -> float:
    """Class-balanced negative log-likelihood of probabilities ``pred`` for labels ``gt``
    (0/1, or soft): -(mean(gt log p) + mean((1 - gt) log(1 - p))) / 2, a term of zero
    weight counting 0. Lists of arrays give the mean over the pairs."""
    if isinstance(pred, (list, tuple)):
        return float(np.mean([binary_nll(p, g) for p, g in zip(pred, gt)]))
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    with np.errstate(divide='ignore', invalid='ignore'):
        positive = np.where(np.isclose(gt, 0), 0.0, gt * np.log(pred))
        negative = np.where(np.isclose(gt, 1), 0.0, (1 - gt) * np.log(1 - pred))
    return float(-0.5 * (positive.mean() + negative.mean()))


def _predictions(model, name: str, part: str, raws, labels, betaloss: bool):
    """Probability maps of class 1 (or the mode with ``betaloss``) of every raw cube, read
    from / cached in ``2-<name>_<part>_<i>_pred.h5``, cropped with their labels to equal
    shape; labels binarised."""
    preds, gts = [], []
    for i, (raw, lab) in enumerate(zip(raws, labels)):
        cache = f"2-{name}_{part}_{i}_pred.h5"
        if os.path.exists(cache):
            pred = h5load(cache)
        else:
            pred = model.predict_dense(raw, pad_raw=False)
            h5save(pred, cache)
        lab, pred = center_cubes(np.asarray(lab)[0], pred[0 if betaloss else 1], crop=True)
        preds.append(pred)
        gts.append(lab > 0.5)
    return preds, gts


def evaluate_model_binary(model, name: str, data=None, valid_d=None, valid_l=None, train_d=None,
                          train_l=None, n_proc: int = 2, betaloss: bool = False,
                          fudgeysoft: bool = False) -> None:
    """Evaluate a 2-class model on (at most 4) training and on the validation cubes.

    Cubes are ``data.train_d``/``train_l``/``valid_d``/``valid_l`` unless given: raw
    (c, *spatial), labels (1, *spatial). Predictions are cached in
    ``2-<name>_{train,valid}_<i>_pred.h5``; :func:`evaluate` and :func:`error_hist`
    write ``1-<name>_{train,valid}.*.png``; the validation cubes are segmented
    (:func:`elektronn2.data.image.optimise_segmentation`). The summary (NLL, accuracy,
    ROC area, their train - valid gaps, the segmentations' adapted Rand errors and their
    mean) goes to ``0-<name>-REPORT.txt``.
    """
    if model.prediction_node.shape['f'] != 2:
        logger.warning("evaluate_model_binary is meant for binary classification; this model "
                       "predicts %d classes", model.prediction_node.shape['f'])
    train_d = data.train_d if train_d is None else train_d
    train_l = data.train_l if train_l is None else train_l
    valid_d = data.valid_d if valid_d is None else valid_d
    valid_l = data.valid_l if valid_l is None else valid_l
    if not len(valid_l):
        raise ConfigError("evaluate_model_binary: there is no validation data")
    report = ("T_nll,\tT_acc,\tT_ROCA,\tV_nll,\tV_acc,\tV_ROCA,\td_acc,\td_ROCA,\tri0,\tr01,\tri2,"
              "\tri3,\trim\n")
    scores = {}
    for part, raws, labels in (('train', train_d[:4], train_l[:4]), ('valid', valid_d, valid_l)):
        preds, gts = _predictions(model, name, part, raws, labels, betaloss)
        accuracy, area, thresh = evaluate(gts, preds, f"1-{name}_{part}")
        gt_flat = np.concatenate([g.ravel() for g in gts])
        pred_flat = np.concatenate([p.ravel() for p in preds]).astype(np.float64)
        nll = binary_nll(rescale_fudge(pred_flat.copy()) if fudgeysoft else pred_flat, gt_flat)
        print(f"{part.capitalize()} nll {nll:.3f}")
        error_hist(gt_flat, pred_flat, f"1-{name}_{part}", thresh=thresh)
        scores[part] = (nll, accuracy, area, preds, gts)
    (t_nll, t_acc, t_area, _, _), (v_nll, v_acc, v_area, preds, gts) = scores['train'], scores['valid']
    report += f"{t_nll:.3f},\t{t_acc:.3f},\t{t_area:.3f},\t"
    report += f"{v_nll:.3f},\t{v_acc:.3f},\t{v_area:.3f},\t{t_acc - v_acc:.3f},\t{t_area - v_area:.3f},\t"
    errors = []
    for i, (gt, pred) in enumerate(zip(gts, preds)):
        pred = rescale_fudge(pred.astype(np.float64)) if betaloss or fudgeysoft else pred
        _, best, _ = optimise_segmentation(gt.astype(np.uint8), (np.clip(pred, 0, 1) * 255).astype(np.uint8),
                                           f"2-{name}_valid_{i}", n_proc=n_proc)
        errors.append(best)
    errors.append(float(np.mean(errors)))
    report += ''.join(f"{e:.4f},\t" for e in errors)
    with open(f"0-{name}-REPORT.txt", 'w') as f:
        f.write(report)
