"""Learned agglomeration: contact histograms and features by hand, the logistic fit, the
JSON file and what loading refuses, equality with mean linkage for a mean-only model, the
oracle training examples, and on FIB-25: fitted on one crop, blockwise-exact and better
than no merging on another."""
import json

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi

from elektronn2.errors import ConfigError, DataError
from elektronn2.inference.blockwise_segmentation import (
    fit_edge_model,
    segment_volume,
    sweep_volume,
)
from elektronn2.inference.edge_model import (
    FEATURES,
    EdgeModel,
    contact_features,
    fit,
    learned_linkage,
    region_labels,
    training_examples,
)
from elektronn2.inference.metrics import Contingency, scores
from elektronn2.inference.region_graph import QUANTUM, RegionGraph, mean_linkage
from elektronn2.inference.segmentation import region_graph


def pairs_graph(rows, bins=4):
    """A RegionGraph with histograms of (a, b, pair mean) rows, one voxel pair each."""
    a, b, mean = (np.array(c) for c in zip(*rows))
    values = np.rint(np.array(mean, float) * 2 * QUANTUM).astype(np.int64)
    return RegionGraph.of_pairs(a, b, values, values // 2, bins=bins)


def test_histograms_add_up_over_partial_graphs_and_relabelling():
    g = pairs_graph([(1, 2, 0.1), (2, 1, 0.6), (1, 2, 1.0), (2, 3, 0.3), (3, 3, 0.9)])
    assert g.pairs.tolist() == [[1, 2], [2, 3]]
    # bins of [0, 1] in quarters; 1.0 goes into the last one
    assert g.histograms.tolist() == [[1, 0, 1, 1], [0, 1, 0, 0]]
    doubled = RegionGraph.concat([g, g])
    assert (doubled.histograms == 2 * g.histograms).all()
    joined = g.relabel(np.array([0, 1, 2, 1]))   # 3 joins 1: one edge 1-2
    assert joined.histograms.tolist() == [[1, 1, 1, 1]] and joined.counts.tolist() == [4]
    assert RegionGraph.concat([g, RegionGraph.empty(4)]).histograms.shape == (2, 4)
    with pytest.raises(ValueError, match='histogram bins'):
        RegionGraph.concat([g, pairs_graph([(1, 2, 0.5)], bins=8)])


def test_contact_features_by_hand():
    # 4 pairs: values 0.1, 0.1, 0.6, 0.9 in 4 bins
    sums = np.array([np.rint((0.1 + 0.1 + 0.6 + 0.9) * 2 * QUANTUM)])
    histogram = np.array([[2, 0, 1, 1]])
    row = dict(zip(FEATURES, contact_features(sums, np.array([4]), histogram,
                                              np.array([8]), np.array([1000]))[0]))
    assert row['mean'] == pytest.approx(0.425)
    centres = np.array([0.125, 0.125, 0.625, 0.875])
    assert row['std'] == pytest.approx(np.sqrt((centres ** 2).mean() - 0.425 ** 2))
    # quantiles: the first bin whose cumulative share reaches q, at its centre
    assert [row[f'quantile_{q}'] for q in (0.1, 0.25, 0.5, 0.75, 0.9)] == [
        0.125, 0.125, 0.125, 0.625, 0.875]
    assert row['log_contact'] == pytest.approx(np.log(4))
    assert row['log_smaller_size'] == pytest.approx(np.log(8))
    assert row['log_larger_size'] == pytest.approx(np.log(1000))
    assert row['contact_per_smaller_surface'] == pytest.approx(4 / 8 ** (2 / 3))


def test_fit_is_the_regularised_logistic_optimum():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, len(FEATURES)))
    different = features[:, 0] + 0.5 * features[:, 3] + rng.normal(0, 0.5, 400) > 0
    model = fit(features, different)
    p = model.probability(features)
    assert ((p > 0.5) == different).mean() > 0.85
    # first-order optimality of log-loss + |w|^2 / 2 in the standardised features
    standard = (features - model.mean) / model.scale
    residual = p - different
    assert np.abs(standard.T @ residual + model.weights).max() < 1e-3
    assert abs(residual.sum()) < 1e-3
    assert model.info['examples'] == 400
    with pytest.raises(ConfigError, match='needs both kinds'):
        fit(features, np.zeros(400, bool))


