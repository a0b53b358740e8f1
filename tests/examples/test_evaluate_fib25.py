"""The FIB-25 evaluation's tuning: every candidate is what segment_boundaries gives."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from elektronn2.inference.segmentation import segment_boundaries

SCRIPT = Path(__file__).resolve().parents[2] / 'examples' / 'evaluate_fib25.py'


@pytest.fixture
def evaluate_fib25():
    spec = importlib.util.spec_from_file_location('evaluate_fib25', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cells(noise: float):
    """Ids (6, 30, 30): four cells (quadrants in y, x); a boundary map with a gap."""
    ids = np.ones((6, 30, 30), int)
    ids[:, :, 15:] = 2
    ids[:, 15:] += 2
    boundary = np.full(ids.shape, 0.05, np.float32)
    boundary += np.random.default_rng(0).uniform(0, noise, ids.shape).astype(np.float32)
    boundary[:, 14:16] = boundary[:, :, 14:16] = 0.9
    boundary[:, 5:8, 14:16] = 0.05  # a gap between cells 1 and 2
    boundary[:, 20:22, 20:22] = 0.7  # a speck inside cell 4
    return ids, boundary


def test_candidates_equal_segment_boundaries(evaluate_fib25, monkeypatch):
    monkeypatch.setattr(evaluate_fib25, 'SEED_THRESHOLDS', (0.5, 0.8))
    monkeypatch.setattr(evaluate_fib25, 'MIN_SIZES', (0, 60))
    _, boundary = cells(0.1)
    seen = 0
    for settings, segments in evaluate_fib25.candidates(boundary):
        np.testing.assert_array_equal(segments, segment_boundaries(boundary, **settings))
        seen += 1
    assert seen == len(evaluate_fib25.SEEDINGS) * 2 * len(evaluate_fib25.MERGE_THRESHOLDS) * 2


def test_tuning_chooses_on_valid_and_scores_test(evaluate_fib25, monkeypatch):
    monkeypatch.setattr(evaluate_fib25, 'SEED_THRESHOLDS', (0.5, 0.8))
    monkeypatch.setattr(evaluate_fib25, 'MERGE_THRESHOLDS', (None, 0.1))
    (ids, valid), (_, test) = cells(0), cells(0.02)
    best = evaluate_fib25.tuned_scores({0.0: {'valid': valid, 'test': test}},
                                       {'valid': ids, 'test': ids})
    assert best['settings']['seeds'] == 'distance' and best['settings']['sigma'] == 0.0
    assert best['valid']['voi'] < 0.1 and best['test']['segments'] == 4
    label = evaluate_fib25.settings_label(best['settings'])
    assert label.startswith('sigma 0.0, distance h ') and 'merge' in label


def test_blockwise_tuning_scores_the_blockwise_segmentation(evaluate_fib25, monkeypatch):
    """--blockwise: component seeds only; the test volume is segmented block by block (as
    elektronn2-segment does), the whole-volume flooding's scores kept beside it."""
    monkeypatch.setattr(evaluate_fib25, 'SEED_THRESHOLDS', (0.5, 0.8))
    monkeypatch.setattr(evaluate_fib25, 'MERGE_THRESHOLDS', (None, 0.5))
    monkeypatch.setattr(evaluate_fib25, 'BLOCKWISE_BLOCK', (3, 16, 16))
    (ids, valid), (_, test) = cells(0), cells(0.02)
    best = evaluate_fib25.tuned_scores({0.0: {'valid': valid, 'test': test}},
                                       {'valid': ids, 'test': ids}, blockwise=True)
    assert {row['settings']['seeds'] for row in best['all_valid']} == {'components'}
    assert best['test']['block_shape'] == [3, 16, 16]
    whole = best['test_whole_volume']
    assert abs(best['test']['voi'] - whole['voi']) < 0.1 and best['test']['segments'] >= 3
