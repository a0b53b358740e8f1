"""ELEKTRONN2's utility modules under their old paths: elektronn2.utils.{utils_basic, plotting,
locking, gpu, d3viz, cnncalculator}, elektronn2.malis.malis_utils,
elektronn2.training.{trainutils, parallelisation} and elektronn2.config's old names."""
import ast
import gzip
import importlib
import inspect
import logging
import multiprocessing
import operator
import os
import pickle
import shutil
import time
from pathlib import Path

import h5py
import matplotlib
import numpy as np
import pytest

matplotlib.use('Agg')

import elektronn2.neuromancer as nm  # noqa: E402
from elektronn2.config import DefaultConfig, change_logging_file, config  # noqa: E402
from elektronn2.data.labels import affinity_components, ids2affinities, ids2barriers  # noqa: E402
from elektronn2.errors import ConfigError, DataError, ShapeError  # noqa: E402
from elektronn2.inference.malis import malis_weights as pair_counts  # noqa: E402

PNG = b'\x89PNG\r\n\x1a\n'
API = Path(__file__).resolve().parents[3] / 'shared' / 'reference' / 'elektronn2_api.txt'
OWNED = ('elektronn2.utils.utils_basic', 'elektronn2.utils.plotting', 'elektronn2.utils.locking',
         'elektronn2.utils.gpu', 'elektronn2.utils.cnncalculator', 'elektronn2.malis.malis_utils',
         'elektronn2.training.trainutils', 'elektronn2.training.parallelisation', 'elektronn2.config')


def _png(path) -> bool:
    path = Path(path)
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 2000


@pytest.fixture(scope='module')
def fib(data_dir):
    """(raw uint8, ids int32) of a crop of the real FIB test block (labels 0: boundary)."""
    with h5py.File(data_dir / 'em' / 'fib_gala_small.h5', 'r') as f:
        return f['test/raw'][:8, 20:60, 20:60], f['test/labels'][:8, 20:60, 20:60]


# --- signatures ------------------------------------------------------------------------------
def _api_entries():
    if not API.is_file():
        return []
    entries = []
    for line in API.read_text().splitlines():
        module, _, rest = line.partition(':')
        if module in OWNED:
            name, _, signature = rest.split(' [class:')[0].partition('(')
            entries.append((module, name, signature[:-1]))
    return entries


def _parameters(signature: str) -> list[tuple[str, object]]:
    """(name with * or **, literal default or ... when none / not a literal) per parameter."""
    args = ast.parse(f"def f({signature}): pass").body[0].args
    plain = args.posonlyargs + args.args
    defaults = [None] * (len(plain) - len(args.defaults)) + list(args.defaults)
    out = []
    for arg, default in zip(plain, defaults):
        try:
            value = ... if default is None else ast.literal_eval(default)
        except ValueError:
            value = ...
        out.append((arg.arg, value))
    out += [('*' + args.vararg.arg, ...)] if args.vararg else []
    out += [('**' + args.kwarg.arg, ...)] if args.kwarg else []
    return out


@pytest.mark.parametrize('module, name, signature', _api_entries())
def test_every_name_has_the_original_signature(module, name, signature):
    """Same parameter names in the same order and the same (literal) defaults; extra
    parameters may follow."""
    obj = getattr(importlib.import_module(module), name)
    if inspect.isclass(obj):
        obj = obj.__init__
    ours = []
    for p in inspect.signature(obj).parameters.values():
        if p.name != 'self':
            prefix = '*' if p.kind is p.VAR_POSITIONAL else '**' if p.kind is p.VAR_KEYWORD else ''
            ours.append((prefix + p.name, ... if p.default is p.empty else p.default))
    theirs = _parameters(signature)
    assert [n for n, _ in ours][:len(theirs)] == [n for n, _ in theirs]
    for (_, mine), (param, original) in zip(ours, theirs):
        if original is not ...:
            assert mine == original and type(mine) is type(original), (param, mine, original)


def test_package_namespaces_export_the_old_names():
    import elektronn2.malis as malis
    import elektronn2.utils as utils
    from elektronn2.utils import cnncalculator, d3viz, h5load
    assert h5load is utils.utils_basic.h5load and utils.Timer is utils.utils_basic.Timer
    assert utils.DynamicKDT is utils.utils_basic.DynamicKDT
    assert callable(cnncalculator) and callable(d3viz.visualise_model)
    assert malis.mknhood3d is malis.malis_utils.mknhood3d
    assert isinstance(malis.malis_weights, malis.malis_utils.MalisWeights)


# --- elektronn2.config -------------------------------------------------------------------------
def test_change_logging_file_moves_the_log(tmp_path):
    log = logging.getLogger('elektronn2.test_compat')
    log.setLevel(logging.DEBUG)
    old = logging.FileHandler(tmp_path / 'old.log')
    log.addHandler(old)
    change_logging_file(log, tmp_path / 'run', 'new.log')
    log.info('hello %d', 42)
    for handler in log.handlers[:]:
        handler.close()
        log.removeHandler(handler)
    assert old not in log.handlers
    assert 'hello 42' in (tmp_path / 'run' / 'new.log').read_text()
    assert (tmp_path / 'old.log').read_text() == ''


