"""The FIB-25 evaluation's tuning: every candidate is what segment_boundaries gives."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from elektronn2.errors import ConfigError
from elektronn2.inference.segmentation import segment_boundaries

SCRIPT = Path(__file__).resolve().parents[2] / 'examples' / 'evaluate_fib25.py'


@pytest.fixture
def evaluate_fib25():
    spec = importlib.util.spec_from_file_location('evaluate_fib25', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cells(noise: float):
    """Ids (10, 30, 30): four cells (quadrants in y, x); a boundary map with a gap."""
    ids = np.ones((10, 30, 30), int)
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
    # plain components join cells 1 and 2 through the gap; eroded components (the first
    # seeding that separates them, hence the choice on a tie) or distance seeds do not
    assert best['settings']['seeds'] == 'components' and best['settings']['sigma'] == 0.0
    assert best['settings']['seed_erosion'] >= 1
    assert best['valid']['voi'] < 0.1 and best['test']['segments'] == 4
    plain = [row['valid']['voi'] for row in best['all_valid'] if 'seed_erosion' not in
             row['settings'] and row['settings']['seeds'] == 'components']
    assert min(plain) >= 0.5  # cells 1 and 2 (each a quarter) joined: half a bit
    label = evaluate_fib25.settings_label(best['settings'])
    assert label.startswith('sigma 0.0, components eroded ') and 'merge' in label
    distance = [row['valid']['voi'] for row in best['all_valid']
                if row['settings']['seeds'] == 'distance']
    assert min(distance) < 0.1


def test_blockwise_candidates_equal_segment_volume(evaluate_fib25, monkeypatch):
    from elektronn2.inference.blockwise_segmentation import segment_volume
    monkeypatch.setattr(evaluate_fib25, 'SEED_THRESHOLDS', (0.5, 0.99))  # 0.99: no seeds
    monkeypatch.setattr(evaluate_fib25, 'MIN_SIZES', (0, 60))
    _, boundary = cells(0.1)
    seen = 0
    for settings, segments in evaluate_fib25.blockwise_candidates(boundary):
        options = {k: v for k, v in settings.items() if k != 'seeds'}
        np.testing.assert_array_equal(segments, segment_volume(boundary, (4, 16, 16), **options))
        seen += 1
    assert seen == evaluate_fib25.N_COMPONENT_SEEDINGS * len(evaluate_fib25.MERGE_THRESHOLDS) * 2


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
    assert {row['settings'].get('seed_erosion', 0) for row in best['all_valid']} == {0, 1, 2, 3}
    assert best['test']['block_shape'] == [3, 16, 16]
    whole = best['test_whole_volume']
    assert abs(best['test']['voi'] - whole['voi']) < 0.1 and best['test']['segments'] >= 3


def test_learned_candidates_equal_segment_volume_with_their_edge_model(evaluate_fib25,
                                                                       monkeypatch, tmp_path):
    """--learned: per seeding an edge model fitted on the training map; its candidates are
    elektronn2-segment's learned agglomeration, and tuning keeps the chosen model."""
    from functools import partial

    from elektronn2.inference.blockwise_segmentation import segment_volume
    monkeypatch.setattr(evaluate_fib25, 'SEED_THRESHOLDS', (0.8, 0.99))  # 0.99: no seeds
    monkeypatch.setattr(evaluate_fib25, 'MERGE_THRESHOLDS', (None, 0.3))
    monkeypatch.setattr(evaluate_fib25, 'LEARNED_THRESHOLDS', (0.3, 0.6))
    monkeypatch.setattr(evaluate_fib25, 'MIN_SIZES', (0,))
    (ids, train), (_, valid) = cells(0.3), cells(0.25)
    fitter = partial(evaluate_fib25.fit_edge_model_file, train, ids, str(tmp_path))
    learned = 0
    for settings, segments in evaluate_fib25.blockwise_candidates(valid, edge_models=fitter):
        options = {k: v for k, v in settings.items() if k != 'seeds'}
        np.testing.assert_array_equal(segments, segment_volume(valid, (4, 16, 16), **options))
        learned += 'edge_model' in settings
    assert learned >= 2  # seedings with contacts of both kinds get a model
    best = evaluate_fib25.tuned_scores({0.0: {'train': train, 'valid': valid, 'test': valid}},
                                       {'train': ids, 'valid': ids, 'test': ids},
                                       blockwise=True, learned=True)
    rows = [row for row in best['all_valid'] if 'edge_model' in row['settings']]
    assert rows and all(row['settings']['edge_model'] == 'learned' for row in rows)
    if 'edge_model' in best['settings']:
        assert best['edge_model']['format'] == 'elektronn2-edge-model'
        assert 'test_whole_volume' not in best
        assert 'merge learned ' in evaluate_fib25.settings_label(best['settings'])


def test_the_validation_volume_is_the_training_configs_validation_cube(evaluate_fib25, real_data,
                                                                       tmp_path):
    examples = SCRIPT.parent
    assert evaluate_fib25.splits(examples / 'unet3d_iso.py') == {
        'valid': slice(100, 160), 'test': slice(200, 250), 'train': slice(0, 100)}
    assert evaluate_fib25.splits(examples / 'neuro3d_lite.py')['valid'] == slice(160, 200)
    # a model in a run directory: its config.py, else unet3d_iso.py
    run = tmp_path / 'run'
    run.mkdir()
    assert evaluate_fib25.config_for(str(run / 'model.mdl')) == examples / 'unet3d_iso.py'
    config = (examples / 'unet3d_iso.py').read_text().replace('np.s_[100:160]',
                                                               'np.s_[150:210]')
    (run / 'config.py').write_text(config)
    assert evaluate_fib25.config_for(str(run / 'model.mdl')) == run / 'config.py'
    with pytest.raises(ConfigError, match=r'validation cube z 150-209 reaches into the test '
                                          r'volume z 200-249'):
        evaluate_fib25.splits(run / 'config.py')
    (run / 'config.py').write_text(config.replace("'valid_cubes': [2]", "'valid_cubes': []"))
    with pytest.raises(ConfigError, match='needs one validation cube'):
        evaluate_fib25.splits(run / 'config.py')


