"""The commands take ELEKTRONN2 .mdl files (issue 17): ``elektronn2-predict`` on an old
file predicts what the converted model predicts in-process, and ``elektronn2-train``
continues training from an old file (``model_load_path``) and saves today's format."""
from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
from oldformat_writer import BASIC, LOSS, NEURAL, dumps, node, ptr

import elektronn2.neuromancer as nm
from elektronn2.neuromancer import oldmodels

rng = np.random.default_rng(17)


def _r(*shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _old_3d_boundary_net(path: Path, patch=(5, 37, 37)) -> Path:
    """An ELEKTRONN2 .mdl of a strided 3-D boundary net with a training loss (the layers
    of the small boundary net of tests/conftest.py), gzip-compressed as Model.save wrote
    it with compression."""
    d = OrderedDict()
    d['raw'] = [node(BASIC, 'Input', [(None, 1) + tuple(patch), 'b,f,z,x,y'], {'name': 'raw'}),
                OrderedDict()]
    parent = 'raw'
    for name, (n_f, n_in, filt, pool, act) in {
            'conv': (4, 1, (1, 4, 4), (1, 2, 2), 'relu'), 'conv1': (8, 4, (2, 3, 3), (1, 1, 1), 'relu'),
            'conv2': (8, 8, (2, 3, 3), (1, 1, 1), 'relu'), 'conv3': (2, 8, (1, 1, 1), (1, 1, 1), 'lin')
    }.items():
        d[name] = [node(NEURAL, 'Conv', [ptr(parent), n_f, filt, pool],
                        {'name': name, 'activation_func': act}),
                   OrderedDict(w=_r(n_f, n_in, *filt), b=_r(n_f, scale=0.1))]
        parent = name
    d['probs'] = [node(LOSS, 'Softmax', [ptr('conv3')], {'name': 'probs'}), OrderedDict()]
    d['target'] = [node(BASIC, 'Input_like', [ptr('probs')], {'override_f': 1, 'name': 'target'}),
                   OrderedDict()]
    d['nll'] = [node(LOSS, 'MultinoulliNLL', [ptr('probs'), ptr('target')],
                     {'target_is_sparse': True, 'name': 'nll'}), OrderedDict()]
    d['loss'] = [node(LOSS, 'AggregateLoss', [[ptr('nll')]], {'name': 'loss'}), OrderedDict()]
    designations = {'input_node': 'raw', 'target_node': 'target', 'loss_node': 'loss',
                    'prediction_node': 'probs', 'prediction_ext': ['loss', 'probs'],
                    'debug_outputs': [], 'error_node': None}
    path.write_bytes(gzip.compress(dumps((d, designations))))
    return path


def test_predict_command_takes_an_old_model_file(tmp_path):
    old = _old_3d_boundary_net(tmp_path / 'boundary.mdl', patch=(5, 21, 21))
    raw = rng.integers(0, 256, (10, 40, 36), dtype=np.uint8)  # (z, y, x)
    with h5py.File(tmp_path / 'raw.h5', 'w') as f:
        f['raw'] = raw
    out = tmp_path / 'prob.h5'
    result = subprocess.run([sys.executable, '-m', 'elektronn2.inference.cli', str(old),
                             str(tmp_path / 'raw.h5'), str(out), '--key', 'raw',
                             '--block-shape', '10', '20', '20', '--quiet'],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with h5py.File(out) as f:
        probs = f['probabilities'][:]
    model = nm.modelload(old, make_current=False)  # the net's axes are z, x, y
    dense = model.predict_dense(raw.transpose(0, 2, 1)[None], pad_raw=True)
    assert probs.shape == (2,) + raw.shape
    np.testing.assert_allclose(probs, dense.transpose(0, 1, 3, 2), rtol=1e-5, atol=2e-6)


def test_train_command_continues_from_an_old_model_file(tmp_path, write_config, train):
    old = _old_3d_boundary_net(tmp_path / 'boundary.mdl')
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', model_load_path=str(old),
                          n_steps=3, history_freq=1, monitor_batch_size=2, param_save_it=100,
                          preview_data_path=None, background_processes=0)
    result = train(config, '--gpu', 'none', timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    final = tmp_path / 'runs' / 'run' / 'model-final.mdl'
    assert zipfile.is_zipfile(final) and not oldmodels.is_old_model_file(final)
    trained = nm.modelload(final, make_current=False)
    converted = nm.modelload(old, make_current=False)
    assert [n.name for n in trained.nodes.values()] == [n.name for n in converted.nodes.values()]
    before, after = converted.get_param_values(), trained.get_param_values()
    assert not np.array_equal(before['conv']['w'], after['conv']['w'])  # it trained