def test_default_config_reads_the_rc_file(tmp_path, monkeypatch):
    rc = tmp_path / 'rc.py'
    rc.write_text(f"import os\nsave_path = {str(tmp_path / 'runs')!r}\nloss_smoothing_length = 50\n"
                  f"device = 'cpu'\n")
    monkeypatch.setenv('ELEKTRONN2RC', str(rc))
    monkeypatch.setattr(config, 'device', config.device)
    cfg = DefaultConfig()
    assert cfg.loss_smoothing_length == 50 and cfg.param_save_it == 10000 and cfg.plot_on
    assert cfg.save_path == str(tmp_path / 'runs') and config.device == 'cpu'
    logging.getLogger('elektronn2').warning('into the log')
    assert 'into the log' in (tmp_path / 'runs' / 'elektronn2.log').read_text()
    rc.write_text("param_save_h = 2.0\n")
    with pytest.raises(ConfigError, match='param_save_it'):
        DefaultConfig()


# --- elektronn2.utils.utils_basic ---------------------------------------------------------------
def test_h5save_h5load_round_trip_and_real_file(tmp_path, data_dir):
    from elektronn2.utils.utils_basic import h5load, h5save
    a, b = np.arange(24).reshape(2, 3, 4), np.ones((5,), np.uint8)
    h5save(a, tmp_path / 'one.h5')
    assert np.array_equal(h5load(tmp_path / 'one.h5'), a)
    with h5py.File(tmp_path / 'one.h5') as f:
        assert list(f) == ['data'] and f['data'].compression == 'lzf'
    h5save([a, b], str(tmp_path / 'two.h5'), keys=['raw', 'lab'], compress=False)
    raw, lab = h5load(tmp_path / 'two.h5', ['raw', 'lab'])
    assert np.array_equal(raw, a) and np.array_equal(lab, b) and lab.dtype == np.uint8
    h5save((a, b), tmp_path / 'enum.h5')
    assert [x.shape for x in h5load(tmp_path / 'enum.h5')] == [(2, 3, 4), (5,)]
    with pytest.raises(KeyError, match='available'):
        h5load(tmp_path / 'two.h5', 'nope')
    raw = h5load(data_dir / 'em' / 'fib_gala_small.h5', 'train/raw')
    assert raw.shape == (50, 100, 200) and raw.dtype == np.uint8


def test_picklesave_pickleload(tmp_path):
    from elektronn2.utils.utils_basic import AccumulationArray, pickleload, picklesave
    data = {'w': np.arange(6.0).reshape(2, 3), 'names': ['a', 'b'], 'n': 3}
    picklesave(data, tmp_path / 'd.pkl')
    back = pickleload(tmp_path / 'd.pkl')
    assert back['names'] == ['a', 'b'] and np.array_equal(back['w'], data['w'])
    with gzip.open(tmp_path / 'two.pkl.gz', 'wb') as f:       # several objects, gzipped
        pickle.dump([1, 2], f)
        pickle.dump(np.float32(2.5), f)
    assert pickleload(tmp_path / 'two.pkl.gz') == [[1, 2], np.float32(2.5)]
    acc = AccumulationArray(right_shape=2)
    acc.append([1, 2])
    picklesave(acc, tmp_path / 'acc.pkl')
    assert np.array_equal(pickleload(tmp_path / 'acc.pkl').data, [[1, 2]])
    with open(tmp_path / 'evil.pkl', 'wb') as f:
        pickle.dump(Path('/etc'), f)
    with pytest.raises(DataError, match='refuses'):
        pickleload(tmp_path / 'evil.pkl')


def test_timeit_cache_and_decorator_base(capsys):
    from elektronn2.utils.utils_basic import DecoratorBase, cache, timeit
    calls = []

    @timeit
    def double(x):
        calls.append(x)
        return 2 * x

    @timeit(n=3)
    def triple(x):
        calls.append(x)
        return 3 * x

    assert double(4) == 8 and triple(2) == 6 and calls == [4, 2, 2, 2]
    out = capsys.readouterr().out
    assert 'Function <double> took' in out and 'averaged over 3 execs' in out
    assert double.__name__ == 'double' and triple.__name__ == 'triple'

    @cache
    def total(a, scale=1):
        calls.append('total')
        return a.sum() * scale

    x = np.arange(5)
    assert total(x) == 10 and total(x.copy()) == 10 and total(x, scale=2) == 20
    assert calls.count('total') == 2

    @DecoratorBase(verbose=True)
    def plain(v):
        return v + 1
    assert plain(1) == 2 and DecoratorBase(plain)(2) == 3


def test_circular_buffer():
    from elektronn2.utils.utils_basic import CircularBuffer
    buf = CircularBuffer(3)
    assert buf.mean() == 0.0 and len(buf) == 0
    for v in range(1, 6):
        buf.append(v)
    assert list(buf.data) == [5, 4, 3] and buf.mean() == 4.0 and len(buf) == 5 and buf[0] == 5
    buf.setvals(1.5)
    assert list(buf.data) == [1.5] * 3


def test_accumulation_array_rows_records_and_statistics():
    from elektronn2.utils.utils_basic import AccumulationArray
    acc = AccumulationArray(right_shape=(2,), n_init=2, ema_factor=0.5)
    rows = np.array([[1, 5], [3, -1], [2, 2], [0, 4], [7, 7]], np.float32)
    for r in rows:
        acc.append(r)
    assert len(acc) == 5 and np.array_equal(acc.data, rows) and np.array_equal(acc[1:3], rows[1:3])
    assert np.array_equal(acc.min(), rows.min(0)) and np.array_equal(acc.max(), rows.max(0))
    assert np.allclose(acc.sum(), rows.sum(0)) and np.allclose(acc.mean(), rows.mean(0))
    ema = rows[0]
    for r in rows[1:]:
        ema = 0.5 * ema + 0.5 * r
    assert np.allclose(acc.ema, ema)
    acc.add_offset(np.array([1, 1], np.float32))
    assert np.allclose(acc.data, rows + 1) and np.allclose(acc.min(), rows.min(0) + 1)
    assert np.allclose(acc.sum(), rows.sum(0) + 5)
    records = AccumulationArray(dtype=dict(names=['time', 'loss'], formats=['f4', 'f4']))
    records.append((0.5, 2.0))
    records.append((1.0, 1.5))
    assert np.allclose(records.data['loss'], [2.0, 1.5]) and np.allclose(records['time'], [0.5, 1.0])
    started = AccumulationArray(data=rows[:2])
    started.append(rows[2])
    assert np.array_equal(started.data, rows[:3]) and np.allclose(started.max(), rows[:3].max(0))
    acc.clear()
    assert len(acc) == 0


