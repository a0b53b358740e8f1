"""ELEKTRONN2's ``elektronn2.utils.plotting``: training curves, filter tilings, scroll plots.

Plots written to files (``plot_hist``, ``plot_var``, ``plot_debug``, ``plot_regression``,
``plot_kde``, ``plot_exectimes``) are drawn on their own matplotlib figures (no pyplot
state, no window) and saved atomically (temporary file, then rename), next to
``save_name`` with ELEKTRONN2's suffixes (``<save_name>.history.png``, ...).
``scroll_plot``, ``my_quiver`` and ``plot_trainingtarget`` make pyplot figures for
interactive use. For this package's own views see :mod:`.viewer` (volumes with overlays),
:mod:`elektronn2.utils.introspection` (filters, activations) and
:mod:`elektronn2.training.history`.

Arrays: ``timeline`` and ``history`` are record arrays (or
:class:`~elektronn2.utils.utils_basic.AccumulationArray` of records) with ELEKTRONN2's
fields: timeline ``time`` (s), ``loss``, ``batch_char``; history ``steps``, ``time``,
``train_loss``, ``valid_loss``, ``loss_gain``, ``train_err``, ``valid_err``, ``lr``,
``mom``, ``gradnetrate``.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ShapeError

logger = logging.getLogger('elektronn2')

__all__ = ['Scroller', 'scroll_plot', 'embedfilters', 'sma', 'add_timeticks', 'plot_hist',
           'plot_var', 'plot_debug', 'plot_regression', 'plot_kde', 'my_quiver',
           'plot_trainingtarget', 'plot_exectimes']

#: image names shown with a label colour map by the scroll plots
LABEL_NAMES = ('id', 'ids', 'ID', 'IDs', 'seg', 'SEG', 'Seg', 'lab', 'label', 'Label')
_MAX_POINTS = 2000  # curves are subsampled to about this many points


# --- helpers ---------------------------------------------------------------------------------
def new_figure(width: float, height: float):
    """A matplotlib figure of ``width`` x ``height`` inches, outside pyplot (no window)."""
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` via a temporary file (readers never see half a PNG)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, bbox_inches='tight', dpi=80)
    os.replace(tmp, path)
    logger.debug("Wrote %s", path)
    return path


def _records(values) -> np.ndarray:
    """The array of an AccumulationArray (its filled part), or ``values`` as an array."""
    return np.asarray(values.data if hasattr(values, 'data') and hasattr(values, 'append')
                      else values)


def _thinned(values: np.ndarray) -> np.ndarray:
    return values[::max(len(values) // _MAX_POINTS, 1)]


def _cap(values: np.ndarray) -> tuple[float, float]:
    """(floor, cap) of an autoscaled axis: mean ± 2 std of ``values``; floor 0 when all > 0."""
    values = values[np.isfinite(values)]
    if not len(values):
        return 0.0, 1.0
    mean, std = float(values.mean()), float(values.std())
    floor = 0.0 if np.all(values > 0) else mean - 2 * std
    return floor, max(mean + 2 * std, floor + 1e-10)


# --- tilings and curves ---------------------------------------------------------------------
def _tile(stack: np.ndarray, border_width: int, normalize: bool, output_ratio: float) -> np.ndarray:
    """(n, h, w) -> one 2-D float32 image of n tiles in a grid about ``output_ratio`` wide
    per unit height, ``border_width`` zeros between tiles."""
    n, h, w = stack.shape
    n_cols = int(math.ceil(math.sqrt(n * output_ratio)))
    n_rows = int(math.ceil(n / n_cols))
    out = np.zeros((n_rows * (h + border_width), n_cols * (w + border_width)), np.float32)
    for i, tile in enumerate(stack.astype(np.float32)):
        if normalize:
            low = tile.min()
            tile = (tile - low) / (tile.max() + 1e-8 - low)
        row, col = divmod(i, n_cols)
        out[row * (h + border_width):row * (h + border_width) + h,
            col * (w + border_width):col * (w + border_width) + w] = tile
    return out


def embedfilters(filters: np.ndarray, border_width: int = 1, normalize: bool = False,
                 output_ratio: float = 1.0, rgb_axis: int | None = None) -> np.ndarray:
    """An n-D array as one 2-D image of tiles: the last two axes are the tiles' rows and
    columns; leading axes are tiled recursively (innermost first).

    Args:
        filters: (..., h, w), e.g. conv weights (n_f, n_in, kx, ky).
        normalize: scale each tile to [0, 1] (min to max).
        output_ratio: wanted width / height of each grid, in tiles.
        rgb_axis: an axis of size 3 to tile per colour, giving (H, W, 3).
    Returns:
        float32 (H, W) image (or (H, W, 3)); 0 between tiles.
    """
    filters = np.asarray(filters)
    if rgb_axis is not None:
        if filters.shape[rgb_axis] != 3:
            raise ShapeError(f"embedfilters: rgb_axis={rgb_axis} has size "
                             f"{filters.shape[rgb_axis]} in {filters.shape}; it needs 3 colours")
        return np.dstack([embedfilters(np.take(filters, c, axis=rgb_axis), border_width, normalize,
                                       output_ratio) for c in range(3)])
    if filters.ndim < 2:
        raise ShapeError(f"embedfilters needs at least 2 axes (rows, columns), got {filters.shape}")
    if filters.ndim == 2:
        return _tile(filters[None], 0, normalize, output_ratio)
    if filters.ndim > 3:
        filters = np.stack([embedfilters(f, border_width, normalize, output_ratio) for f in filters])
    return _tile(filters, border_width, normalize, output_ratio)


def sma(c: np.ndarray, n: int) -> np.ndarray:
    """Moving average of ``c`` over the last ``n`` values, of ``c``'s length (the first
    n-1 entries average what there is so far); ``n=0`` returns ``c``."""
    if n == 0:
        return c
    c = np.asarray(c, dtype=float)
    total = np.cumsum(c)
    out = total.copy()
    out[n:] = (total[n:] - total[:-n]) / n
    head = min(n, len(c))
    out[:head] = total[:head] / np.arange(1, head + 1)
    return out


def add_timeticks(ax, times: np.ndarray, steps: np.ndarray, time_str: str = 'mins',
                  num: int = 5) -> None:
    """Label the x axis of ``ax`` (plotted over ``steps``) with the run time ``times``
    (in units ``time_str``) at about ``num`` round values."""
    total = int(times[-1])
    magnitude = 10 ** int(math.log10(max(total / num, 1)))
    spacing = max(int(round(total / (num * magnitude))) * magnitude, 1)
    labels = np.arange(0, total, spacing, dtype=int)
    ax.set_xticks(np.interp(labels, times, steps))
    ax.set_xticklabels(labels)
    ax.set_xlim(0, steps[-1])
    ax.set_xlabel(f'Runtime [{time_str}]')


def _runtime_ticks(ax, seconds: np.ndarray, steps: np.ndarray) -> None:
    if seconds[-1] > 120 * 60:
        add_timeticks(ax.twiny(), seconds / 3600, steps, time_str='hours')
    else:
        add_timeticks(ax.twiny(), seconds / 60, steps, time_str='mins')


# --- training curves ---------------------------------------------------------------------------
def plot_hist(timeline, history, save_name: str, loss_smoothing_length: int = 200,
              autoscale: bool = True) -> None:
    """Training curves: ``<save_name>.timeline.png`` (loss per update, smoothed; loss
    against the batch's mean target) and ``<save_name>.history.png`` (training and
    validation loss, loss gain with lr, momentum, errors)."""
    timeline, history = _records(timeline), _records(history)
    if not len(timeline) or not len(history):
        logger.warning("plot_hist: no %s yet, nothing plotted", 'timeline' if not len(timeline)
                       else 'history')
        return
    n_updates = len(timeline)
    steps = np.arange(n_updates)[::max(n_updates // _MAX_POINTS, 1)]
    timeline, history = _thinned(timeline), _thinned(history)
    seconds, loss = timeline['time'].astype(float), timeline['loss'].astype(float)
    runtime = (f"{int(seconds[-1] / 60)} mins" if seconds[-1] < 120 * 60
               else f"{seconds[-1] / 3600:.1f} hours")
    monitored = history['valid_loss'] if np.all(np.isfinite(history['valid_loss'])) \
        else history['train_loss']
    floor, cap = _cap(np.concatenate([monitored[-10:], loss[-200:]]).astype(float))
    recent_mean, recent_std = float(loss[-200:].mean()), float(loss[-200:].std())

    fig = new_figure(16, 12)
    ax = fig.add_subplot(211)
    ax.plot(steps, loss, 'b-', alpha=0.5, label='Update Loss')
    ax.plot(steps, sma(loss, loss_smoothing_length), 'k-', linewidth=3, label='Smooth update Loss')
    for level, style in ((0, 'dashed'), (1, 'dotted'), (-1, 'dotted')):
        ax.axhline(recent_mean + level * recent_std, color='r', linestyle=style)
    if autoscale:
        ax.set_ylim(floor, cap)
        ax.set_xlim(0, n_updates)
    ax.legend(loc=0)
    ax.set_xlabel(f'Update steps {n_updates - 1}, total runtime {runtime}')
    _runtime_ticks(ax, seconds, steps)
    ax = fig.add_subplot(212)
    ax.scatter(timeline['batch_char'], loss, c=1.0 - seconds / max(seconds.max(), 1e-12),
               marker='.', s=80, cmap='gray', edgecolors='face')
    if autoscale:
        ax.set_ylim(floor, cap)
        ax.set_xlim(*_cap(timeline['batch_char'][-200:].astype(float)))
    ax.set_xlabel('Mean target of batch')
    ax.set_ylabel('Loss')
    save_figure(fig, f"{save_name}.timeline.png")

    fig = new_figure(16, 12)
    hist_steps = history['steps']
    ax = fig.add_subplot(311)
    ax.plot(hist_steps, history['train_loss'], 'g-', linewidth=3, label='Train Loss')
    ax.plot(hist_steps, history['valid_loss'], 'r-', linewidth=3, label='Valid Loss')
    if autoscale:
        ax.set_ylim(floor, cap)
        ax.set_xlim(0, hist_steps[-1])
    ax.legend(loc=0)
    _runtime_ticks(ax, seconds, steps)
    ax = fig.add_subplot(312)
    ax.plot(hist_steps, history['loss_gain'], 'b-', linewidth=3, label='Loss Gain at update')
    ax.axhline(0, linestyle='dotted', color='k')
    ax.plot(hist_steps, history['lr'], 'r-', linewidth=3, label='LR')
    ax.legend(loc=3)
    if autoscale:
        spread = float(history['loss_gain'][:5].std()) * 2 if len(history) > 6 else 1.0
        ax.set_ylim(-spread, spread + 1e-10)
    twin = ax.twinx()
    twin.plot(hist_steps, history['mom'], 'r-', label='MOM')
    twin.plot(hist_steps, history['gradnetrate'], 'm-', label='GradNetRate')
    twin.set_ylim(-1, 1)
    twin.legend(loc=4)
    ax = fig.add_subplot(313)
    late = history[2:] if len(history) > 3 else history
    errors = late['valid_err'] if np.all(np.isfinite(late['valid_err'])) else late['train_err']
    for key, colour, label in (('train_err', 'g', 'train error'), ('valid_err', 'r', 'valid error')):
        ax.plot(late['steps'], late[key], f'{colour}--', linewidth=1, label=label.capitalize())
        smooth = sma(late[key], 8)
        if np.all(np.isfinite(smooth)):
            ax.plot(late['steps'], smooth, f'{colour}-', linewidth=3, label=f'Smooth {label}')
    if autoscale:
        ax.set_ylim(*_cap(errors[-200:].astype(float)))
        ax.set_xlim(0, hist_steps[-1])
    ax.grid()
    ax.legend(loc=0)
    ax.set_xlabel(f'Update steps {n_updates - 1}, total runtime {runtime}')
    save_figure(fig, f"{save_name}.history.png")


def _smoothed_band(ax, x: np.ndarray, mean: np.ndarray, std: np.ndarray, title: str) -> None:
    ax.plot(x, mean, 'b-', alpha=0.6)
    ax.plot(x, sma(mean, 100), 'g-', linewidth=3)
    ax.plot(x, sma(mean + std, 100), 'r:', linewidth=2)
    ax.plot(x, sma(mean - std, 100), 'r:', linewidth=2)
    ax.set_title(title)


def plot_var(var: np.ndarray, save_name: str) -> None:
    """Curves of a predicted distribution's spread: ``var`` (n, 5) rows of [step, nll,
    nll std, concentration mean, concentration std] -> ``<save_name>.Beta1.png`` (curves)
    and ``<save_name>.Beta2.png`` (pairwise scatter plots, light = late)."""
    var = np.asarray(var, dtype=float)
    if var.ndim != 2 or var.shape[1] < 5:
        raise ShapeError(f"plot_var needs rows [step, nll, nll std, conc mean, conc std], "
                         f"got shape {var.shape}")
    fig = new_figure(16, 12)
    _smoothed_band(fig.add_subplot(211), var[:, 0], var[:, 1], var[:, 2], 'NLL')
    _smoothed_band(fig.add_subplot(212), var[:, 0], var[:, 3], var[:, 4], 'Concentration')
    save_figure(fig, f"{save_name}.Beta1.png")
    fig = new_figure(12, 12)
    age = 1.0 - var[:, 0] / max(var[-1, 0], 1e-12)
    for k, (x, y, title) in enumerate(((1, 3, 'Concentration vs. NLL'),
                                       (2, 3, 'Concentration vs. NLL.std'),
                                       (3, 4, 'Concentration vs. Concentration.std'),
                                       (1, 2, 'NLL vs. NLL.std'))):
        ax = fig.add_subplot(2, 2, k + 1)
        ax.scatter(var[:, x], var[:, y], c=age, marker='.', s=80, cmap='gray', edgecolors='face')
        ax.set_title(title)
    save_figure(fig, f"{save_name}.Beta2.png")


def plot_debug(var: np.ndarray, debug_output_names: Sequence[str], save_name: str) -> None:
    """Smoothed debug outputs: ``var`` (n, 2 + k) rows of [step, total loss, output 1..k]
    -> ``<save_name>.Debug.png``."""
    var = _thinned(np.asarray(var, dtype=float))
    if var.ndim != 2 or var.shape[1] != 2 + len(debug_output_names):
        raise ShapeError(f"plot_debug: {len(debug_output_names)} names need rows of "
                         f"{2 + len(debug_output_names)} values [step, total, ...], got {var.shape}")
    fig = new_figure(16, 12)
    ax = fig.add_subplot(111)
    curves = [('total loss', sma(var[:, 1], 70))]
    curves += [(name, sma(var[:, i + 2], 70)) for i, name in enumerate(debug_output_names)]
    for i, (name, smooth) in enumerate(curves):
        ax.plot(var[:, 0], smooth, linewidth=4 if i == 0 else 2, label=name,
                **({'color': 'k'} if i == 0 else {'linestyle': '-' if i <= 10 else ':'}))
    recent = np.concatenate([smooth[-100:] for _, smooth in curves])
    recent = recent[np.isfinite(recent)]
    if len(recent):
        ax.set_ylim(recent.min(), max(recent.max() * 1.5, recent.min() + 1e-10))
    ax.set_title('Debug Outputs')
    ax.legend(loc=0)
    ax.axhline(0, linewidth=1, color='k')
    ax.grid()
    save_figure(fig, f"{save_name}.Debug.png")


def plot_regression(pred: np.ndarray, target: np.ndarray, save_name: str,
                    loss_smoothing_length: int = 200, autoscale: bool = True) -> None:
    """Predictions against targets (light = late) with the diagonal ->
    ``<save_name>.regression.png``."""
    pred, target = _thinned(_records(pred)).ravel(), _thinned(_records(target)).ravel()
    if not len(pred) or len(pred) != len(target):
        logger.warning("plot_regression: %d predictions for %d targets, nothing plotted",
                       len(pred), len(target))
        return
    fig = new_figure(8, 8)
    ax = fig.add_subplot(111)
    ax.scatter(pred, target, c=np.arange(len(pred), 0, -1), marker='.', s=80, cmap='gray',
               edgecolors='face')
    low, high = float(min(pred.min(), target.min())), float(max(pred.max(), target.max()))
    ax.plot([low, high], [low, high], 'r:')
    if autoscale:
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
    ax.set_xlabel('Prediction')
    ax.set_ylabel('Target')
    save_figure(fig, f"{save_name}.regression.png")


def plot_kde(pred: np.ndarray, target: np.ndarray, save_name: str, limit: float | str = 90,
             scale: str = 'same', grid: int | Sequence[int] = 50, take_last: int = 4000) -> None:
    """Gaussian kernel density of (prediction, target) pairs -> ``<save_name>.regression_kde.png``.

    Args:
        limit: percentile range shown (limit and 100 - limit), or 'max' for min..max.
        scale: 'same' for one range on both axes.
        grid: density evaluation points per axis.
        take_last: use only the last so many pairs (0: all).
    """
    from scipy import stats
    pred, target = _records(pred), _records(target)
    if take_last:
        pred, target = pred[-take_last:], target[-take_last:]
    pred, target = pred.ravel().astype(float), target.ravel().astype(float)
    if len(pred) < 3 or len(pred) != len(target):
        logger.warning("plot_kde: %d predictions for %d targets, nothing plotted",
                       len(pred), len(target))
        return
    if limit == 'max':
        (p_lo, p_hi), (t_lo, t_hi) = (pred.min(), pred.max()), (target.min(), target.max())
    else:
        p_lo, p_hi = np.percentile(pred, [100 - limit, limit])
        t_lo, t_hi = np.percentile(target, [100 - limit, limit])
    if scale == 'same':
        p_lo = t_lo = min(p_lo, t_lo)
        p_hi = t_hi = max(p_hi, t_hi)
    n_p, n_t = (grid, grid) if isinstance(grid, int) else grid
    pg, tg = np.meshgrid(np.linspace(p_lo, p_hi, n_p), np.linspace(t_lo, t_hi, n_t), indexing='ij')
    density = stats.gaussian_kde(np.vstack([pred, target]))(np.vstack([pg.ravel(), tg.ravel()]))
    density = density.reshape(pg.shape)
    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot(111)
    ax.imshow(np.rot90(density), cmap='gist_earth_r', extent=[p_lo, p_hi, t_lo, t_hi], aspect='auto')
    ax.contour(pg, tg, density)
    ax.plot([t_lo, t_hi], [t_lo, t_hi], 'r:')
    ax.set_xlim(p_lo, p_hi)
    ax.set_ylim(t_lo, t_hi)
    ax.set_xlabel('Prediction')
    ax.set_ylabel('Target')
    save_figure(fig, f"{save_name}.regression_kde.png")


def plot_exectimes(exectimes: Mapping[str, float], save_path: str = '~/exectimes.png',
                   max_items: int = 32) -> None:
    """Bar chart of execution times per node (``Model.measure_exectimes()``: name -> ms);
    the ``max_items`` slowest get their own bar, the rest one '(other nodes)' bar."""
    if not exectimes:
        raise ShapeError("plot_exectimes: no execution times given")
    ranked = sorted(exectimes.items(), key=lambda item: item[1], reverse=True)
    shown = [(name, float(ms)) for name, ms in ranked[:max_items]]
    if len(ranked) > max_items:
        shown.append(('(other nodes)', float(sum(ms for _, ms in ranked[max_items:]))))
    fig = new_figure(13, max(3.0, 0.35 * len(shown) + 1))
    ax = fig.add_subplot(111)
    ax.barh(np.arange(len(shown)), [ms for _, ms in shown], color='#4c72b0')
    ax.set_yticks(np.arange(len(shown)))
    ax.set_yticklabels([name for name, _ in shown])
    ax.invert_yaxis()
    ax.grid(axis='x')
    ax.set_title('Node execution times')
    ax.set_ylabel('Node')
    ax.set_xlabel('Time (in ms)')
    save_figure(fig, save_path)


# --- interactive figures ---------------------------------------------------------------------
class Scroller:
    """Shows slice ``ind`` of 3-D images (z, y, x) or (z, y, x, RGB) in ``axes`` (one per
    image, labelled by ``names``); :meth:`onscroll` (connect it to the figure's
    'scroll_event') moves all of them through z. Images named like labels ('seg', 'lab',
    ...) get a label colour map."""

    def __init__(self, axes, images: Sequence[np.ndarray], names: Sequence[str],
                 init_z: int | None = None):
        self.axes = list(axes)
        self.images = [np.ascontiguousarray(image) for image in images]
        if len(self.axes) != len(self.images) or len(names) < len(self.images):
            raise ShapeError(f"Scroller: {len(self.images)} images need as many axes (got "
                             f"{len(self.axes)}) and names (got {len(names)})")
        self.n_slices = self.images[0].shape[0]
        self.ind = self.n_slices // 2 if init_z is None else int(init_z)
        self.imgs = []
        for ax, image, name in zip(self.axes, self.images, names):
            ax.grid(False)
            cmap = 'nipy_spectral' if name in LABEL_NAMES else 'gray'
            self.imgs.append(ax.imshow(image[self.ind], interpolation='none', cmap=cmap))
            ax.set_xlabel(name)
        self.update()

    def onscroll(self, event) -> None:
        """Scroll wheel: one slice up or down."""
        step = 1 if event.button == 'up' else -1
        self.ind = int(np.clip(self.ind + step, 0, self.n_slices - 1))
        self.update()

    def update(self) -> None:
        """Show slice ``ind`` everywhere."""
        for ax, im, image in zip(self.axes, self.imgs, self.images):
            im.set_data(image[self.ind])
            ax.set_ylabel(f'slice {self.ind}')
        self.axes[0].figure.canvas.draw_idle()


def scroll_plot(images: np.ndarray | Sequence[np.ndarray], names: Sequence[str] | str | None = None,
                init_z: int | None = None) -> Scroller:
    """A pyplot figure browsing 3-D images side by side (4 images: 2 x 2) with the scroll
    wheel; keep the returned :class:`Scroller` referenced while the window is open."""
    import matplotlib.pyplot as plt
    single = isinstance(images, np.ndarray)
    images = [images] if single else list(images)
    if names is None:
        names = [str(i) for i in range(len(images))]
    elif isinstance(names, str):
        names = [names]
    rows, cols = (2, 2) if len(images) == 4 else (1, len(images))
    fig = plt.figure(figsize=(6 * cols, 6 * rows if rows > 1 else (12 if cols == 1 else 6)))
    axes = [fig.add_subplot(rows, cols, 1)]
    axes += [fig.add_subplot(rows, cols, i + 1, sharex=axes[0], sharey=axes[0])
             for i in range(1, len(images))]
    scroller = Scroller(axes, images, names, init_z)
    fig.canvas.mpl_connect('scroll_event', scroller.onscroll)
    fig.tight_layout()
    return scroller


def my_quiver(x: np.ndarray, y: np.ndarray, img: np.ndarray | None = None,
              c: np.ndarray | None = None):
    """A pyplot figure of the vector field (x: vertical, y: horizontal component; the
    first array axis runs down), over ``img`` if given, coloured by ``c``."""
    import matplotlib.pyplot as plt
    figure = plt.figure(figsize=(7, 7))
    if img is not None:
        plt.imshow(img, interpolation='none', alpha=0.22, cmap='gray')
    args = (x, y) if c is None else (x, y, c)
    plt.quiver(*args, angles='xy', units='xy', cmap='spring', pivot='middle', scale=0.5)
    return figure


def plot_trainingtarget(img: np.ndarray, lab: np.ndarray, stride: int = 1) -> np.ndarray:
    """Show a 2-D raw image, its target and (where they fit) an overlay in a pyplot
    figure, to check batches. ``lab`` (h, w) or (h, w, 3) with output ``stride`` is
    enlarged by ``stride`` and centred on ``img``. Returns ``img - lab`` (as shown)."""
    import matplotlib
    import matplotlib.pyplot as plt
    img, lab = np.asarray(img, dtype=float), np.asarray(lab, dtype=float)
    if stride > 1:
        lab = lab.repeat(stride, axis=0).repeat(stride, axis=1)
    if lab.shape[:2] != img.shape[:2]:
        pad = [((i - t) // 2, i - t - (i - t) // 2) for i, t in zip(img.shape[:2], lab.shape[:2])]
        if any(p < 0 for pair in pad for p in pair):
            raise ShapeError(f"plot_trainingtarget: target {lab.shape} (stride {stride}) is larger "
                             f"than the image {img.shape}")
        lab = np.pad(lab, pad + [(0, 0)] * (lab.ndim - 2))
    if lab.ndim == 3:
        img = np.repeat(img[:, :, None], lab.shape[2], axis=2)
    plt.figure(figsize=(18, 6))
    for k, (title, picture) in enumerate((('data', img), ('target', lab),
                                          ('overlay', 0.75 * img + 0.25 * (1 - lab)))):
        plt.subplot(1, 3, k + 1)
        plt.imshow(picture, interpolation='none', cmap='gray')
        plt.title(title)
    if matplotlib.get_backend().lower() != 'agg':
        plt.show()
    return img - lab
