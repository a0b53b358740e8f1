"""Browse 3-D volumes slice by slice: several arrays side by side, with overlays.

:class:`VolumeViewer` (matplotlib) shows one z slice of each volume; the mouse wheel and
the keys below move through z for all of them together. Volumes are ``(z, y, x)`` or
multichannel ``(c, z, y, x)``. An overlay per volume is drawn on top: integer arrays as
labels (one colour per id, 0 transparent), float arrays as predictions (colour map, opacity
growing with the value).

Keys: ``up``/``down`` one slice, ``pageup``/``pagedown`` ten slices, ``n``/``N`` next/
previous channel, ``t`` overlays on/off.

``elektronn2-view VOLUME [--key KEY] [--overlay PATH] [--save PNG]`` (:func:`main`) shows
a volume file, optionally with a prediction or labels on top; ``--save`` writes the
picture instead of opening a window (no display needed). Given the OME-Zarr output of
``elektronn2-segment``, it shows the raw data, the prediction and the segmentation
together, found through the inputs each step recorded (:mod:`.segmentation_view`).
See ``docs/viewer.rst``.

:func:`view_in_napari` opens the same arrays in napari when it is installed
(``pip install napari[all]``); :mod:`.segmentation_view` shows a segmentation with its
prediction and raw data (napari, neuroglancer or this viewer).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

import numpy as np

from ..console import run_script
from ..errors import ConfigError, DataError
from .optional import import_optional

logger = logging.getLogger('elektronn2')

Z_STEPS = {'up': 1, 'down': -1, 'pageup': 10, 'pagedown': -10}
HELP = "wheel / up, down: z ±1   pageup, pagedown: z ±10   n, N: channel   t: overlays"
BACKENDS = ('auto', 'matplotlib', 'napari', 'neuroglancer')


def _as_list(arrays) -> list:
    if arrays is None:
        return []
    if isinstance(arrays, np.ndarray) or hasattr(arrays, 'shape'):
        return [np.asarray(arrays)]
    return [None if a is None else np.asarray(a) for a in arrays]


def _with_channels(volume: np.ndarray, index: int) -> np.ndarray:
    """``(z, y, x)`` -> ``(1, z, y, x)``; ``(c, z, y, x)`` unchanged."""
    if volume.ndim == 3:
        return volume[None]
    if volume.ndim == 4:
        return volume
    raise DataError(f"Volume #{index} has shape {volume.shape}; the viewer takes (z, y, x) or "
                    f"(c, z, y, x) arrays (select or squeeze other axes first)")


def _is_labels(overlay: np.ndarray) -> bool:
    return np.issubdtype(overlay.dtype, np.integer) or overlay.dtype == bool


def label_colours(ids: np.ndarray, alpha: float) -> np.ndarray:
    """RGBA per voxel: a fixed pseudo-random hue per id, 0 transparent."""
    ids = np.asarray(ids).astype(np.int64)
    hue = (ids * 0.618033988749895) % 1.0
    phase = 2 * np.pi * (hue[..., None] + np.array([0.0, 1 / 3, 2 / 3]))
    rgba = np.empty(ids.shape + (4,), np.float32)
    rgba[..., :3] = 0.5 + 0.5 * np.cos(phase)
    rgba[..., 3] = np.where(ids != 0, alpha, 0.0)
    return rgba


class VolumeViewer:
    """Side-by-side z-slice viewer of 3-D volumes with optional overlays.

    Args:
        volumes: one array or a list; each ``(z, y, x)`` or ``(c, z, y, x)``, all with the
            same number of z slices.
        overlays: one per volume (None for none): integer labels or float predictions
            of the volume's ``(z, y, x)`` shape.
        titles: one per volume.
        overlay_alpha: opacity of label overlays (and the maximum for predictions).
        z: first slice shown (default the middle).
        figsize: matplotlib figure size in inches (default: from the volumes' aspect).
    """

    def __init__(self, volumes, overlays=None, titles: Sequence[str] | None = None,
                 overlay_alpha: float = 0.4, z: int | None = None,
                 figsize: tuple[float, float] | None = None):
        import matplotlib.pyplot as plt
        self.volumes = [_with_channels(v, i) for i, v in enumerate(_as_list(volumes))]
        if not self.volumes:
            raise DataError("VolumeViewer needs at least one volume")
        self.overlays = self._checked_overlays(_as_list(overlays))
        self.titles = list(titles) if titles else [f"volume {i}" for i in range(len(self.volumes))]
        if len(self.titles) != len(self.volumes):
            raise DataError(f"{len(self.titles)} titles for {len(self.volumes)} volumes")
        depths = {v.shape[1] for v in self.volumes}
        if len(depths) != 1:
            raise DataError(f"Volumes have different numbers of z slices "
                            f"{[v.shape[1] for v in self.volumes]}; crop or pad them to one size")
        self.n_z = depths.pop()
        self.overlay_alpha = overlay_alpha
        self.show_overlays = True
        self._z = self.n_z // 2 if z is None else int(np.clip(z, 0, self.n_z - 1))
        self._channel = 0
        self._ranges = [[self._display_range(channel) for channel in v] for v in self.volumes]
        n = len(self.volumes)
        aspect = max(v.shape[3] / v.shape[2] for v in self.volumes)
        default_size = (n * min(8.0, max(3.0, 4.0 * aspect)), 4.8)
        self.figure, axes = plt.subplots(1, n, figsize=figsize or default_size, squeeze=False)
        self.axes = list(axes[0])
        self.figure.suptitle(HELP, fontsize=8)
        self.images, self.overlay_images = [], []
        for i, ax in enumerate(self.axes):
            ax.set_axis_off()
            self.images.append(ax.imshow(self._slice(i), cmap='gray', clim=self._range(i),
                                         interpolation='nearest'))
            overlay = self._overlay_rgba(i)
            self.overlay_images.append(
                None if overlay is None else ax.imshow(overlay, interpolation='nearest'))
        self._disconnect_default_keys()
        self.figure.canvas.mpl_connect('scroll_event', self._on_scroll)
        self.figure.canvas.mpl_connect('key_press_event', self._on_key)
        self._update_titles()

    # --- set-up ---------------------------------------------------------------------------
    def _checked_overlays(self, overlays: list) -> list:
        if not overlays:
            return [None] * len(self.volumes)
        if len(overlays) != len(self.volumes):
            raise DataError(f"{len(overlays)} overlays for {len(self.volumes)} volumes; give one "
                            f"per volume (None where there is none)")
        for i, (overlay, volume) in enumerate(zip(overlays, self.volumes)):
            if overlay is not None and overlay.shape != volume.shape[1:]:
                raise DataError(f"Overlay #{i} has shape {overlay.shape}, its volume "
                                f"{volume.shape[1:]} (z, y, x); they must be equal")
        return overlays

    @staticmethod
    def _display_range(channel: np.ndarray) -> tuple[float, float]:
        """Grey-value limits of one ``(z, y, x)`` channel: its 0.5 and 99.5 percentiles."""
        sample = channel[::max(1, len(channel) // 16)]
        low, high = np.percentile(sample, [0.5, 99.5])
        return float(low), float(high if high > low else low + 1)

    def _disconnect_default_keys(self) -> None:
        """Stop matplotlib's default key bindings (e.g. 'left' = back) from acting too."""
        manager = self.figure.canvas.manager
        if manager is not None and getattr(manager, 'key_press_handler_id', None) is not None:
            self.figure.canvas.mpl_disconnect(manager.key_press_handler_id)

    # --- state ---------------------------------------------------------------------------
    @property
    def z(self) -> int:
        return self._z

    @z.setter
    def z(self, value: int) -> None:
        self._z = int(np.clip(value, 0, self.n_z - 1))
        self.redraw()

    @property
    def channel(self) -> int:
        return self._channel

    @channel.setter
    def channel(self, value: int) -> None:
        self._channel = int(value) % max(v.shape[0] for v in self.volumes)
        self.redraw()

    # --- drawing -------------------------------------------------------------------------
    def _shown_channel(self, i: int) -> int:
        return min(self._channel, self.volumes[i].shape[0] - 1)

    def _slice(self, i: int) -> np.ndarray:
        return self.volumes[i][self._shown_channel(i), self._z]

    def _range(self, i: int) -> tuple[float, float]:
        return self._ranges[i][self._shown_channel(i)]

    def _overlay_rgba(self, i: int) -> np.ndarray | None:
        overlay = self.overlays[i]
        if overlay is None:
            return None
        plane = overlay[self._z]
        if _is_labels(plane):
            rgba = label_colours(plane, self.overlay_alpha)
        else:
            from matplotlib import colormaps
            value = np.clip(np.nan_to_num(plane.astype(np.float32)), 0, 1)
            rgba = colormaps['autumn'](value).astype(np.float32)
            rgba[..., 3] = self.overlay_alpha * value
        if not self.show_overlays:
            rgba[..., 3] = 0
        return rgba

    def _update_titles(self) -> None:
        for i, ax in enumerate(self.axes):
            channels = self.volumes[i].shape[0]
            channel = f", c {self._shown_channel(i)}/{channels - 1}" if channels > 1 else ''
            ax.set_title(f"{self.titles[i]}\nz {self._z}/{self.n_z - 1}{channel}", fontsize=9)

    def redraw(self) -> None:
        """Show the current slice and channel in every panel."""
        for i, image in enumerate(self.images):
            image.set_data(self._slice(i))
            image.set_clim(*self._range(i))
            if self.overlay_images[i] is not None:
                self.overlay_images[i].set_data(self._overlay_rgba(i))
        self._update_titles()
        self.figure.canvas.draw_idle()

    # --- events ---------------------------------------------------------------------------
    def _on_scroll(self, event) -> None:
        self.z = self._z + (1 if event.button == 'up' else -1)

    def _on_key(self, event) -> None:
        if event.key in Z_STEPS:
            self.z = self._z + Z_STEPS[event.key]
        elif event.key == 'n':
            self.channel = self._channel + 1
        elif event.key == 'N':
            self.channel = self._channel - 1
        elif event.key == 't':
            self.show_overlays = not self.show_overlays
            self.redraw()

    # --- output --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, dpi: int = 100) -> None:
        """Write the current view to an image file (format from the suffix)."""
        self.figure.savefig(path, dpi=dpi)

    def show(self, block: bool = True) -> None:
        """Open the window (needs an interactive matplotlib backend)."""
        import matplotlib.pyplot as plt
        plt.show(block=block)

    def close(self) -> None:
        import matplotlib.pyplot as plt
        plt.close(self.figure)


def view(volumes, overlays=None, titles: Sequence[str] | None = None,
         backend: str = 'matplotlib', **kwargs):
    """Open ``volumes`` (and overlays) in a viewer window: 'matplotlib' or 'napari'."""
    if backend == 'napari':
        return view_in_napari(volumes, overlays, titles, **kwargs)
    if backend != 'matplotlib':
        raise ConfigError(f"view(backend={backend!r}): choose 'matplotlib' or 'napari'")
    viewer = VolumeViewer(volumes, overlays, titles, **kwargs)
    viewer.show()
    return viewer


def view_in_napari(volumes, overlays=None, titles: Sequence[str] | None = None,
                   run: bool = True):
    """Open volumes and overlays as napari layers (overlays: labels or probability images).

    Returns the ``napari.Viewer``; with ``run`` it also starts napari's event loop.
    """
    napari = import_optional('napari', 'napari[all]', purpose='view_in_napari')
    volumes = [_with_channels(v, i) for i, v in enumerate(_as_list(volumes))]
    overlays = _as_list(overlays) or [None] * len(volumes)
    titles = list(titles) if titles else [f"volume {i}" for i in range(len(volumes))]
    viewer = napari.Viewer()
    for volume, overlay, title in zip(volumes, overlays, titles):
        if volume.shape[0] == 1:
            viewer.add_image(volume[0], name=title)
        else:
            viewer.add_image(volume, name=title, channel_axis=0)
        if overlay is None:
            continue
        if _is_labels(overlay):
            viewer.add_labels(overlay, name=f"{title} labels", opacity=0.4)
        else:
            viewer.add_image(overlay, name=f"{title} prediction", colormap='magma',
                             blending='additive', contrast_limits=(0, 1))
    if run:
        napari.run()
    return viewer


def view_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='elektronn2-view',
        description="Browse a volume slice by slice, optionally with a prediction (float, "
                    "drawn as a heat map) or labels (integer ids) on top. A prediction of "
                    "elektronn2-predict that covers only part of the volume (--region, "
                    "--valid-only) is placed by its voxel_offset attribute, and the volume is "
                    "shown cropped to it. An OME-Zarr segmentation of elektronn2-segment is "
                    "shown with its prediction and the raw data (found through the inputs "
                    "recorded in both). The arrays are read into memory. Keys: " + HELP)
    parser.add_argument('volume', help="HDF5 file, zarr store, .npy file, KNOSSOS directory "
                                       "or the output of elektronn2-segment")
    parser.add_argument('--key', help="dataset of the volume (required for HDF5)")
    parser.add_argument('--overlay', metavar='PATH',
                        help="prediction or labels drawn on top, e.g. the output of "
                             "elektronn2-predict")
    parser.add_argument('--overlay-key', metavar='KEY', default='probabilities',
                        help="dataset of the overlay (default: probabilities, as written by "
                             "elektronn2-predict)")
    parser.add_argument('--overlay-channel', metavar='C', type=int, default=-1,
                        help="channel (class) of a (c, z, y, x) overlay (default: -1, the "
                             "last, e.g. the boundary class of a two-class net)")
    parser.add_argument('--z', type=int, help="z slice shown first, in volume coordinates "
                                              "(default: the middle one)")
    parser.add_argument('--backend', choices=BACKENDS, default='auto',
                        help="where an elektronn2-segment output is shown: auto = napari where "
                             "installed, else a neuroglancer page served on this machine "
                             "(pip install neuroglancer), else matplotlib; other volumes and "
                             "--save always use matplotlib")
    parser.add_argument('--save', metavar='PNG',
                        help="write the picture to this file instead of opening a window "
                             "(works without a display)")
    return parser


