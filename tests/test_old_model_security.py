"""Old (pickled) model files can describe a model and nothing else: payloads that would
run a command are refused before anything runs, absurd sizes before anything is
allocated."""
from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
import tracemalloc
from collections import OrderedDict

import numpy as np
import pytest
from oldformat_writer import BASIC, NEURAL, Global, Reduce, dumps, node, ptr

import elektronn2.neuromancer as nm
from elektronn2.errors import ModelFileError
from elektronn2.neuromancer.oldpickle import read_pickles


def _model_with(payload, where: str):
    """A small ELEKTRONN2 model file with ``payload`` at ``where``."""
    inp = node(BASIC, 'Input', [(None, 3), 'b,f'], {'name': 'input'})
    dot = node(NEURAL, 'Perceptron', [ptr('input'), 2, 'lin'], {'name': 'dot'})
    params = OrderedDict(w=np.ones((3, 2), np.float32), b=np.zeros(2, np.float32))
    if where == 'kwargs':
        dot.state['kwargs']['activation_func'] = payload
    elif where == 'args':
        dot.state['args'].append([1, (payload,)])
    elif where == 'params':
        params['w'] = payload
    descriptors = OrderedDict(input=[inp, OrderedDict()], dot=[dot, params])
    return (descriptors, {'input_node': 'input', 'prediction_node': 'dot'})


@pytest.mark.parametrize('func, where', [
    (Global('os', 'system'), 'top'),
    (Global('posix', 'system'), 'kwargs'),
    (Global('builtins', 'exec'), 'args'),
    (Global('__builtin__', 'eval'), 'params'),
    (Global('subprocess', 'check_call'), 'kwargs'),
    (Global('elektronn2.neuromancer.neural', 'os'), 'args'),
])
def test_payloads_are_refused_and_do_not_run(tmp_path, func, where):
    marker = tmp_path / 'pwned'
    command = f"open({str(marker)!r}, 'w')" if func.name in ('exec', 'eval') else f"touch {marker}"
    payload = Reduce(func, (command,))
    obj = payload if where == 'top' else _model_with(payload, where)
    path = tmp_path / 'evil.mdl'
    path.write_bytes(dumps(obj))
    with pytest.raises(ModelFileError, match=rf"refused global {func.module}\.{func.name}"):
        nm.modelload(path)
    assert not marker.exists()


def test_a_python_reduce_payload_is_refused(tmp_path):
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    path = tmp_path / 'evil.mdl'
    path.write_bytes(gzip.compress(pickle.dumps((OrderedDict(dot=[Evil(), {}]), {}), protocol=2)))
    with pytest.raises(ModelFileError, match=r"refused global (posix|os|nt)\.system"):
        nm.modelload(path)
    assert not marker.exists()
    run = subprocess.run([sys.executable, '-m', 'elektronn2.training.convert_cli', str(path),
                          str(tmp_path / 'new.mdl')], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and 'refused global' in run.stderr and not marker.exists()


def test_an_8_gb_array_claim_is_refused_without_allocating(tmp_path):
    claim = Reduce(Global('numpy.core.multiarray', '_reconstruct'),
                   (Global('numpy', 'ndarray'), (0,), b'b'))
    state = (1, (2 ** 15, 2 ** 16), np.dtype('float32'), False, b'\0' * 16)  # 8 GB claimed, 16 B given
    path = tmp_path / 'big.mdl'
    path.write_bytes(dumps(claim)[:-1] + dumps(state)[2:-1] + pickle.BUILD + pickle.STOP)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=r"claims 8,589,934,592 bytes.*without allocating"):
            read_pickles(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2 ** 20


def test_arrays_share_one_budget_and_gzip_bombs_are_refused(tmp_path):
    data = np.ones(1000, np.float32)
    path = tmp_path / 'many.mdl'
    path.write_bytes(dumps([data] * 3))
    assert len(read_pickles(path)[0]) == 3  # each array's bytes are in the file
    bomb = tmp_path / 'bomb.mdl'
    bomb.write_bytes(gzip.compress(dumps(np.zeros(5 * 2 ** 20, np.float32))))
    with pytest.raises(ModelFileError, match=r"decompresses to more than"):
        read_pickles(bomb)


@pytest.mark.parametrize('spec', ['O', '<U4', 'V8'])
def test_only_plain_numeric_dtypes(tmp_path, spec):
    path = tmp_path / 'dtype.mdl'
    path.write_bytes(dumps(Reduce(Global('numpy', 'dtype'), (spec, 0, 1))))
    with pytest.raises(ModelFileError, match='refused numpy dtype'):
        read_pickles(path)
