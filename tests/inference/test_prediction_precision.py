"""Prediction in reduced precision (``--precision``, ``precision=``): bf16 autocast through
the execution settings of graph evaluation, float32 outputs, the precision in the manifest."""
import logging
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr

from elektronn2.errors import ConfigError
from elektronn2.inference import Box, predict_volume
from elektronn2.inference.outputs import MANIFEST_ATTR
from elektronn2.inference.predictors import resolve_precision, resolve_spec

PREDICT = [sys.executable, '-m', 'elektronn2.inference.cli']


@pytest.fixture(scope='module')
def crop(fib25_raw, tmp_path_factory):
    """A small FIB-25 sub-volume, in memory and as HDF5."""
    raw = fib25_raw[60:76, 40:88, 40:88]
    path = tmp_path_factory.mktemp('precision') / 'crop.h5'
    with h5py.File(path, 'w') as f:
        f.create_dataset('raw', data=raw)
    return path, raw


@pytest.fixture(scope='module')
def fp32(boundary_model, crop):
    return predict_volume(boundary_model, crop[1], block_shape=(16, 48, 48))


def assert_bf16_close(bf16: np.ndarray, fp32: np.ndarray) -> None:
    """bf16 probabilities: float32, not equal to fp32 (bf16 did run), within bf16 rounding
    (8 bits of mantissa through a few layers: ~1e-2 at most, ~1e-3 on average)."""
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    diff = np.abs(bf16 - fp32)
    assert 0 < diff.max() < 0.05 and diff.mean() < 5e-3, (diff.max(), diff.mean())
    np.testing.assert_allclose(bf16.sum(0), 1, atol=1e-5)   # still a softmax over classes


def test_resolve_precision():
    assert resolve_precision('auto') == 'fp32'     # auto never trades exactness in prediction
    assert resolve_precision('bf16') == 'bf16' and resolve_precision('fp32') == 'fp32'
    with pytest.raises(ConfigError, match="precision='fp8'"):
        resolve_precision('fp8')


def test_fp16_on_cpu_runs_with_a_warning(boundary_model, crop, fp32, caplog):
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        fp16 = predict_volume(boundary_model, crop[1], block_shape=(16, 48, 48),
                              precision='fp16')
    assert 'fp16 on the CPU' in caplog.text
    assert np.abs(fp16 - fp32).max() < 0.05


def test_bf16_without_bf16_units_warns(caplog):
    """bf16 is emulated (slower than fp32) where the hardware has no bf16 matrix units:
    asking for it says so; on hardware that has them, it does not."""
    from elektronn2.config import config
    from elektronn2.neuromancer.execution import has_native_bf16
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        assert resolve_precision('bf16') == 'bf16'
    warned = 'no bf16 matrix units' in caplog.text
    assert warned != has_native_bf16(config.torch_device)


def test_spec_carries_precision(boundary_model, same_model):
    region = Box((0, 0, 0), (16, 48, 48))
    for model in (boundary_model, same_model):      # MFP and blending back ends
        spec, _ = resolve_spec(model, (16, 48, 48), region, precision='bf16')
        assert spec.precision == 'bf16' and spec.describe()['precision'] == 'bf16'
        assert spec.build().settings.precision == 'bf16'
    assert resolve_spec(boundary_model, (16, 48, 48), region)[0].precision == 'fp32'


def test_predict_volume_bf16(boundary_model, crop, fp32):
    bf16 = predict_volume(boundary_model, crop[1], block_shape=(16, 48, 48), precision='bf16')
    assert_bf16_close(bf16, fp32)
    uint8 = predict_volume(boundary_model, crop[1], block_shape=(16, 48, 48), precision='bf16',
                           dtype='uint8')
    assert uint8.dtype == np.uint8 and np.abs(uint8 / 255 - bf16).max() <= 0.5 / 255 + 1e-6


def test_predict_volume_bf16_blended(same_model, crop):
    raw = crop[1][:, :32, :32]
    fp32 = predict_volume(same_model, raw, block_shape=(16, 32, 32))
    assert_bf16_close(predict_volume(same_model, raw, block_shape=(16, 32, 32),
                                     precision='bf16'), fp32)


def test_cli_bf16_records_precision_and_refuses_another(boundary_model, crop, fp32, tmp_path):
    path, _ = crop
    out = tmp_path / 'bf16.zarr'
    args = [str(a) for a in (boundary_model, path, out, '--key', 'raw', '--block-shape',
                             16, 48, 48, '--quiet')]
    result = subprocess.run(PREDICT + args + ['--precision', 'bf16'], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    array = zarr.open_array(store=str(out), path='probabilities', mode='r')
    assert array.attrs[MANIFEST_ATTR]['predictor']['precision'] == 'bf16'
    assert_bf16_close(array[:], fp32)
    again = subprocess.run(PREDICT + args + ['--precision', 'fp32'], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 2 and "predictor.precision" in again.stderr, again.stderr