def test_kdt_and_dynamic_kdt_against_brute_force():
    from elektronn2.utils.utils_basic import KDT, DynamicKDT
    rng = np.random.default_rng(0)
    points, queries = rng.uniform(0, 10, (150, 3)), rng.uniform(0, 10, (7, 3))
    brute = np.linalg.norm(queries[:, None] - points[None], axis=-1)
    dist, idx = KDT(n_neighbors=4).fit(points).kneighbors(queries)
    assert np.array_equal(idx, np.argsort(brute, 1)[:, :4]) and np.allclose(dist, np.sort(brute, 1)[:, :4])
    d, i = KDT(radius=2.0).fit(points).radius_neighbors(queries)
    assert all(set(ii) == set(np.flatnonzero(b <= 2.0)) for ii, b in zip(i, brute))
    assert all(np.all(np.diff(dd) >= 0) for dd in d)

    tree = DynamicKDT(points[:100], k=3, rebuild_thresh=10, aniso_scale=[1.0, 1.0, 2.0])
    for p in points[100:]:
        tree.append(p)
    scaled = np.linalg.norm((queries[:, None] - points[None]) * [1, 1, 2], axis=-1)
    dist, idx, coords = tree.get_knn(queries)
    assert dist.shape == (7, 3) and idx.shape == (7, 3) and coords.shape == (7, 3, 3)
    assert np.array_equal(idx, np.argsort(scaled, 1)[:, :3]) and dist.dtype == np.float32
    assert np.allclose(coords, points[idx])
    d1, i1, c1 = tree.get_knn(queries[0], k=1)
    assert np.ndim(d1) == 0 and int(i1) == np.argmin(scaled[0]) and c1.shape == (3,)
    d, i = tree.get_radius_nn(queries[0], 3.0)
    assert set(i) == set(np.flatnonzero(scaled[0] <= 3.0))
    with pytest.raises(DataError, match='neighbours'):
        DynamicKDT(points[:2]).get_knn(queries, k=3)


def test_files_directories_and_small_helpers(tmp_path, monkeypatch, capsys):
    from elektronn2.utils.utils_basic import (
        as_list,
        import_variable_from_file,
        makeversiondir,
        pretty_string_ops,
        pretty_string_time,
        unique_rows,
    )
    monkeypatch.setattr('sys.path', list(__import__('sys').path))
    (tmp_path / 'compat_user_data.py').write_text("class Data:\n    size = 7\nvalue = 3\n")
    data_class = import_variable_from_file(tmp_path / 'compat_user_data.py', 'Data')
    assert data_class.size == 7 and pickle.loads(pickle.dumps(data_class())).size == 7
    with pytest.raises(ConfigError, match='defines no'):
        import_variable_from_file(str(tmp_path / 'compat_user_data.py'), 'Missing')
    first = makeversiondir(tmp_path, 'run')
    second, third = makeversiondir(tmp_path, 'run'), makeversiondir(tmp_path / 'run')
    assert (first, second, third) == (str(tmp_path / 'run'), str(tmp_path / 'run-v1'),
                                      str(tmp_path / 'run-v2'))
    monkeypatch.chdir(tmp_path)
    assert makeversiondir(str(tmp_path / 'run-v1'), cd=True) == str(tmp_path / 'run-v3')
    assert os.getcwd() == str(tmp_path / 'run-v3') and os.path.isdir(tmp_path / 'run-v3')
    assert pretty_string_ops(3.2e9) == '3.2 Giga Ops' and pretty_string_ops(512) == '0.5 kilo Ops'
    assert [pretty_string_time(t) for t in (12, 420, 5400)] == ['t=12s', 't=7m', 't=1.5h']
    rows, index = unique_rows(np.array([[1, 2], [0, 1], [1, 2], [0, 1], [3, 3]]))
    assert rows.tolist() == [[0, 1], [1, 2], [3, 3]] and index.tolist() == [1, 0, 4]
    assert 'Removed 2 of 5 (new 3)' in capsys.readouterr().out
    assert as_list(None) is None and as_list((1, 2)) == [1, 2] and as_list('a') == ['a']


def test_timer_check_points(capsys):
    from elektronn2.utils.utils_basic import Timer
    timer = Timer()
    time.sleep(0.02)
    dt = timer.check('load')
    timer.check('step', silent=True)
    time.sleep(0.01)
    timer.check('load')
    out = capsys.readouterr().out
    assert dt >= 0.02 and out.count('load\tdt=') == 2 and 'step' not in out
    assert timer.checknames == ['load', 'step', 'load'] and len(timer.checktimes) == 3
    assert abs(timer.accumulator['load'] - (timer.checktimes[0] + timer.checktimes[2])) < 1e-9
    text = timer.summary(silent=True)
    assert text.startswith('Total t:') and 'load:' in text and 'step:' in text
    with timer.section('block'):       # the new API on the same object
        pass
    assert 'block' in timer.totals
    assert len(timer.plot(accum=True).axes[0].patches) == 3
    Timer(silent_all=True).check('quiet')
    assert capsys.readouterr().out == ''