def test_saved_model_round_trips_and_bad_files_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    model = fit(rng.normal(size=(50, len(FEATURES))), rng.random(50) > 0.5, info={'by': 'test'})
    path = tmp_path / 'edge.json'
    model.save(path)
    loaded = EdgeModel.load(path)
    features = rng.normal(size=(5, len(FEATURES)))
    np.testing.assert_array_equal(loaded.probability(features), model.probability(features))
    assert loaded.info['by'] == 'test' and loaded.bins == model.bins
    stored = json.loads(path.read_text())
    bad = [({'format': 'pickle'}, "'format' is not"),
           ({'version': 2}, "'version' 2"),
           ({'features': ['mean']}, "'features'.*differ"),
           ({'weights': [1.0] * 3}, "'weights' must be a list of 11 finite numbers"),
           ({'mean': [float('nan')] * 11}, "'mean' must be"),
           ({'scale': [0.0] * 11}, "'scale' must be positive"),
           ({'bias': 'os.system'}, "'bias' 'os.system' is not a finite number"),
           ({'bins': 1}, "'bins' 1")]
    for change, message in bad:
        path.write_text(json.dumps({**stored, **change}))
        with pytest.raises(DataError, match=f"edge model '{path}': {message}"):
            EdgeModel.load(path)
    path.write_text('{not json')
    with pytest.raises(DataError, match='not readable as JSON'):
        EdgeModel.load(path)
    with pytest.raises(DataError, match='not readable'):
        EdgeModel.load(tmp_path / 'missing.json')


def mean_only_model(slope=8.0, centre=0.4, bins=32):
    """P(different) = sigmoid(slope * (mean - centre)): increasing in the mean alone."""
    weights = np.zeros(len(FEATURES))
    weights[0] = slope
    return EdgeModel(np.zeros(len(FEATURES)), np.ones(len(FEATURES)), weights,
                     -slope * centre, bins)


@pytest.fixture(scope='module')
def fib25_maps(fib25):
    """Two FIB-25 crops (z 0-40 and 40-80, y 0-96, x 0-96): the thresholded-raw boundary
    map and the neuron ids of each."""
    with h5py.File(fib25) as f:
        raw = f['volumes/raw'][:80, :96, :96].astype(np.float32)
        ids = f['volumes/labels/neuron_ids'][:80, :96, :96].astype(np.int64)
    smooth = ndi.gaussian_filter(raw, 1.0)
    low, high = np.percentile(smooth, (1, 99))
    boundary = (1 - np.clip((smooth - low) / (high - low), 0, 1)).astype(np.float32)
    return (boundary[:40], ids[:40]), (boundary[40:], ids[40:])


def test_a_mean_only_model_agglomerates_as_mean_linkage(fib25_maps):
    (boundary, _), _ = fib25_maps
    ids = segment_volume(boundary, seed_threshold=0.7).astype(np.int64)
    graph = region_graph(ids, boundary)
    graph = RegionGraph.of_pairs(graph.pairs[:, 0], graph.pairs[:, 1], graph.sums,
                                 graph.saddles, graph.counts)  # no histograms yet
    with_histograms = _with_histograms(ids, boundary)
    sizes = np.bincount(ids.ravel())
    model = mean_only_model()
    n = int(ids.max())
    for mean_threshold in (0.2, 0.35, 0.5):
        probability = 1 / (1 + np.exp(-8.0 * (mean_threshold - 0.4)))
        learned = learned_linkage(n, with_histograms, sizes, model, probability)
        np.testing.assert_array_equal(learned, mean_linkage(n, graph, mean_threshold))
    assert len(np.unique(learned)) < 0.6 * n  # merged a lot at 0.5
    with pytest.raises(ConfigError, match='histograms'):
        learned_linkage(n, graph, sizes, model, 0.5)
    with pytest.raises(ConfigError, match='8 bins, the edge model was fitted with 32'):
        learned_linkage(n, _with_histograms(ids, boundary, 8), sizes, model, 0.5)


