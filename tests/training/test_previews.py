"""Previews during training (fast, bounded, never fatal, judgeable images) and the
placement of strided targets in debug pictures."""
import importlib.util
import time
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.data import debug
from elektronn2.neuromancer.graph_compile import GraphFunction
from elektronn2.training import cli, preview, trainer
from elektronn2.training.experiment import DEFAULTS

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'


def _preview_file(tmp_path: Path, shape: tuple) -> str:
    path = tmp_path / 'preview.h5'
    with h5py.File(path, 'w') as f:
        f['raw'] = np.random.default_rng(0).random(shape, dtype=np.float32)
    return str(path)


def _run(tmp_path: Path, write_config, **settings) -> tuple[int, Path]:
    """elektronn2-train in-process on the small 3-D net; (exit code, run directory)."""
    settings = dict(dict(n_steps=4, history_freq=1000, param_save_it=1000,
                         background_processes=0), **settings)
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', **settings)
    return cli.main([str(config), '--gpu', 'none']), tmp_path / 'runs' / 'run'


def _strided_2d_net(tags: str = 'b,f,x,y'):
    """155 x 155 -> 30 x 30 outputs, strides 4, offsets 19 (like neuro3d_lite in y, x)."""
    inp = nm.Input((None, 1, 155, 155), tags, name='raw')
    out = nm.Conv(inp, 2, (4, 4), (2, 2))
    out = nm.Conv(out, 2, (3, 3), (2, 2))
    out = nm.Conv(out, 2, (8, 8), activation_func='lin')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=nm.Softmax(out))
    return model


def test_preview_volume_smaller_than_fov_is_a_config_error(tmp_path, write_config, capsys):
    code, run = _run(tmp_path, write_config,
                     preview_data_path=_preview_file(tmp_path, (2, 64, 64)))
    assert code == 2
    err = capsys.readouterr().err
    assert 'preview volume' in err and "axis 'z'" in err and 'field of view' in err, err
    assert not (tmp_path / 'runs').exists() or not any((tmp_path / 'runs').iterdir())


def test_preview_volume_smaller_than_patch_is_previewed(tmp_path, write_config):
    # the net's patch is 5 x 37 x 37, its field of view 3 x 12 x 12 (z, y, x)
    code, run = _run(tmp_path, write_config,
                     preview_data_path=_preview_file(tmp_path, (4, 20, 20)))
    assert code == 0 and (run / 'model-final.mdl').exists()
    assert list((run / 'previews').glob('preview_step*_class1.png'))


def test_failing_preview_does_not_end_the_run(tmp_path, write_config, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError('preview broke')
    monkeypatch.setattr(trainer, 'save_preview', broken)
    code, run = _run(tmp_path, write_config)
    assert code == 0 and (run / 'model-final.mdl').exists()
    log = (run / 'train.log').read_text()
    assert 'not written (training continues): RuntimeError: preview broke' in log


def test_slow_previews_do_not_catch_up(tmp_path, write_config, monkeypatch):
    """A preview that takes 4 x prev_save_h (on the trainer's clock) runs once, not after
    every later step to catch up."""
    skew = [0.0]
    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time)
                                     if not name.startswith('_')})
    for name in ('time', 'monotonic', 'perf_counter'):
        setattr(clock, name, lambda real=getattr(time, name): real() + skew[0])
    monkeypatch.setattr(trainer, 'time', clock)
    calls = []

    def slow(*args, **kwargs):
        calls.append(1)
        skew[0] += 4 * 3600.0
        return []
    monkeypatch.setattr(trainer, 'save_preview', slow)
    code, run = _run(tmp_path, write_config, n_steps=6, prev_save_h=1.0, max_runtime=10 ** 9)
    assert code == 0 and len(calls) == 1


def test_preview_stops_between_blocks_when_asked():
    model = _strided_2d_net()
    volume = np.random.default_rng(0).random((1, 4, 300, 300), dtype=np.float32)
    checks = []
    with pytest.raises(preview.PreviewStopped, match='interrupted after 1 of 4 blocks'):
        preview.predict_preview(model, volume, preview.preview_region(volume.shape[1:], 2),
                                should_stop=lambda: checks.append(1) or len(checks) > 1)
    with pytest.raises(preview.PreviewStopped, match='time budget of -1 s after 0 of'):
        preview.save_preview(model, volume, Path('unused'), 1, max_seconds=-1)