def _pair(args):
    value, const = args
    return value, [const, const]


def test_free_cpus_and_parallel_accum():
    from elektronn2.utils.utils_basic import get_free_cpu_count, parallel_accum
    assert 1 <= get_free_cpu_count() <= max(os.cpu_count() - 1, 1)
    assert parallel_accum(operator.itemgetter(0), 1, [[1, 2], [3, 4]], (), debug=True) == [1, 3]
    values, consts = parallel_accum(_pair, 2, [5, 6, 7], ['c'], debug=True)
    assert values == [5, 6, 7] and consts == ['c'] * 6
    assert parallel_accum(tuple, 2, [1, 2, 3], [9], proc=2) == ([1, 2, 3], [9, 9, 9])


# --- elektronn2.utils.plotting ---------------------------------------------------------------------
def test_embedfilters_tiles():
    from elektronn2.utils.plotting import embedfilters
    filters = np.arange(4 * 3 * 5, dtype=float).reshape(4, 3, 5)
    image = embedfilters(filters)
    assert image.shape == (8, 12) and image.dtype == np.float32
    assert np.array_equal(image[4:7, 6:11], filters[3]) and np.all(image[3] == 0)
    norm = embedfilters(filters, normalize=True, border_width=2)
    assert norm.shape == (10, 14) and np.isclose(norm.max(), 1) and norm[:3, :5].min() == 0
    wide = embedfilters(filters, output_ratio=4.0)
    assert wide.shape == (4, 24)
    weights = np.random.default_rng(0).normal(size=(6, 2, 3, 3))
    assert embedfilters(weights).ndim == 2 and embedfilters(weights[0, 0]).shape == (3, 3)
    rgb = embedfilters(np.random.default_rng(0).random((5, 3, 4, 4)), rgb_axis=1)
    assert rgb.shape[2] == 3 and rgb.shape[:2] == embedfilters(np.zeros((5, 4, 4))).shape


def test_sma_and_timeticks():
    from elektronn2.utils.plotting import add_timeticks, new_figure, sma
    c = np.array([1.0, 3, 5, 7, 9])
    assert np.allclose(sma(c, 2), [1, 2, 4, 6, 8]) and sma(c, 0) is c
    assert np.allclose(sma(c, 10), np.cumsum(c) / np.arange(1, 6))
    ax = new_figure(4, 3).add_subplot(111)
    add_timeticks(ax, np.linspace(0, 50, 101), np.arange(101) * 10)
    assert [t.get_text() for t in ax.get_xticklabels()] == ['0', '10', '20', '30', '40']
    assert ax.get_xlim() == (0, 1000) and ax.get_xlabel() == 'Runtime [mins]'


def _tracker():
    from elektronn2.training.trainutils import HistoryTracker
    rng = np.random.default_rng(0)
    tracker = HistoryTracker()
    for i in range(300):
        tracker.update_timeline((i * 2.0, 1 / (1 + i / 50) + 0.05 * rng.random(), rng.random()))
        if i % 30 == 0:
            tracker.update_history((i, i * 2.0, 0.5 / (1 + i / 50), 0.6 / (1 + i / 50), -0.01, 0.2,
                                    0.25, 1e-3, 0.9, 0.0))
    return tracker


def test_training_curve_plots(tmp_path):
    """(plot_hist, plot_debug, plot_regression and plot_kde: through HistoryTracker.plot below)"""
    from elektronn2.utils import plotting
    steps = np.arange(200.0)
    var = np.stack([steps, 1 / (1 + steps), 0.1 + 0 * steps, np.sqrt(steps), 0.5 + 0 * steps], 1)
    plotting.plot_var(var, str(tmp_path / 'beta'))
    assert _png(tmp_path / 'beta.Beta1.png') and _png(tmp_path / 'beta.Beta2.png')
    with pytest.raises(ShapeError, match='2 names'):
        plotting.plot_debug(var[:, :3], ['cos', 'sin'], str(tmp_path / 'dbg'))
    times = {f'node{i}': float(i) for i in range(40)}
    plotting.plot_exectimes(times, str(tmp_path / 'exec.png'), max_items=8)
    assert _png(tmp_path / 'exec.png')


def test_scroll_plot_on_real_em(fib):
    import matplotlib.pyplot as plt

    from elektronn2.utils.plotting import Scroller, scroll_plot
    raw, ids = fib
    scroller = scroll_plot([raw, ids], ['raw', 'seg'])
    assert isinstance(scroller, Scroller) and scroller.ind == 4 and len(scroller.axes) == 2
    assert scroller.imgs[1].get_cmap().name == 'nipy_spectral'
    scroller.onscroll(type('Event', (), {'button': 'up'})())
    assert scroller.ind == 5 and np.array_equal(scroller.imgs[0].get_array(), raw[5])
    for _ in range(5):
        scroller.onscroll(type('Event', (), {'button': 'down'})())
    assert scroller.ind == 0
    four = scroll_plot([raw] * 4, list('abcd'), init_z=2)
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in four.axes] == [(2, 2)] * 4
    assert scroll_plot(raw).axes[0].get_xlabel() == '0'
    plt.close('all')


def test_quiver_and_training_target_figures():
    import matplotlib.pyplot as plt

    from elektronn2.utils.plotting import my_quiver, plot_trainingtarget
    y, x = np.mgrid[:6, :6].astype(float)
    figure = my_quiver(x - 3, y - 3, img=np.ones((6, 6)), c=np.hypot(x, y))
    assert len(figure.axes[0].collections) == 1
    img, lab = np.ones((10, 10)), np.ones((3, 3))
    diff = plot_trainingtarget(img, lab, stride=2)
    assert diff.shape == (10, 10) and diff[5, 5] == 0 and diff[0, 0] == 1 and len(plt.gcf().axes) == 3
    plt.close('all')


