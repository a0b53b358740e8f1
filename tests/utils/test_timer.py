"""Timer: named and nested sections, totals, means, report, overhead."""
import time

import pytest

from elektronn2.errors import ConfigError
from elektronn2.utils.timer import Timer


def test_sections_accumulate_totals_counts_and_means():
    timer = Timer()
    for _ in range(3):
        with timer.section('data'):
            time.sleep(0.01)
        with timer.section('step'):
            time.sleep(0.02)
    assert timer.counts == {'data': 3, 'step': 3}
    assert 0.03 <= timer.totals['data'] < 0.1
    assert 0.06 <= timer.totals['step'] < 0.2
    assert timer.mean('step') == pytest.approx(timer.totals['step'] / 3)
    assert timer.elapsed >= timer.totals['data'] + timer.totals['step']


def test_nested_sections_are_joined_by_slash_and_exceptions_still_count():
    timer = Timer()
    with timer.section('step'):
        with timer.section('forward'):
            pass
        with pytest.raises(ValueError):
            with timer.section('backward'):
                raise ValueError('boom')
    with timer.section('forward'):
        pass
    assert timer.counts == {'step/forward': 1, 'step/backward': 1, 'step': 1, 'forward': 1}


def test_report_table_sorted_by_total():
    timer = Timer()
    timer.add('small', 0.001)
    timer.add('large', 0.5)
    timer.add('large', 0.3)
    lines = timer.report().splitlines()
    assert lines[0].split() == ['section', 'calls', 'total', 's', 'mean', 'ms', '%', 'of', 'time']
    assert lines[2].split()[:4] == ['large', '2', '0.800', '400.000']
    assert lines[3].split()[:2] == ['small', '1']
    assert lines[-1].startswith('elapsed')
    timer.reset()
    assert timer.totals == {} and timer.counts == {}


def test_errors_name_the_problem():
    timer = Timer()
    with pytest.raises(ConfigError, match="no section 'x'"):
        timer.mean('x')
    with pytest.raises(ConfigError, match="without '/'"):
        timer.section('a/b')


def test_overhead_is_small_enough_for_a_training_loop():
    timer = Timer()
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        with timer.section('noop'):
            pass
    per_section = (time.perf_counter() - t0) / n
    assert timer.counts['noop'] == n
    assert per_section < 20e-6, f"{per_section * 1e6:.1f} µs per section"


def test_synchronize_cuda_falls_back_without_cuda():
    timer = Timer(synchronize_cuda=True)
    with timer.section('gpu work'):
        pass
    assert timer.counts == {'gpu work': 1}