def _read(path: str, key: str | None, lo: Sequence[int] | None = None,
          hi: Sequence[int] | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """(c, z, y, x) array of the volume file (its box [lo, hi) if given), and its voxel
    offset (stored by elektronn2-predict; zeros otherwise)."""
    from ..data.sources import channel_volume_shape, open_source, read_channel_box
    from ..inference.outputs import stored_attributes
    source = open_source(path, key)
    _, zyx = channel_volume_shape(source)
    offset = tuple(int(v) for v in stored_attributes(source).get('voxel_offset', (0, 0, 0)))
    lo, hi = lo or (0, 0, 0), hi or zyx
    if any(a < 0 or b > n for a, b, n in zip(lo, hi, zyx)):
        raise DataError(f"{source.name} (spatial shape {tuple(zyx)}) does not hold the box "
                        f"{tuple(lo)}..{tuple(hi)} of the overlay (its voxel_offset and shape)")
    return read_channel_box(source, lo, hi), offset


def _overlay_plane(data: np.ndarray, channel: int, path: str) -> np.ndarray:
    """The (z, y, x) channel ``channel`` of a (c, z, y, x) overlay."""
    if not -len(data) <= channel < len(data):
        raise ConfigError(f"--overlay-channel {channel}: {path} has {len(data)} channel(s)")
    return data[channel]


def _open(args: argparse.Namespace) -> VolumeViewer:
    """The viewer of the command line's volume and overlay."""
    overlay, titles, lo, hi = None, [args.volume], None, None
    if args.overlay:
        data, lo = _read(args.overlay, args.overlay_key)
        overlay = [_overlay_plane(data, args.overlay_channel, args.overlay)]
        hi = tuple(a + n for a, n in zip(lo, data.shape[1:]))
        titles = [f"{args.volume} + {args.overlay} (channel {args.overlay_channel})"]
    volume, _ = _read(args.volume, args.key, lo, hi)
    z = None if args.z is None else args.z - (lo[0] if lo else 0)
    return VolumeViewer(volume, overlay, titles, z=z)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-view``; returns the exit status (errors: one line, 2)."""
    return run_script(lambda: _view(argv), 'elektronn2-view')


def _view(argv: Sequence[str] | None) -> int:
    """Show (or save) what the command line ``argv`` asks for."""
    args = view_parser().parse_args(argv)
    import matplotlib
    if args.save:
        matplotlib.use('Agg')
    from ..inference.ome_zarr import level_key
    if not args.overlay and level_key(args.volume) is not None:   # elektronn2-segment's output
        from .segmentation_view import show
        found = show(args.volume, 'matplotlib' if args.save else args.backend, args.z)
        if found is None:
            return 0
        viewer = found
    else:
        viewer = _open(args)
    if args.save:
        viewer.save(args.save)
        print(f"saved {args.save}")
        return 0
    if matplotlib.get_backend().lower() == 'agg':
        raise ConfigError("no display to open a window on; write a picture with --save FILE.png")
    viewer.show()
    return 0


if __name__ == '__main__':
    sys.exit(main())