# --- elektronn2.utils.locking --------------------------------------------------------------------
def _locked_writer(path: str, tag: str, hold: float) -> None:
    from elektronn2.utils.locking import FileLock
    with FileLock(path, timeout=30, delay=0.01, lock_file_contents=f"writer {tag}"):
        for k in range(5):
            with open(path, 'a') as f:
                f.write(f"{tag}{k}\n")
            time.sleep(hold)


def test_file_lock_excludes_processes(tmp_path):
    from elektronn2.utils.locking import FileLock
    target = str(tmp_path / 'shared.txt')
    context = multiprocessing.get_context('fork')
    procs = [context.Process(target=_locked_writer, args=(target, tag, 0.01)) for tag in 'abc']
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    lines = Path(target).read_text().split()
    assert len(lines) == 15
    for start in range(0, 15, 5):       # each writer's five lines are together
        assert len({line[0] for line in lines[start:start + 5]}) == 1

    holder = context.Process(target=_locked_writer, args=(target, 'h', 0.2))
    holder.start()
    lock = FileLock(target, timeout=0.3, delay=0.05)
    deadline = time.time() + 10
    while 'writer h' not in Path(lock.lockfile).read_text() and time.time() < deadline:
        time.sleep(0.01)
    assert not lock.available()
    assert lock.acquire(blocking=False) is False and not lock.locked()
    with pytest.raises(FileLock.FileLockException, match='writer h'):
        lock.acquire()
    holder.join(30)
    assert lock.available()
    with lock:
        assert lock.locked() and 'Owning process args' in Path(lock.lockfile).read_text()
    assert not lock.locked() and lock.purge() and not os.path.exists(lock.lockfile)
    assert lock.purge() is False


# --- elektronn2.utils.gpu -----------------------------------------------------------------------------
def test_initgpu_and_get_free_gpu(monkeypatch, caplog):
    import torch

    from elektronn2.utils.gpu import get_free_gpu, initgpu
    monkeypatch.setattr(config, 'device', 'auto')
    with caplog.at_level(logging.INFO, logger='elektronn2'):
        initgpu(None)
        initgpu('none')
    assert config.device == 'auto' and 'CPU' in caplog.text
    with pytest.raises(ConfigError, match='not understood'):
        initgpu('fastest')
    if not torch.cuda.is_available():
        assert get_free_gpu() == -1 and get_free_gpu(wait=0.1) == -1
        with caplog.at_level(logging.WARNING, logger='elektronn2'):
            initgpu(0)
            initgpu('auto')
        assert config.device == 'auto' and 'CUDA is not available' in caplog.text
        return
    initgpu('cuda:0')
    assert config.device == 'cuda:0' and torch.cuda.current_device() == 0
    free = get_free_gpu()
    assert -1 <= free < torch.cuda.device_count()
    with pytest.raises(ConfigError, match='only'):
        initgpu(torch.cuda.device_count())


# --- elektronn2.utils.d3viz, cnncalculator --------------------------------------------------------------
def _small_model():
    inp = nm.Input((None, 1, 5, 21, 21), 'b,f,z,x,y', name='raw')
    out = nm.Conv(inp, 4, (1, 3, 3))
    out = nm.Conv(out, 2, (1, 3, 3), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss, prediction_node=probs)
    return model


@pytest.mark.skipif(shutil.which('dot') is None, reason="Graphviz 'dot' not found")
def test_d3viz_visualise_model(tmp_path):
    from elektronn2.utils.d3viz import visualise_model
    visualise_model(_small_model(), str(tmp_path / 'model-graph'))
    assert _png(tmp_path / 'model-graph.png')
    assert 'softmax' in (tmp_path / 'model-graph.html').read_text()
    with pytest.raises(ConfigError, match='select_outputs'):
        visualise_model(_small_model(), str(tmp_path / 'x'), select_outputs=['loss'])


def test_cnncalculator_patch_sizes():
    import elektronn2.utils
    from elektronn2.utils.cnncalculator import (
        cnncalculator,
        get_cloesest_valid_patch_size,
        get_valid_patch_sizes,
    )
    filters, pools = [(1, 6, 6), (1, 5, 5), (4, 4, 4)], [(1, 2, 2), (1, 2, 2), (1, 1, 1)]
    sizes = get_valid_patch_sizes(filters, pools, ndim=3)
    assert len(sizes) == 3 and 185 in sizes[1] and 184 not in sizes[1] and sizes[0][0] == 4
    assert get_cloesest_valid_patch_size(filters, pools, (23, 184, 190), ndim=3) == [23, 181, 189]
    flat = get_valid_patch_sizes([3, 3], [2, 1])
    assert flat[:3] == [8, 10, 12] and all(isinstance(n, int) for n in flat)
    assert get_cloesest_valid_patch_size([3, 3], [2, 1], 21) == 20
    assert get_cloesest_valid_patch_size([3, 3], [2, 1], 3) == 8
    calc = elektronn2.utils.cnncalculator([3, 3], [2, 1], 20)      # module or function: callable
    assert calc.patch_size == cnncalculator([3, 3], [2, 1], 20).patch_size


