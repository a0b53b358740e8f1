"""Training history: monitoring rows in ``history.csv``, PNG plots, TensorBoard scalars.

One row per monitoring point (every ``history_freq`` steps). The CSV is appended
and flushed row by row, so a killed run keeps everything up to its last row;
plots are redrawn atomically (temporary file + rename).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

BASE_COLUMNS = ('step', 'time_h', 'loss_smooth', 'train_loss', 'train_err', 'valid_loss',
                'valid_err', 'lr', 'mom', 'wd', 'steps_per_s', 'data_wait_fraction')


class History:
    """Rows of monitoring values; ``extra_columns`` are custom targets (debug outputs)."""

    def __init__(self, run_dir: Path, extra_columns: tuple[str, ...] = (), tensorboard: bool = True):
        self.path = Path(run_dir) / 'history.csv'
        self.columns = BASE_COLUMNS + tuple(extra_columns)
        self.rows: list[dict] = []
        if self.path.exists():
            with open(self.path, newline='') as f:
                self.rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
            for row in self.rows:
                row['step'] = int(row['step'])
        else:
            with open(self.path, 'w', newline='') as f:
                csv.writer(f).writerow(self.columns)
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(str(Path(run_dir) / 'tensorboard'))

    def append(self, row: dict) -> None:
        row = {k: row.get(k, math.nan) for k in self.columns}
        self.rows.append(row)
        with open(self.path, 'a', newline='') as f:
            csv.writer(f).writerow([row[k] for k in self.columns])
        if self._writer is not None:
            for key, value in row.items():
                if key != 'step' and np.isfinite(value):
                    self._writer.add_scalar(key, value, int(row['step']))
            self._writer.flush()

    def truncate_after(self, step: int) -> None:
        """Drop rows after ``step`` (resuming from a checkpoint taken at ``step``)."""
        self.rows = [r for r in self.rows if r['step'] <= step]
        tmp = self.path.with_suffix('.csv.tmp')
        with open(tmp, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows([[r.get(k, math.nan) for k in self.columns] for r in self.rows])
        os.replace(tmp, self.path)

    def column(self, key: str) -> np.ndarray:
        return np.array([r.get(key, math.nan) for r in self.rows], dtype=float)

    def plot(self, out_dir: Path) -> list[Path]:
        """Write loss.png, errors.png, timeline.png (and custom.png for extra columns)."""
        if len(self.rows) < 1:
            return []
        import matplotlib
        matplotlib.use('Agg', force=False)
        import matplotlib.pyplot as plt
        step = self.column('step')
        figures = {
            'loss': [('loss_smooth', 'training (smoothed)'), ('train_loss', 'training'),
                     ('valid_loss', 'validation')],
            'errors': [('train_err', 'training'), ('valid_err', 'validation')],
            'timeline': [('lr', 'learning rate'), ('time_h', 'hours'),
                         ('steps_per_s', 'steps/s'), ('data_wait_fraction', 'waiting for data')],
        }
        extra = [c for c in self.columns if c not in BASE_COLUMNS]
        if extra:
            figures['custom'] = [(c, c) for c in extra]
        written = []
        for name, curves in figures.items():
            fig, axes = plt.subplots(len(curves) if name == 'timeline' else 1, 1, squeeze=False,
                                     figsize=(7, 2.2 * len(curves) if name == 'timeline' else 4))
            for i, (key, label) in enumerate(curves):
                ax = axes[i if name == 'timeline' else 0, 0]
                values = self.column(key)
                if np.isfinite(values).any():
                    ax.plot(step, values, label=label, marker='.' if len(step) < 30 else None)
                if name == 'timeline':
                    ax.set_ylabel(label)
                if name == 'loss' and np.all(values[np.isfinite(values)] > 0):
                    ax.set_yscale('log')
            axes[-1, 0].set_xlabel('step')
            if name != 'timeline':
                if axes[0, 0].get_legend_handles_labels()[0]:  # nothing finite: no legend
                    axes[0, 0].legend()
                axes[0, 0].set_title(name)
            fig.tight_layout()
            target = Path(out_dir) / f"{name}.png"
            tmp = target.with_name(f".{target.name}.tmp.png")
            fig.savefig(tmp, dpi=80)
            plt.close(fig)
            os.replace(tmp, target)
            written.append(target)
        return written

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
