"""VolumeViewer headless (Agg): synthesised wheel and key events, overlays, saved figures."""
import sys

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backend_bases import KeyEvent, MouseEvent  # noqa: E402
from PIL import Image  # noqa: E402

from elektronn2.errors import ConfigError, DataError  # noqa: E402
from elektronn2.utils.optional import MissingDependencyError  # noqa: E402
from elektronn2.utils.viewer import VolumeViewer, label_colours, view, view_in_napari  # noqa: E402


@pytest.fixture
def volumes():
    rng = np.random.default_rng(0)
    raw = np.arange(12)[:, None, None] * 10.0 + rng.normal(size=(12, 20, 24))
    channels = np.stack([raw, -raw, raw * 2])
    labels = np.zeros((12, 20, 24), np.int32)
    labels[:, 5:15, 5:10] = 3
    labels[:, 5:15, 12:20] = 8
    prediction = np.clip(raw / 120, 0, 1).astype(np.float32)
    return raw, channels, labels, prediction


@pytest.fixture
def viewer(volumes):
    raw, channels, labels, prediction = volumes
    v = VolumeViewer([raw, channels], overlays=[labels, prediction], titles=['raw', 'channels'])
    yield v
    v.close()


def press(viewer, key):
    canvas = viewer.figure.canvas
    canvas.callbacks.process('key_press_event', KeyEvent('key_press_event', canvas, key))


def scroll(viewer, button):
    canvas = viewer.figure.canvas
    x, y = canvas.figure.bbox.width / 2, canvas.figure.bbox.height / 2
    event = MouseEvent('scroll_event', canvas, x, y, button=button, step=1 if button == 'up' else -1)
    canvas.callbacks.process('scroll_event', event)


def test_wheel_and_keys_move_through_z_together(viewer, volumes):
    raw = volumes[0]
    assert viewer.z == 6
    scroll(viewer, 'up')
    scroll(viewer, 'up')
    assert viewer.z == 8
    scroll(viewer, 'down')
    press(viewer, 'down')
    assert viewer.z == 6
    press(viewer, 'pageup')
    assert viewer.z == 11, 'clipped at the last slice'
    press(viewer, 'pagedown')
    assert viewer.z == 1
    np.testing.assert_array_equal(viewer.images[0].get_array(), raw[1])
    np.testing.assert_array_equal(viewer.images[1].get_array(), raw[1])
    assert viewer.axes[0].get_title() == 'raw\nz 1/11'


def test_channel_keys_and_overlays(viewer, volumes):
    raw, channels, labels, prediction = volumes
    press(viewer, 'n')
    assert viewer.channel == 1
    np.testing.assert_array_equal(viewer.images[1].get_array(), channels[1, 6])
    low, high = viewer.images[1].get_clim()
    assert low < -100 < -10 < high, 'grey range of channel 1 (negative values)'
    np.testing.assert_array_equal(viewer.images[0].get_array(), raw[6])   # a single channel
    assert viewer.axes[1].get_title().endswith('c 1/2')
    press(viewer, 'N')
    press(viewer, 'N')
    assert viewer.channel == 2
    labels_rgba = viewer.overlay_images[0].get_array()
    assert labels_rgba.shape == (20, 24, 4)
    assert np.all(labels_rgba[labels[6] == 0, 3] == 0) and np.all(labels_rgba[labels[6] > 0, 3] > 0)
    assert not np.allclose(labels_rgba[7, 7, :3], labels_rgba[7, 15, :3]), 'ids differ in colour'
    prediction_alpha = viewer.overlay_images[1].get_array()[..., 3]
    np.testing.assert_allclose(prediction_alpha, 0.4 * prediction[6], atol=1e-6)
    press(viewer, 't')
    assert viewer.overlay_images[0].get_array()[..., 3].max() == 0
    press(viewer, 't')
    assert viewer.overlay_images[0].get_array()[..., 3].max() > 0


def test_saved_figure_shows_the_current_slice(viewer, tmp_path):
    viewer.save(tmp_path / 'z6.png')
    press(viewer, 'pageup')
    viewer.save(tmp_path / 'z11.png')
    first, last = (np.asarray(Image.open(tmp_path / f).convert('L'), float)
                   for f in ('z6.png', 'z11.png'))
    assert first.shape == last.shape and first.shape[1] > 600
    assert np.abs(first - last).mean() > 1, 'different slices render differently'


def test_default_key_bindings_do_not_interfere(volumes, monkeypatch):
    monkeypatch.setitem(plt.rcParams, 'keymap.yscale', ['up'])      # 'up' would toggle log y
    v = VolumeViewer(volumes[0])
    ax = v.axes[0]
    x, y = ax.transData.transform((10, 10))
    canvas = v.figure.canvas
    canvas.callbacks.process('key_press_event', KeyEvent('key_press_event', canvas, 'up', x, y))
    assert v.z == 7 and ax.get_yscale() == 'linear'
    v.close()


def test_label_colours_are_stable_and_transparent_for_background():
    rgba = label_colours(np.array([[0, 5], [5, 9]]), alpha=0.5)
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] == 0.5
    np.testing.assert_array_equal(rgba[0, 1], rgba[1, 0])
    assert np.all((rgba >= 0) & (rgba <= 1))


def test_inconsistent_inputs_are_refused(volumes):
    raw, channels, labels, _ = volumes
    with pytest.raises(DataError, match='different numbers of z slices'):
        VolumeViewer([raw, raw[:5]])
    with pytest.raises(DataError, match='Overlay #0 has shape'):
        VolumeViewer(raw, overlays=[labels[:, :5]])
    with pytest.raises(DataError, match='1 overlays for 2 volumes'):
        VolumeViewer([raw, raw], overlays=[labels])
    with pytest.raises(DataError, match=r'takes \(z, y, x\) or \(c, z, y, x\)'):
        VolumeViewer(raw[0])
    with pytest.raises(ConfigError, match="choose 'matplotlib' or 'napari'"):
        view(raw, backend='vispy')
    plt.close('all')


def test_napari_entry_point_names_the_package_when_missing(volumes, monkeypatch):
    monkeypatch.setitem(sys.modules, 'napari', None)
    with pytest.raises(MissingDependencyError, match=r"pip install napari\[all\]"):
        view_in_napari(volumes[0])
