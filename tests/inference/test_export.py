"""Exported prediction functions equal the model, and run without elektronn2."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.errors import ConfigError
from elektronn2.inference.export import PredictionModule, export_model

#: loads an export with torch alone and saves its output for a saved input
STANDALONE = """
import sys, numpy as np, torch
fmt, path, x_path, out_path = sys.argv[1:]
x = torch.as_tensor(np.load(x_path))
if fmt == 'torchscript':
    fn = torch.jit.load(path)
else:
    fn = torch.export.load(path).module()
with torch.no_grad():
    np.save(out_path, fn(x).numpy())
assert 'elektronn2' not in sys.modules
"""


@pytest.fixture(params=[False, True], ids=['strided', 'mfp'])
def model(request, boundary_model):
    if request.param:
        return nm.modelload(boundary_model, override_mfp_to_active=True,
                            imposed_patch_size=(12, 32, 32))
    return nm.modelload(boundary_model)


def test_module_equals_model(model):
    module = PredictionModule(model)
    x = module.example_input(3)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), model.predict(x.numpy()), rtol=1e-6, atol=1e-7)
    assert any(name.endswith('__w') for name in module.state_dict())


@pytest.mark.filterwarnings('ignore:`torch.jit:DeprecationWarning')
@pytest.mark.parametrize('fmt, suffix', [('torchscript', '.pt'), ('export', '.pt2')])
def test_export_runs_without_elektronn2(model, fmt, suffix, tmp_path):
    x = PredictionModule(model).example_input(2).numpy()
    path = export_model(model, tmp_path / f'net{suffix}', fmt)
    np.save(tmp_path / 'x.npy', x)
    subprocess.run([sys.executable, '-c', STANDALONE, fmt, str(path), str(tmp_path / 'x.npy'),
                    str(tmp_path / 'out.npy')], check=True, timeout=300, cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / 'out.npy'), model.predict(x), rtol=1e-5, atol=1e-6)


def test_onnx_export(model, tmp_path):
    for module in ('onnx', 'onnxscript'):
        pytest.importorskip(module)
    onnxruntime = pytest.importorskip('onnxruntime')
    x = PredictionModule(model).example_input(2).numpy()
    path = export_model(model, tmp_path / 'net.onnx', 'onnx')
    session = onnxruntime.InferenceSession(str(path))
    out = session.run(None, {'input': x})[0]
    np.testing.assert_allclose(out, model.predict(x), rtol=1e-5, atol=1e-6)


def test_unknown_format(model, tmp_path):
    with pytest.raises(ConfigError, match="'tensorflow'"):
        export_model(model, tmp_path / 'x', 'tensorflow')