# --- elektronn2.malis.malis_utils -----------------------------------------------------------------------
def test_neighbourhoods():
    from elektronn2.malis.malis_utils import mknhood2d, mknhood3d, mknhood3d_aniso
    assert mknhood3d().tolist() == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
    assert mknhood2d().tolist() == [[-1, 0], [0, -1]] and mknhood3d().dtype == np.int32
    nh = mknhood3d(1.8)
    assert len(nh) == 13 and {tuple(-o) for o in nh}.isdisjoint({tuple(o) for o in nh})
    assert np.all((nh ** 2).sum(1) <= 1.8 ** 2)
    aniso = mknhood3d_aniso()
    assert aniso.shape == (11, 3) and np.all(aniso[3:, 0] == -1)
    assert {tuple(o) for o in aniso[3:, 1:]} == {(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)} - {(0, 0)}


def test_affinity_graphs_on_real_labels(fib):
    from elektronn2.malis.malis_utils import (
        affgraph_to_edgelist,
        affgraph_to_seg,
        bmap_to_affgraph,
        bmappred_to_affgraph,
        mknhood3d,
        nodelist_from_shape,
        seg_to_affgraph,
    )
    _, ids = fib
    nhood = mknhood3d()
    aff = seg_to_affgraph(ids, nhood)
    assert aff.dtype == np.int16 and np.array_equal(aff, ids2affinities(ids, nhood))
    node1, node2 = nodelist_from_shape(ids.shape, nhood)
    assert node1.shape == node2.shape == (3,) + ids.shape
    assert node2[0, 0, 5, 5] == -1 and node2[0, 2, 5, 5] == np.ravel_multi_index((1, 5, 5), ids.shape)
    assert node2[2, 3, 5, 5] == np.ravel_multi_index((3, 5, 4), ids.shape)
    n1, n2, edges = affgraph_to_edgelist(aff, nhood)
    joined = edges == 1
    assert np.all(ids.ravel()[n1[joined]] == ids.ravel()[n2[joined]]) and np.all(n2[joined] >= 0)
    seg, sizes = affgraph_to_seg(aff, nhood, size_thresh=1)
    reference, ref_sizes = affinity_components(aff, nhood, 1)
    assert np.array_equal(seg, reference) and np.array_equal(sizes[1:], ref_sizes)
    assert sizes[0] == np.sum(seg == 0) and seg.dtype == np.int32
    for i in np.unique(seg[seg > 0])[:20]:      # each component lies in one object
        assert len(np.unique(ids[seg == i])) == 1
    barriers = ids2barriers(ids).astype(np.int32)
    from_bmap = bmap_to_affgraph(barriers, nhood)
    assert from_bmap.dtype == np.int32 and np.all(from_bmap[0, 0] == 0)
    inner = barriers[1:] == 0
    assert np.array_equal(from_bmap[0, 1:] == 1, inner & (barriers[:-1] == 0))
    with pytest.raises(ConfigError, match='seg_to_affgraph'):
        bmap_to_affgraph(barriers, [[-2, 0, 0]])
    pred = bmappred_to_affgraph((barriers * 255).astype(np.uint8), nhood)
    assert pred.dtype == np.float32 and np.array_equal(pred, from_bmap.astype(np.float32))


def test_malis_weights_and_watershed(fib):
    from elektronn2.malis.malis_utils import (
        compute_V_rand_N2,
        malis_weights,
        mknhood3d,
        watershed_from_affgraph,
    )
    _, ids = fib
    ids = ids[:2, :20, :]
    nhood = mknhood3d()
    gt_aff = ids2affinities(ids, nhood).astype(np.float32)
    pred = np.random.default_rng(0).random(gt_aff.shape).astype(np.float32)
    pos, neg = malis_weights(pred, gt_aff, ids, nhood)
    assert np.array_equal(pos, pair_counts(np.minimum(pred, gt_aff), ids, nhood)[0])
    assert np.array_equal(neg, pair_counts(np.maximum(pred, gt_aff), ids, nhood)[1])
    free_neg = malis_weights(pred, gt_aff, ids, nhood, unrestrict_neg=True)[1]
    assert np.array_equal(free_neg, pair_counts(pred, ids, nhood)[1])
    assert pos.sum() > 0 and neg.sum() > 0

    seeds = np.zeros_like(ids)
    for i in np.unique(ids[ids > 0]):                 # one seed voxel per object
        seeds[tuple(np.argwhere(ids == i)[0])] = i
    seg, sizes = watershed_from_affgraph(gt_aff, seeds, nhood)
    components, _ = affinity_components(gt_aff, nhood, 0)
    for i in np.unique(ids[ids > 0]):                 # the seed's component gets its id
        seed_component = components[tuple(np.argwhere(ids == i)[0])]
        region = components == seed_component
        if region.sum() > 1:
            assert len(np.unique(seg[region])) == 1 and seg[region][0] > 0
    assert np.array_equal(np.bincount(seg.ravel(), minlength=len(sizes)), sizes)
    masked = seeds.copy()
    masked[:, :, :8] = -1
    seg_masked, _ = watershed_from_affgraph(gt_aff, masked, nhood)
    assert np.all(seg_masked[:, :, :8] == 0)

    assert np.allclose(compute_V_rand_N2(ids, ids), (1, 1, 1))
    merged = np.where(ids > 0, 1, 0)
    v_rand, split, merge = compute_V_rand_N2(ids, merged)
    counts = np.bincount(ids[ids > 0]) / (ids > 0).sum()
    assert np.isclose(merge, 1.0) and np.isclose(split, (counts ** 2).sum())
    assert np.isclose(v_rand, 2 * split / (1 + split))


