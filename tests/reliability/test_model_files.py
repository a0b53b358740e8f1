"""Bad model files: a model file can only describe computation.

Every malicious file is a real small model saved by ``Model.save`` whose graph.json or
parameters were then edited (:func:`rewrite`). Each case asserts the error type, that the
message names the culprit (file, node, parameter, function) and -- with ``guard`` -- that
nothing outside the allowed paths changed. Sizes are chosen so that allocating them
would fail at once (beyond any address space): a size check that came after the
allocation would show up as a different error.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import safetensors.numpy
import torch

import elektronn2.neuromancer as nm
from elektronn2.errors import ModelFileError
from elektronn2.neuromancer import modelfile

HUGE = 10 ** 13  # values; 4e13 bytes and more are beyond any address space


def small_model():
    """raw -> conv1 -> apply (sigmoid) -> dot (flatten) -> dot1."""
    inp = nm.Input((None, 1, 6, 6), 'b,f,x,y', name='raw')
    out = nm.Conv(inp, 2, 3, name='conv1')
    out = nm.ApplyFunc(out, 'torch.sigmoid', name='apply')
    out = nm.Perceptron(out, 3, flatten=True, name='dot')
    out = nm.Perceptron(out, 2, activation_func='lin', name='dot1')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=out)
    return model


@pytest.fixture
def good(tmp_path) -> Path:
    return small_model().save(tmp_path / 'good.mdl')


def rewrite(good: Path, dst: Path, graph_edit=None, tensor_edit=None) -> Path:
    """A copy of the zip model ``good`` at ``dst`` with graph.json and tensors edited."""
    with zipfile.ZipFile(good) as zf:
        graph = json.loads(zf.read(modelfile.GRAPH_FILE))
        tensors = {k: v.copy() for k, v in
                   safetensors.numpy.load(zf.read(modelfile.PARAMS_FILE)).items()}
    if graph_edit:
        graph_edit(graph)
    if tensor_edit:
        tensor_edit(tensors)
    with zipfile.ZipFile(dst, 'w') as zf:
        zf.writestr(modelfile.GRAPH_FILE, json.dumps(graph))
        zf.writestr(modelfile.PARAMS_FILE, safetensors.numpy.save(tensors))
    return dst


def args_of(graph: dict, name: str) -> dict:
    return next(d['args'] for d in graph['nodes'] if d['args']['name'] == name)


def set_args(node: str, **changes):
    """A graph edit updating the arguments of node ``node``."""
    return lambda graph: args_of(graph, node).update(changes)


def refused(path: Path, root: Path, guard, *match: str, **load_args) -> str:
    """modelload(path) raises ModelFileError naming the file and ``match``; nothing
    under ``root`` changes. Returns the message."""
    with guard(root):
        with pytest.raises(ModelFileError) as info:
            nm.modelload(path, **load_args)
    message = str(info.value)
    for text in (path.name, *match):
        assert text in message, (text, message)
    return message


# --- 1. functions picked by name -------------------------------------------------------------
@pytest.mark.parametrize('functor', [
    'torch.save', 'torch.load', 'os.system', 'builtins.eval', 'subprocess.run',
    'torch.nn.functional.__builtins__', 'torch.__class__', 'torch.sigmoid.__call__',
    'torch.nn.functional.torch.save', 'torch..sigmoid', ' torch.sigmoid', 'torch.hub.load'])
def test_malicious_functor_names_are_refused(good, tmp_path, bystander, guard, functor):
    victim = bystander / 'model.mdl'
    path = rewrite(good, tmp_path / 'evil.mdl',
                   set_args('apply', functor=functor, args={'__tuple__': [str(victim)]}))
    message = refused(path, tmp_path, guard, repr(functor), "'apply'", 'APPLY_FUNCTIONS')
    assert 'not a function of the allow-list' in message
    assert victim.read_bytes() == b'not a model, but precious'


def test_functor_that_is_not_a_string_is_refused(good, tmp_path, guard):
    path = rewrite(good, tmp_path / 'evil.mdl',
                   set_args('apply', functor={'__node__': 'raw'}))
    refused(path, tmp_path, guard, "'apply'", 'APPLY_FUNCTIONS')


# --- 2. ApplyFunc arguments ------------------------------------------------------------------
@pytest.mark.parametrize('args, kwargs, match', [
    ({'__tuple__': [[1, [2, [3]]]]}, {}, 'args[0]'),
    ({'__tuple__': [{'__node__': 'raw'}]}, {}, 'args[0]'),
    ({'__tuple__': ['x' * 5000]}, {}, 'args[0]'),
    ([], {'dim': {'payload': [1, 2, 3]}}, "kwargs['dim']"),
    ([], {'__class__': 1}, "keyword '__class__'"),
    ([], {'_stacklevel': 1}, "keyword '_stacklevel'"),
    ({'__tuple__': [{'__array__': {'shape': [HUGE, HUGE], 'dtype': 'float32'}}]}, {},
     "argument 'args'"),
])
def test_apply_arguments_with_nested_payloads_are_refused(good, tmp_path, guard, args, kwargs,
                                                          match):
    path = rewrite(good, tmp_path / 'evil.mdl', set_args('apply', args=args, kwargs=kwargs))
    refused(path, tmp_path, guard, "'apply'", match)


def test_allowed_functions_with_plain_arguments_round_trip(tmp_path):
    inp = nm.Input((None, 3, 5), 'b,f,x', name='raw')
    out = nm.ApplyFunc(inp, torch.clamp, kwargs={'min': 0.2, 'max': 0.7})
    out = nm.ApplyFunc(out, 'torch.nn.functional.gelu', kwargs={'approximate': 'tanh'})
    out = nm.ApplyFunc(out, 'torch.softmax', args=(1,))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=out)
    x = np.random.rand(2, 3, 5).astype(np.float32)
    loaded = nm.modelload(model.save(tmp_path / 'm.mdl'))
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)
    np.testing.assert_allclose(loaded.predict(x).sum(axis=1), 1, rtol=1e-5)


def test_deeply_nested_arguments_are_refused(good, tmp_path, guard):
    payload = [1]
    for _ in range(900):
        payload = [payload]
    path = rewrite(good, tmp_path / 'evil.mdl', set_args('apply', args=payload))
    refused(path, tmp_path, guard, 'graph.json nests lists and objects deeper than 32 levels')


def test_apply_in_place_is_refused(good, tmp_path, guard):
    path = rewrite(good, tmp_path / 'evil.mdl', set_args(
        'apply', functor='torch.nn.functional.relu', kwargs={'inplace': True}))
    refused(path, tmp_path, guard, "'apply'", 'torch.nn.functional.relu works in place')


# --- 3. other names picked from the file -----------------------------------------------------
@pytest.mark.parametrize('node, changes, match', [
    ('raw', {'dtype': 'V1000000000'}, "unknown dtype 'V1000000000'"),
    ('conv1', {'activation_func': '__import__'}, "unknown activation_func '__import__'"),
    ('conv1', {'w_init': 'torch.save'}, "unknown weight initialisation 'torch.save'"),
])
def test_names_from_the_file_go_through_allow_lists(good, tmp_path, guard, node, changes, match):
    path = rewrite(good, tmp_path / 'evil.mdl', set_args(node, **changes))
    refused(path, tmp_path, guard, repr(node), match)


@pytest.mark.parametrize('cls', ['_RecurrentStep', 'Model', '__builtins__'])
def test_private_and_foreign_classes_are_refused(good, tmp_path, guard, cls):
    path = rewrite(good, tmp_path / 'evil.mdl',
                   lambda g: g['nodes'][1].update({'class': cls}))
    refused(path, tmp_path, guard, f"unknown class {cls!r}")


@pytest.mark.parametrize('key, value, match', [
    ('hyper_params', {'lr': 'os.system'}, "invalid ['hyper_params']"),
    ('designations', {'input_node': {'__node__': 'raw'}}, "invalid ['designations']"),
    ('designations', {'prediction_node': 'ghost'}, "no node 'ghost'"),
    ('iterations', -1, "invalid ['iterations']"), ('name', {'evil': 1}, "invalid ['name']")])
def test_model_state_must_be_plain_values(good, tmp_path, guard, key, value, match):
    path = rewrite(good, tmp_path / 'evil.mdl', lambda g: g.update({key: value}))
    refused(path, tmp_path, guard, match)


def test_duplicate_node_names_are_refused(good, tmp_path, guard):
    path = rewrite(good, tmp_path / 'evil.mdl', set_args('dot', name='conv1'))
    refused(path, tmp_path, guard, "duplicate name 'conv1'")


# --- 4. sizes before allocation --------------------------------------------------------------
@pytest.mark.parametrize('spec, match', [
    ({'shape': [HUGE, HUGE], 'dtype': 'float32'},
     'does not fit the stored tensor of shape (2, 1, 3, 3)'),
    ({'shape': [2, 1, 3, 3], 'dtype': 'V1000000000'}, 'invalid array'),
    ({'shape': [2, -1, 3, 3], 'dtype': 'float32'}, 'invalid array'),
    ({'shape': [1, 9], 'dtype': 'float32'}, 'does not fit'),
])
def test_array_arguments_must_fit_the_stored_tensor(good, tmp_path, guard, spec, match):
    path = rewrite(good, tmp_path / 'evil.mdl', set_args('conv1', w={'__array__': spec}))
    refused(path, tmp_path, guard, "node 'conv1', argument 'w'", match)


def test_array_argument_without_a_stored_tensor_is_refused(good, tmp_path, guard):
    array = {'__array__': {'shape': [HUGE], 'dtype': 'float32'}}
    path = rewrite(good, tmp_path / 'evil.mdl', set_args('conv1', n_f=array))
    refused(path, tmp_path, guard, "node 'conv1', argument 'n_f'", 'no stored tensor holds')


@pytest.mark.parametrize('node, changes, param, want', [
    ('conv1', {'n_f': HUGE}, 'conv1.w', f"({HUGE}, 1, 3, 3)"),
    ('conv1', {'filter_shape': {'__tuple__': [10 ** 7, 10 ** 7]}, 'conv_mode': 'same'}, 'conv1.w',
     f"(2, 1, {10 ** 7}, {10 ** 7})"),
    ('dot1', {'n_f': HUGE}, 'dot1.w', f"(3, {HUGE})"),
])
def test_huge_layers_are_refused_before_allocation(good, tmp_path, guard, node, changes, param,
                                                   want):
    path = rewrite(good, tmp_path / 'evil.mdl', set_args(node, **changes))
    refused(path, tmp_path, guard, f"node {node!r}", f"parameter {param!r} with shape {want}",
            'the file holds shape')


@pytest.mark.parametrize('shape, match', [
    ([None, 1, 10 ** 6, 10 ** 6], '1,000,000,000,000 values per example'),
    ([None, 1, 2 ** 25, 2], 'axes up to 33,554,432'),
    ([10 ** 12, 1, 6, 6], 'axes up to 1,000,000,000,000'),
])
def test_gigantic_inputs_are_refused(good, tmp_path, guard, shape, match):
    path = rewrite(good, tmp_path / 'evil.mdl', set_args('raw', shape={'__tuple__': shape}))
    refused(path, tmp_path, guard, "node 'raw' (Input)", match, 'allowed are at most')


def test_gigantic_value_node_is_refused(good, tmp_path, guard):
    def add_value_node(graph):
        graph['nodes'].append({'class': 'ValueNode', 'args': {
            'shape': {'__tuple__': [10 ** 7, 10 ** 7]}, 'tags': 'x,y', 'value': 1.0,
            'name': 'blob'}})
    path = rewrite(good, tmp_path / 'evil.mdl', add_value_node,
                   lambda tensors: tensors.update({'blob.value': np.ones((2, 2), np.float32)}))
    refused(path, tmp_path, guard, "node 'blob' (ValueNode)", "parameter 'blob.value' with shape "
            "(10000000, 10000000) (100,000,000,000,000 values), the file holds shape (2, 2)")


# --- 5. parameters against the header --------------------------------------------------------
def _drop(key):
    return lambda tensors: tensors.pop(key)


@pytest.mark.parametrize('edit, match', [
    (lambda t: t.update({'conv1.w': np.zeros((2, 1, 2, 2), np.float32)}),
     "parameter 'conv1.w' with shape (2, 1, 3, 3) (18 values), the file holds shape (2, 1, 2, 2)"),
    (lambda t: t.update({'ghost.w': np.zeros(3, np.float32)}), "unexpected ['ghost.w']"),
    (_drop('dot.b'), "missing ['dot.b']"),
])
def test_parameters_must_match_the_graph(good, tmp_path, guard, edit, match):
    path = rewrite(good, tmp_path / 'evil.mdl', tensor_edit=edit)
    refused(path, tmp_path, guard, match)


def test_non_finite_parameters_are_refused(good, tmp_path, guard):
    def poison(tensors):
        tensors['conv1.w'][0, 0, 0, 0] = np.nan
        tensors['dot.b'][1] = np.inf
    path = rewrite(good, tmp_path / 'nan.mdl', tensor_edit=poison)
    refused(path, tmp_path, guard, "parameters ['conv1.w', 'dot.b'] are not finite")


def test_non_finite_parameters_are_never_saved(tmp_path, guard):
    model = small_model()
    with torch.no_grad():
        model['dot'].params['w'][0, 0] = float('nan')
    for target in (tmp_path / 'nan.mdl', str(tmp_path / 'nan_dir.mdl') + os.sep):
        with guard(tmp_path):
            with pytest.raises(ModelFileError, match=r"not saving a model to .*nan.*"
                                                     r"parameters \['dot.w'\] are not finite"):
                model.save(target)


# --- 6. zip bombs ----------------------------------------------------------------------------
@pytest.mark.parametrize('member, match', [
    (modelfile.GRAPH_FILE, 'member graph.json declares 20,971,520 bytes'),
    (modelfile.PARAMS_FILE, 'member params.safetensors declares 20,971,520 bytes'),
])
def test_zip_bombs_are_refused(good, tmp_path, guard, member, match):
    with zipfile.ZipFile(good) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members[member] = b' ' * (20 * 2 ** 20)
    path = tmp_path / 'bomb.mdl'
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    assert path.stat().st_size < 200_000
    refused(path, tmp_path, guard, match, 'compression')


# --- 7. leftovers of interrupted writes ------------------------------------------------------
def test_old_folder_left_by_an_interrupted_directory_save(tmp_path, bystander, guard):
    model = small_model()
    target = model.save(str(tmp_path / 'm.mdl') + '/')
    leftover = tmp_path / '.old-m.mdl'
    leftover.mkdir()
    (leftover / 'graph.json').write_text('{}')
    with guard(tmp_path, target, leftover):
        model.save(target)
    assert not leftover.exists() and target.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bystander', 'm.mdl']
    assert set(nm.modelload(target).nodes) == set(model.nodes)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_stale_temporaries_are_cleaned_live_ones_kept(tmp_path, bystander, guard):
    model = small_model()
    host, dead = socket.gethostname(), _dead_pid()
    stale = [tmp_path / f".tmp-m.mdl~{host}~{dead}~abc", tmp_path / f".old-m.mdl~{host}~{dead}~d",
             tmp_path / '.tmp-m.mdl~elsewhere~1~old']
    live = [tmp_path / f".tmp-m.mdl~{host}~{os.getpid()}~live",   # a writer of this process
            tmp_path / '.tmp-m.mdl~elsewhere~1~new',                # a fresh one of another host
            tmp_path / f".tmp-other.mdl~{host}~{dead}~x",           # another target's
            tmp_path / '.tmp-k3j2l1'] + [bystander]                 # not attributable
    stale[0].write_bytes(b'half a zip')
    stale[1].mkdir()
    (stale[1] / 'params.safetensors').write_bytes(b'old')
    stale[2].write_bytes(b'x')
    os.utime(stale[2], (time.time() - 2 * modelfile.STALE_SECONDS,) * 2)
    for path in live[:4]:
        path.write_bytes(b'in progress')
    target = tmp_path / 'm.mdl'
    with guard(tmp_path, target, *stale):
        model.save(target)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in live)
    assert zipfile.is_zipfile(target)


def test_trailing_separator_means_a_directory(tmp_path, guard):
    model = small_model()
    zipped = model.save(tmp_path / 'x.mdl')
    assert zipfile.is_zipfile(zipped)
    with guard(tmp_path, zipped):
        out = model.save(str(tmp_path / 'x.mdl') + '/')
    assert out.is_dir() and sorted(p.name for p in out.iterdir()) == [
        'graph.json', 'params.safetensors']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['x.mdl']
    assert set(nm.modelload(str(out) + '/').nodes) == set(model.nodes)


# --- 8. the real command line ----------------------------------------------------------------
def test_predict_cli_refuses_a_model_that_writes_files(good, tmp_path, bystander, guard):
    victim = tmp_path / 'pwned.pt'
    model = rewrite(good, tmp_path / 'evil.mdl',
                    set_args('apply', functor='torch.save', args={'__tuple__': [str(victim)]}))
    volume = tmp_path / 'raw.h5'
    with h5py.File(volume, 'w') as f:
        f['raw'] = np.random.rand(8, 16, 16).astype(np.float32)
    output = tmp_path / 'out.h5'
    with guard(tmp_path):
        result = subprocess.run([sys.executable, '-m', 'elektronn2.inference.cli', str(model),
                                 str(volume), str(output), '--key', 'raw', '--quiet'],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('elektronn2-predict: error: ')
    assert 'evil.mdl' in lines[0] and "'torch.save'" in lines[0] and "'apply'" in lines[0]
    assert not victim.exists() and not output.exists()
