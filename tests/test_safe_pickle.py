"""elektronn2.utils.safe_pickle, the one restricted unpickler (old model files,
pickleload, piano rolls): plain data of every pickle protocol comes back as pickle.load
gives it; nothing else is built, nothing is run, nothing is allocated that the file
does not hold."""
from __future__ import annotations

import collections
import gzip
import pickle

import numpy as np
import pytest
from oldformat_writer import Global, Reduce, dumps

from elektronn2.errors import DataError
from elektronn2.training.trainutils import HISTORY_FIELDS, TIMELINE_FIELDS
from elektronn2.utils import safe_pickle
from elektronn2.utils.utils_basic import AccumulationArray, CircularBuffer, pickleload

PLAIN = safe_pickle.Policy(DataError, "plain data only")


def _plain_data():
    return {'arrays': [np.arange(12, dtype='>i4').reshape(3, 4), np.ones((2, 3), order='F'),
                       np.zeros((0, 5), np.uint8), np.array(True)],
            'scalars': (np.float32(2.5), np.int64(-3), np.complex128(1 + 2j)),
            'record': np.array([(1.0, 2, [1, 2, 3])], dtype=[('a', 'f8'), ('b', '<i2'),
                                                             ('c', 'f4', (3,))]),
            'text': ['é', b'\x00\xff', b''], 'numbers': [1, 2 ** 70, -1.5, None, True],
            'ordered': collections.OrderedDict(b=1, a=2)}


def _assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype.newbyteorder('=') == b.dtype.newbyteorder('=')  # numpy may swap
        assert a.shape == b.shape and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize('protocol', [0, 2, 4, 5])
def test_plain_data_of_every_protocol_reads_as_pickle_load_gives_it(tmp_path, protocol):
    data = _plain_data()
    path = tmp_path / 'data.pkl'
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    _assert_same(safe_pickle.load_all(path, PLAIN)[0], pickle.loads(path.read_bytes()))


def test_pickleload_reads_a_training_history_with_record_dtypes(tmp_path):
    timeline = AccumulationArray(n_init=4, dtype=TIMELINE_FIELDS)
    history = AccumulationArray(n_init=2, dtype=HISTORY_FIELDS)
    for i in range(5):
        timeline.append((i, 1.0 / (i + 1), 0.5))
    history.append(tuple(range(len(HISTORY_FIELDS['names']))))
    losses = CircularBuffer(3)
    losses.append(0.25)
    extras = {'set': {1, 2}, 'frozen': frozenset('ab'), 'bytes': bytearray(b'xy'),
              'slice': slice(1, None, 2), 'complex': 3 - 1j,
              'default': collections.defaultdict(list, a=[1])}
    with gzip.open(tmp_path / 'h.pkl.gz', 'wb') as f:
        pickle.dump([timeline, history, losses, extras], f, protocol=2)
    t, h, c, e = pickleload(tmp_path / 'h.pkl.gz')
    assert isinstance(t, AccumulationArray) and t.dtype == np.dtype(TIMELINE_FIELDS)
    assert np.array_equal(t.data, timeline.data) and t.data['loss'][1] == np.float32(0.5)
    assert h.data.dtype.names == tuple(HISTORY_FIELDS['names']) and len(h) == 1
    assert isinstance(c, CircularBuffer) and c.mean() == 0.25
    t.append((9, 9, 9))  # a working object
    assert len(t) == 6
    assert e == extras and e['default']['missing'] == []


@pytest.mark.parametrize('payload, message', [
    (Reduce(Global('__builtin__', 'bytes'), (2 ** 31 - 1,)), 'refused bytes from int'),
    (Reduce(Global('__builtin__', 'bytearray'), (2 ** 31 - 1,)), 'refused bytes from int'),
    (Reduce(Global('__builtin__', 'range'), (2 ** 31 - 1,)), 'refused global __builtin__.range'),
    (Reduce(Global('numpy', 'dtype'), ('O', 0, 1)), "refused numpy dtype 'O'"),
    (Reduce(Global('copy_reg', '_reconstructor'), (Global('__builtin__', 'list'),
                                                   Global('__builtin__', 'list'), [1])),
     'refused copyreg._reconstructor'),
    (Reduce(Global('builtins', 'getattr'), (1, 'real')), 'refused global builtins.getattr'),
])
def test_what_could_run_code_or_allocate_more_than_the_file_is_refused(tmp_path, payload, message):
    path = tmp_path / 'evil.pkl'
    path.write_bytes(dumps(payload))
    with pytest.raises(DataError, match=message):
        pickleload(path)


def test_a_file_cannot_change_the_functions_later_files_use(tmp_path):
    """BUILD on a global (setattr of ``__defaults__``) is refused; it could change only
    that file's copy of the function anyway."""
    evil = tmp_path / 'evil.pkl'
    state = dumps((None, {'__defaults__': ('pwned', 'latin1')}))[2:-1]
    evil.write_bytes(pickle.PROTO + b'\x02' + pickle.GLOBAL + b'_codecs\nencode\n' + state
                     + pickle.BUILD + pickle.STOP)
    with pytest.raises(DataError):
        safe_pickle.load_all(evil, PLAIN)
    plain = tmp_path / 'plain.pkl'
    plain.write_bytes(pickle.dumps([b''], protocol=2))
    assert safe_pickle.load_all(plain, PLAIN) == [[b'']]


def test_load_all_reads_several_pickles_and_names_the_file(tmp_path):
    path = tmp_path / 'several.pkl'
    path.write_bytes(pickle.dumps([1], protocol=2) + pickle.dumps(np.arange(3), protocol=2))
    first, second = safe_pickle.load_all(path, PLAIN)
    assert first == [1] and np.array_equal(second, np.arange(3))
    path.write_bytes(pickle.dumps(np.arange(3), protocol=2)[:-20])
    with pytest.raises(DataError, match=r"several\.pkl' is not a readable pickle"):
        safe_pickle.load_all(path, PLAIN)
    with pytest.raises(DataError, match=r"nope\.pkl' does not exist"):
        safe_pickle.load_all(tmp_path / 'nope.pkl', PLAIN)
