"""examples/affinities_fib25.py trains on nearest and long-range affinities of FIB-25;
examples/evaluate_fib25_affinities.py segments and scores its predictions end to end."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.errors import ConfigError
from elektronn2.training.experiment import ExperimentConfig, build_data, build_model

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'
CONFIG = EXAMPLES / 'affinities_fib25.py'


@pytest.fixture
def evaluation():
    spec = importlib.util.spec_from_file_location('evaluate_fib25_affinities',
                                                  EXAMPLES / 'evaluate_fib25_affinities.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_trains_on_long_range_affinities(real_data):
    exp = ExperimentConfig(CONFIG)
    offsets = exp.data_batch_args['affinity_offsets']
    assert offsets[:3] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]] and len(offsets) == 9
    model = build_model(exp)
    data = build_data(exp, model)
    data.reseed(0)
    batches = [data.getbatch(1, **exp.data_batch_args) for _ in range(4)]
    images, target = batches[0]
    assert target.shape == (1, 9, 28, 28, 28) and target.dtype == np.int16
    assert all(set(np.unique(t)) <= {-1, 0, 1} for _, t in batches)
    # a patch may lie inside one neuron; among a few, 9-voxel edges cross a boundary
    assert any((t[:, 6:] == 0).any() for _, t in batches)
    before = model.loss(images, target)
    loss, _, _ = model.trainingstep(images, target)
    assert np.isfinite(loss) and np.isfinite(before)
    _, valid = data.getbatch(2, source='valid', **exp.data_batch_args)
    assert valid.shape == (2, 9, 28, 28, 28)


def test_offsets_and_channels(evaluation):
    offsets = evaluation.data_offsets([[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -3, 0]],
                                      ('z', 'x', 'y'))
    assert offsets.tolist() == [[-1, 0, 0], [0, 0, -1], [0, -1, 0], [0, 0, -3]]
    assert evaluation.edge_set(offsets, 'nearest').tolist() == [0, 2, 1]
    assert evaluation.edge_set(offsets, 'all').tolist() == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match='lack the nearest neighbours'):
        evaluation.edge_set(offsets[1:], 'nearest')


def tiny_affinity_model(path: Path, n_edges: int = 9) -> Path:
    """An untrained affinity net (a Softmax per edge) of the example's interface."""
    nm.model_manager.newmodel('tiny_affinities')
    inp = nm.Input((None, 1, 12, 12, 12), 'b,f,z,y,x', name='raw')
    logits = nm.Conv(nm.Conv(inp, 2, (3, 3, 3)), 2 * n_edges, (1, 1, 1), activation_func='lin')
    probs = nm.Softmax(logits, n_class=2, n_indep=n_edges, name='affinities')
    target = nm.Input_like(probs, override_f=1, name='target', dtype='int16')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    model.save(path)
    return path


def test_evaluation_runs_end_to_end(evaluation, real_data, tmp_path, capsys):
    model = tiny_affinity_model(tmp_path / 'tiny.mdl')
    out = tmp_path / 'results.json'
    assert evaluation.main([str(model), '--quick', '--json', str(out),
                            '--predictions', str(tmp_path / 'affinities.npz')]) == 0
    results = json.loads(out.read_text())
    net = results['affinity_net']
    assert 1 <= len(net['all_valid']) <= 4  # untrained: high thresholds may find no seeds
    assert net['offsets_zyx'][:3] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
    assert {'voi', 'voi_split', 'voi_merge', 'adapted_rand_error'} <= set(net['test'])
    assert results['thresholded_raw']['test']['voi'] == 2.43
    printed = capsys.readouterr().out
    assert 'affinity_net' in printed and 'vs thresholded raw' in printed
    with np.load(tmp_path / 'affinities.npz') as stored:
        assert stored['affinities'].shape == (9, 90, 250, 250)
    nearest_only = tmp_path / 'nearest.py'  # default offsets: 3 edges, not 9
    nearest_only.write_text("data_class = 'BatchCreatorImage'\n"
                            "data_batch_args = {'affinities': True}\n\n\n"
                            "def create_model():\n    pass\n")
    with pytest.raises(ConfigError, match='has 18 channels; an affinity net of 3 edges'):
        evaluation.main([str(model), '--quick', '--config', str(nearest_only)])