# --- elektronn2.training.trainutils ---------------------------------------------------------------------
def test_binary_evaluation_measures(capsys):
    from elektronn2.training.trainutils import (
        binary_nll,
        confusion_table,
        eval_thresh,
        find_nearest,
        performance_measure,
        rescale_fudge,
        roc_area,
    )
    labs = np.array([1, 1, 0, 0, -1, 1])
    preds = np.array([1, 0, 1, 0, 1, 1])
    assert confusion_table(labs, preds) == (2, 1, 1, 1)
    assert confusion_table([labs, labs], [preds, 1 - preds]) == (3, 2, 2, 3)
    tpr, fpr, prec, rec, bal, acc, f1 = performance_measure(2, 1, 1, 1)
    assert (tpr, fpr, prec, rec, acc) == (2 / 3, 0.5, 2 / 3, 2 / 3, 0.6)
    assert np.isclose(bal, 0.5 * (2 / 3 + 0.5)) and np.isclose(f1, 2 / 3)
    assert performance_measure(0, 5, 0, 0)[2] == 1.0
    assert np.isclose(roc_area(np.array([1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])), 1.0)
    perf = eval_thresh((0.5, labs, np.array([0.9, 0.2, 0.7, 0.1, 0.9, 0.6])))
    assert perf[:4] == performance_measure(2, 1, 1, 1)[:4] and 'acc=0.6000' in capsys.readouterr().out
    assert find_nearest(np.linspace(0, 1, 11), 0.43) == pytest.approx(0.4)
    p = np.array([0.0, 0.1, 0.5, 0.95, 1.0])
    fudged = rescale_fudge(p, 0.1)
    assert fudged is p and np.allclose(p, [0, 0, 0.5, 1, 1])
    gt, prob = np.array([1, 1, 0, 0]), np.array([0.8, 0.6, 0.3, 0.1])
    expected = -0.5 * (np.mean([np.log(0.8), np.log(0.6), 0, 0]) + np.mean([0, 0, np.log(0.7), np.log(0.9)]))
    assert np.isclose(binary_nll(prob, gt), expected)
    assert np.isclose(binary_nll([prob, prob], [gt, gt]), expected)


def test_evaluate_and_error_hist_on_real_boundaries(tmp_path, fib):
    from scipy import ndimage

    from elektronn2.training.trainutils import error_hist, evaluate
    _, ids = fib
    gt = ids2barriers(ids).astype(np.int16)
    rng = np.random.default_rng(0)
    prob = np.clip(ndimage.gaussian_filter(gt.astype(float), 0.7) * 1.5 + 0.2 * rng.random(gt.shape),
                   0, 1)
    acc, area, thresh = evaluate(gt, prob, str(tmp_path / 'fib'))
    assert _png(tmp_path / 'fib.performance.png')
    assert 0.9 < area <= 1.0 and acc > max(gt.mean(), 1 - gt.mean()) and 0 < thresh < 1
    small = (gt[:2, :12, :12], prob[:2, :12, :12])
    assert evaluate([small[0]], [small[1]], str(tmp_path / 'fib2'), thresh=0.33)[2] == pytest.approx(21 / 63)
    error_hist(gt, prob, str(tmp_path / 'fib'), thresh=thresh)
    assert _png(tmp_path / 'fib.error_histogram.png')


class _Model:
    lr = 0.1


def test_schedules():
    from elektronn2.training.trainutils import Schedule
    model = _Model()
    dec = Schedule(dec=0.5)
    dec.bind_variable(obj=model, prop_name='lr')
    assert dec.next_update == 1000
    dec.update(1000)
    assert model.lr == 0.05 and dec.next_update == 2000 and 'lr' in repr(dec)
    ups = Schedule(updates=[(500, 0.8), (1500, 0.2)])
    ups.bind_variable(obj=model, prop_name='lr')
    assert ups.next_update == 500
    ups.update(500)
    assert model.lr == 0.8 and ups.next_update == 1500
    ups.update(1500)
    assert model.lr == 0.2 and ups.next_update == -1

    class Param:
        name, value = 'wd', 0.0

        def get_value(self):
            return self.value

        def set_value(self, v):
            self.value = v
    param = Param()
    param.value = 0.001
    lin = Schedule(lindec=[4000, 0.001])
    lin.bind_variable(variable_param=param)
    values = []
    while lin.next_update != -1:
        lin.update(lin.next_update)
        values.append(param.value)
    assert np.allclose(values, [0.00075, 0.0005, 0.00025, 0.0])
    with pytest.raises(ConfigError):
        Schedule(dex=0.5)


def test_history_tracker_saves_loads_and_plots(tmp_path, monkeypatch):
    from elektronn2.training.trainutils import loadhistorytracker
    tracker = _tracker()
    tracker.register_debug_output_names(['a', 'b'])
    for i in range(50):
        tracker.update_debug_outputs([i, 1.0 / (i + 1), 0.5, 0.25])
        tracker.update_regression([i * 0.1], [i * 0.1 + 0.05 * np.sin(i)])
    tracker.save(str(tmp_path / 'run'))
    loaded = loadhistorytracker(tmp_path / 'run.history.pkl')
    assert np.array_equal(loaded.timeline.data, tracker.timeline.data)
    assert np.array_equal(loaded.history['valid_loss'], tracker.history['valid_loss'])
    assert loaded.debug_output_names == ['a', 'b'] and len(loaded.regression_track[0]) == 50
    monkeypatch.chdir(tmp_path)
    loaded.plot('run')
    for suffix in ('timeline', 'history', 'Debug', 'regression', 'regression_kde'):
        assert _png(tmp_path / f'0-run.{suffix}.png'), suffix


CONFIG = """
save_name = 'exp'
data_class = 'MNISTData'
n_steps = 10
def create_model():
    raise RuntimeError('not built here')
"""