def _with_histograms(ids, boundary, bins=32):
    from elektronn2.inference.basins import contact_graph
    return contact_graph(ids, boundary, (0, 0, 0), bins=bins)


def test_training_examples_follow_the_truth_joins():
    # regions 1, 2 (neuron 7), 3 (neuron 9), 4 (unknown); contacts 1-2, 1-3, 2-3, 3-4
    g = pairs_graph([(1, 2, 0.2), (1, 3, 0.8), (2, 3, 0.6), (3, 4, 0.1)])
    sizes = np.array([0, 10, 20, 30, 40])
    labels = np.array([0, 7, 7, 9, 0])
    features, different = training_examples(g, sizes, labels)
    # three initial contacts between known regions, then 1+2 against 3 (the union)
    assert different.tolist() == [False, True, True, True]
    union = dict(zip(FEATURES, features[-1]))
    assert union['mean'] == pytest.approx(0.7)
    assert np.exp(union['log_smaller_size']) == pytest.approx(30)
    assert np.exp(union['log_larger_size']) == pytest.approx(30)
    assert np.exp(union['log_contact']) == pytest.approx(2)
    assert region_labels(np.array([[1, 1, 2], [2, 3, 0]]),
                         np.array([[5, 0, 6], [6, 0, 5]])).tolist() == [5, 5, 6, 0]


def test_fitted_on_one_crop_exact_blockwise_and_better_than_no_merging_on_another(
        fib25_maps, tmp_path):
    (train_map, train_ids), (map_, truth) = fib25_maps
    seeds = dict(seed_threshold=0.7, seed_erosion=1.0)
    model = fit_edge_model(train_map, train_ids, **seeds)
    assert model.info['examples'] > 100 and 0 < model.info['different_fraction'] < 1
    assert model.info['settings']['seed_threshold'] == 0.7
    # the same model from blocks: every count is exact
    blocks = fit_edge_model(train_map, train_ids, (16, 40, 24), **seeds)
    np.testing.assert_array_equal(blocks.weights, model.weights)
    path = tmp_path / 'edge.json'
    model.save(path)
    options = dict(seeds, edge_model=str(path), merge_threshold=0.5, min_size=50)
    whole = segment_volume(map_, **options)
    for block_shape in [(16, 16, 16), (7, 40, 33)]:
        np.testing.assert_array_equal(segment_volume(map_, block_shape, **options), whole)
    unmerged, learned = (scores(Contingency.of(seg, truth)) for seg in sweep_volume(
        map_, [dict(merge_threshold=None, min_size=50), {}], **options))
    assert learned['voi'] < unmerged['voi'] - 0.3
    assert learned['voi'] == scores(Contingency.of(whole, truth))['voi']


def test_segmentation_settings_refuse_a_bad_edge_model_before_any_work(tmp_path):
    volume = np.zeros((4, 5, 6), np.float32)
    with pytest.raises(DataError, match='not readable'):
        segment_volume(volume, edge_model=str(tmp_path / 'missing.json'), merge_threshold=0.5)
    mean_only_model().save(tmp_path / 'edge.json')
    with pytest.raises(ConfigError, match=r'merge_threshold=2.0.*probability in \(0, 1\]'):
        segment_volume(volume, edge_model=str(tmp_path / 'edge.json'), merge_threshold=2.0)
    with pytest.raises(ConfigError, match='without histograms'):
        list(sweep_volume(volume, [dict(edge_model=str(tmp_path / 'edge.json'),
                                        merge_threshold=0.5)]))
    with pytest.raises(Exception, match=r'ground truth of shape \(4, 5, 5\)'):
        fit_edge_model(volume, np.zeros((4, 5, 5), np.int64))