@pytest.fixture
def neuro3d_lite(data_dir, monkeypatch):
    monkeypatch.setenv('ELEKTRONN2_DATA', str(data_dir))
    spec = importlib.util.spec_from_file_location('neuro3d_lite', EXAMPLES / 'neuro3d_lite.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_model()


def test_fib25_preview_is_cheap_and_shows_raw_and_prediction(neuro3d_lite, data_dir, tmp_path,
                                                            monkeypatch):
    with h5py.File(data_dir / 'em' / 'fib25_training_sample2.h5', 'r') as f:
        volume = f['volumes/raw'][115:135][None]     # (1, 20, 250, 250)
    computed = []
    numpy = GraphFunction.numpy

    def counting(self, *arrays, **settings):
        outputs = numpy(self, *arrays, **settings)
        computed.append(outputs[0][:, 0].size)   # output voxels of this evaluation
        return outputs
    monkeypatch.setattr(GraphFunction, 'numpy', counting)
    start = time.perf_counter()
    paths = preview.save_preview(neuro3d_lite, volume, tmp_path / 'previews', 7, max_z_pred=5)
    seconds = time.perf_counter() - start
    print(f"\nFIB-25 preview of 5 x 250 x 250 with neuro3d_lite: {seconds:.1f} s, "
          f"{len(computed)} evaluations, {sum(computed)} output voxels")
    budget = 0.1 * DEFAULTS['prev_save_h'] * 3600
    assert seconds <= budget
    assert sum(computed) <= 1.5 * 5 * 250 * 250   # no recomputation of strided outputs
    assert [p.name for p in paths] == ['preview_step000000007_class0.png',
                                       'preview_step000000007_class1.png']
    _check_image(paths[1], volume[0, 7:12])


def _check_image(path: Path, raw: np.ndarray) -> None:
    """Raw beside prediction, pixel for pixel, and a viridis colour bar."""
    import matplotlib.image
    from matplotlib import colormaps
    image = matplotlib.image.imread(path)[..., :3]
    (width, height), boxes = preview._figure_layout(*raw.shape)
    assert image.shape[:2] == (height, width) and width >= 2 * 250 and height >= 5 * 250
    for z, ((left, bottom, w, h), (p_left, _, _, _)) in enumerate(boxes):
        top = height - bottom - h
        shown = image[top:top + h, left:left + w]
        assert np.allclose(shown[..., 0], shown[..., 1])   # grey
        assert np.corrcoef(shown[..., 0].ravel(), raw[z].ravel().astype(float))[0, 1] > 0.95
        prediction = image[top:top + h, p_left:p_left + w]
        assert not np.allclose(prediction[..., 0], prediction[..., 1])   # coloured
    bar = image[:, boxes[0][1][0] + boxes[0][1][2] + preview._GAP + 7]
    viridis = colormaps['viridis']
    coloured = [i for i, pixel in enumerate(bar) if not np.allclose(pixel, pixel[0])]
    assert np.allclose(bar[coloured[3]], viridis(1.0)[:3], atol=0.05)   # inside the frame
    assert np.allclose(bar[coloured[-4]], viridis(0.0)[:3], atol=0.05)


def test_2d_strided_net_preview_equals_dense_tiling():
    model = _strided_2d_net('b,f,y,x')
    volume = np.random.default_rng(0).random((1, 4, 120, 270), dtype=np.float32)
    region = preview.preview_region(volume.shape[1:], 2)
    pred = preview.predict_preview(model, volume, region)
    assert pred.shape == (2, 2, 120, 270)
    tiled = model.predict_dense(volume[:, 1:3], pad_raw=True)
    np.testing.assert_allclose(pred, tiled, atol=1e-5)


def test_debug_batch_draws_strided_targets_at_their_pixels(tmp_path, monkeypatch):
    model = _strided_2d_net()
    probs = model.prediction_node
    (off_y, off_x), (s_y, s_x) = probs.shape.offsets, probs.shape.strides
    assert probs.shape.spatial_shape == (30, 30) and (s_y, s_x) == (4, 4)
    target = np.zeros((1, 1, 30, 30), np.int16)
    target[0, 0, 3, 20] = 1
    drawn = []
    save = debug.save_batch_picture
    monkeypatch.setattr(trainer, 'save_batch_picture', lambda *a, **k: drawn.append(save(*a, **k)))
    image = np.zeros((1, 1, 155, 155), np.float32)
    stub = types.SimpleNamespace(model=model, batch=(image, target), run_dir=tmp_path, step=0)
    trainer.Trainer.debug_batch(stub)
    (name, grid, _) = drawn[0][1]
    assert name == '0: target' and grid.shape == (155, 155)
    # output j is centred on pixel offset + 4 j and covers the 4 pixels nearest to it
    covered = [list(range(int(off) + s * j - s // 2, int(off) + s * j + s // 2))
               for off, s, j in ((off_y, s_y, 3), (off_x, s_x, 20))]
    assert [sorted(set(axis)) for axis in np.nonzero(grid == 1)] == covered
    inside = ~np.isnan(grid)
    for axis, off in ((1, off_y), (0, off_x)):   # all 30 outputs: 120 pixels from 17 on
        assert list(np.nonzero(inside.any(axis))[0]) == list(range(int(off) - 2, int(off) + 118))