def test_experiment_config_makes_the_run_directory(tmp_path, monkeypatch):
    from elektronn2.training.trainutils import ExperimentConfig
    conf = tmp_path / 'myconf.py'
    conf.write_text(f"save_path = {str(tmp_path / 'runs')!r}\n" + CONFIG)
    host = tmp_path / 'host.py'
    host.write_text('# training script\n')
    exp = ExperimentConfig(str(conf), host_script_file=str(host))
    run = tmp_path / 'runs' / 'exp'
    assert exp.save_path == str(run) and exp.n_steps == 10 and exp.exp_file == str(conf)
    assert (run / '0-myconf.py').read_text() == conf.read_text()
    assert (run / 'Backup' / 'host.py').is_file()
    logging.getLogger('elektronn2').warning('logged into the run')
    assert 'logged into the run' in (run / '0-exp.log').read_text()
    again = ExperimentConfig(conf)
    assert again.save_path == str(tmp_path / 'runs' / 'exp-1')       # never overwritten
    existing = ExperimentConfig(conf, use_existing_dir=True)
    assert existing.save_path == str(run) and not (tmp_path / 'runs' / 'exp-2').exists()


def test_user_input_runs_the_shell(tmp_path, capsys):
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from elektronn2.training.trainutils import user_input
    trainer = type('Trainer', (), dict(model=None, data=None, batch=None, exp=None, step=3,
                                       run_dir=tmp_path, restart_batches=lambda self: None))()
    for typed, expected in (("x = 6 * 7\nprint('answer', x)\nq\n", 'q'), ('kill\n', 'kill')):
        with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
            pipe.send_text(typed)
            assert user_input({'self': trainer, 'exp_config': None, 'data': None, 'batch': None}) \
                == expected
    assert 'answer 42' in capsys.readouterr().out


def test_evaluate_model_binary_writes_the_report(tmp_path, monkeypatch, fib):
    from elektronn2.training.trainutils import evaluate_model_binary
    raw, ids = fib
    raw = (raw[:, :28, :28].astype(np.float32) / 255)[None]
    barriers = ids2barriers(ids[:, :28, :28]).astype(np.int16)[None]
    model = _small_model()
    monkeypatch.chdir(tmp_path)
    data = type('Data', (), dict(train_d=[raw], train_l=[barriers], valid_d=[raw], valid_l=[barriers]))
    evaluate_model_binary(model, 'tiny', data=data, n_proc=1)
    report = (tmp_path / '0-tiny-REPORT.txt').read_text().splitlines()
    values = [float(v) for v in report[1].split(',') if v.strip()]
    assert report[0].startswith('T_nll') and len(values) == 8 + 1 + 1      # one validation cube
    for name in ('1-tiny_train.performance.png', '1-tiny_valid.error_histogram.png'):
        assert _png(tmp_path / name)
    cached = h5py.File(tmp_path / '2-tiny_valid_0_pred.h5', 'r')['data']
    assert cached.shape == (2, 8, 24, 24)
    assert (tmp_path / '2-tiny_valid_0_seg.h5').is_file()


# --- elektronn2.training.parallelisation --------------------------------------------------------------
def _noisy_batch(n):
    return np.random.random((n, 3)).astype(np.float32), np.full(n, os.getpid(), np.int64)


def _slow():
    time.sleep(5)
    return np.zeros(2)


def _fill(arrays, shapes, value):
    from elektronn2.training.parallelisation import SharedMem
    SharedMem.shm2ndarray(arrays[0], shapes[0])[:] = value
    SharedMem.shm2ndarray(arrays[1], shapes[1])[:] = np.arange(np.prod(shapes[1])).reshape(shapes[1])


def test_shared_memory_and_background_processes():
    from elektronn2.training.parallelisation import BackgroundProc, SharedMem, SharedQ, TimeoutError
    shared = SharedMem.ndarray2shm(np.arange(6, dtype=np.int16).reshape(2, 3))
    view = SharedMem.shm2ndarray(shared, (2, 3))
    assert view.dtype == np.int16 and view.tolist() == [[0, 1, 2], [3, 4, 5]]
    handle = SharedMem().puthandle(np.float64, (2, 2), data=np.eye(2), lock=True)
    assert np.array_equal(SharedMem.shm2ndarray(handle, (2, 2)), np.eye(2))

    bg = BackgroundProc(_noisy_batch, n_proc=2, target_args=(4,))
    try:
        results = [bg.get(timeout=20) for _ in range(4)]
    finally:
        bg.shutdown()
    assert all(x.shape == (4, 3) and x.dtype == np.float32 and pid.dtype == np.int64
               for x, pid in results)
    pids = {int(pid[0]) for _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids
    assert len({x.tobytes() for x, _ in results}) == 4      # reseeded: no repeated batches
    slow = BackgroundProc(_slow, dtypes=[np.float64], shapes=[(2,)])
    try:
        with pytest.raises(TimeoutError, match='within 0.2 s'):
            slow.get(timeout=0.2)
    finally:
        slow.shutdown()

    queue = SharedQ()
    queue.startproc([np.float32, np.int32], [(2, 2), (3,)], _fill, target_args=(7.5,))
    queue.startproc([np.float32, np.int32], [(2, 2), (3,)], _fill, target_args=(1.0,))
    assert len(queue) == 2
    first, second = queue.get(), queue.get()
    assert np.all(first[0] == 7.5) and np.all(second[0] == 1.0) and first[1].tolist() == [0, 1, 2]
    with pytest.raises(DataError, match='no job'):
        queue.get()