def test_pooled_voi_is_the_voi_of_the_volumes_together(evaluate_fib25):
    from elektronn2.inference.metrics import Contingency, scores
    (ids, valid), (_, other) = cells(0), cells(0.3)
    a = segment_boundaries(valid, seed_threshold=0.5).astype(np.int64)
    b = segment_boundaries(other, seed_threshold=0.9).astype(np.int64)
    both = scores(Contingency.of(np.concatenate([a, b + a.max()]),
                                 np.concatenate([ids, ids + 10])))
    pooled = evaluate_fib25.pooled({'a': evaluate_fib25.score(a, ids),
                                    'b': evaluate_fib25.score(b, ids)}, {'a': 9000, 'b': 9000})
    for key in ('voi', 'voi_split', 'voi_merge'):
        assert pooled[key] == pytest.approx(both[key])


def test_a_second_validation_volume_can_change_the_choice(evaluate_fib25, monkeypatch):
    """On a volume without the gap a low seed threshold wins (the first of the tied
    ones); with a second volume whose gap is interior at that threshold the pooled VOI
    chooses a higher one, right on both; a candidate without seeds in one volume drops
    out."""
    monkeypatch.setattr(evaluate_fib25, 'SEED_THRESHOLDS', (0.5, 0.8, 0.97))
    monkeypatch.setattr(evaluate_fib25, 'MERGE_THRESHOLDS', (None,))
    monkeypatch.setattr(evaluate_fib25, 'MIN_SIZES', (0,))
    ids, boundary = cells(0)
    closed = boundary.copy()
    closed[:, 5:8, 14:16] = 0.9
    faint = boundary.copy()
    faint[:, 5:8, 14:16] = 0.3                    # interior above 0.5, not above 0.8
    second = np.where(faint < 0.1, 0.02, faint)   # seeds above 0.97 only here
    maps = {'valid': closed, 'second': second, 'test': faint}
    truth = {'valid': ids, 'second': ids, 'test': ids}
    alone = evaluate_fib25.tuned_scores({0.0: maps}, truth, blockwise=True)
    assert alone['settings']['seed_threshold'] == 0.5 and alone['test']['voi'] >= 0.5
    both = evaluate_fib25.tuned_scores({0.0: maps}, truth, blockwise=True,
                                       validation=('valid', 'second'))
    assert both['settings']['seed_threshold'] == 0.8 and both['test']['voi'] < 0.1
    assert set(both['valid_volumes']) == {'valid', 'second'}
    weights = {'valid': ids.size, 'second': ids.size}
    assert both['valid']['voi'] == pytest.approx(
        evaluate_fib25.pooled(both['valid_volumes'], weights)['voi'])
    assert both['valid']['voi'] == min(row['valid']['voi'] for row in both['all_valid'])
    assert {row['settings']['seed_threshold'] for row in both['all_valid']} == {0.5, 0.8}


def test_gala_crops_are_the_two_labelled_fib_sem_crops(evaluate_fib25, real_data):
    crops = evaluate_fib25.gala_crops()
    assert list(crops) == ['gala_train', 'gala_test']
    for raw, ids in crops.values():
        assert raw.shape == ids.shape == (50, 100, 200) and raw.dtype == np.uint8
        assert ids.dtype == np.int64 and 0.05 < np.mean(ids == 0) < 0.1  # thin boundaries


def _small_boundary_model(path: Path, seed: int) -> str:
    """A 3-D valid-convolution net with random weights (seeded), saved to ``path``."""
    import torch

    import elektronn2.neuromancer as nm
    torch.manual_seed(seed)
    nm.model_manager.newmodel(f'ensemble{seed}')
    inp = nm.Input((None, 1, 8, 16, 16), 'b,f,z,y,x', name='raw')
    probs = nm.Softmax(nm.Conv(nm.Conv(inp, 3, 3), 2, 3, activation_func='lin'))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    return str(model.save(path))


def test_an_ensemble_averages_its_models_boundaries(evaluate_fib25, tmp_path):
    """Several model files: the mean of each one's boundary probability, cached under
    the digests of all of them (one model's cache is not taken for the ensemble's)."""
    first, second = (_small_boundary_model(tmp_path / f'm{seed}.mdl', seed) for seed in (1, 2))
    raw = np.random.default_rng(0).integers(0, 255, (250, 20, 20), dtype=np.uint8)
    alone = [evaluate_fib25.predict_boundaries([path], raw, 240) for path in (first, second)]
    assert alone[0].shape == (10, 20, 20) and not np.allclose(alone[0], alone[1])
    cache = str(tmp_path / 'cache.npz')
    evaluate_fib25.predict_boundaries([first], raw, 240, cache)
    both = evaluate_fib25.predict_boundaries([first, second], raw, 240, cache)
    np.testing.assert_allclose(both, (alone[0] + alone[1]) / 2, atol=1e-6)
    with np.load(cache) as stored:   # the ensemble's prediction replaced the single one
        np.testing.assert_array_equal(stored['boundary'], both)
    np.testing.assert_array_equal(
        evaluate_fib25.predict_boundaries([first, second], raw, 240, cache), both)
