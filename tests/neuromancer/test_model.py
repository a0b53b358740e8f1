"""Model: designation, training with every optimiser, hyper-parameters, save/restore."""
import pickle
import zipfile

import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.errors import ConfigError, GraphError, ModelFileError, ShapeError
from elektronn2.neuromancer import modelfile


def build_classifier(bn=False, dropout=0.0):
    """A small 2-D CNN that separates bright from dark blobs (a learnable problem)."""
    inp = nm.Input((None, 1, 12, 12), 'b,f,x,y', name='raw')
    out = nm.Conv(inp, 6, (3, 3), (2, 2), batch_normalisation='train' if bn else False)
    out = nm.Conv(out, 8, (3, 3), dropout_rate=dropout)
    out = nm.Perceptron(out, 16, flatten=True)
    out = nm.Perceptron(out, 2, activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    errors = nm.Errors(probs, target, target_is_sparse=True)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs, prediction_ext=[loss, errors, probs])
    return model


def blob_batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, 12, 12)).astype(np.float32)
    x[:, :, 3:9, 3:9] += np.where(y, 1.0, -1.0)[:, None, None, None]
    return x, y[:, None].astype(np.int16)


@pytest.mark.parametrize('optimiser, lr', [('SGD', 0.05), ('AdaGrad', 0.05), ('AdaDelta', 1.0),
                                           ('Adam', 0.005), ('Rprop', 0.001), ('LBFGS', 0.1)])
def test_trainingstep_lowers_loss_with_each_optimiser(optimiser, lr):
    model = build_classifier()
    model.lr = lr
    x, y = blob_batch()
    before = model.loss(x, y)
    losses = [model.trainingstep(x, y, optimiser=optimiser)[0] for _ in range(15)]
    after = model.loss(x, y)
    assert after < 0.7 * before, (before, losses, after)
    assert model.iterations == 15
    assert np.isfinite(model.loss_smooth) and model.time_per_step > 0


def test_trainingstep_returns_debug_outputs_and_update_loss():
    model = build_classifier()
    model.designate_nodes(input_node='raw', target_node='target', loss_node='loss',
                          prediction_node='softmax', debug_outputs=['errors'])
    x, y = blob_batch()
    loss, t, debug = model.trainingstep(x, y, update_loss=True)
    assert isinstance(loss, float) and t > 0
    assert len(debug) == 1 and 0 <= float(debug[0]) <= 1


def test_recent_losses_are_read_only_and_restorable():
    model = build_classifier()
    x, y = blob_batch()
    losses = [model.trainingstep(x, y)[0] for _ in range(3)]
    assert model.recent_losses == tuple(losses)
    fresh = nm.Model('fresh')      # not registered, no nodes
    fresh.restore_recent_losses(model.recent_losses)
    assert fresh.recent_losses == model.recent_losses and fresh.iterations == 0
    assert fresh.loss_smooth == pytest.approx(np.mean(losses))
    fresh.restore_recent_losses(range(60))      # keeps the last 50
    assert fresh.recent_losses == tuple(float(v) for v in range(10, 60))


def test_hyper_parameters_reach_torch_optimisers():
    model = build_classifier()
    x, y = blob_batch()
    model.trainingstep(x, y, optimiser='Adam')
    model.trainingstep(x, y, optimiser='SGD')
    model.lr, model.mom, model.beta2, model.wd = 0.01, 0.5, 0.9, 1e-3
    adam = model.optimisers.get('Adam', list(model.loss_node.all_trainable_params.values()))
    sgd = model.optimisers.get('SGD', list(model.loss_node.all_trainable_params.values()))
    assert all(g['lr'] == 0.01 for g in adam.param_groups + sgd.param_groups)
    assert all(g['betas'] == (0.5, 0.9) for g in adam.param_groups)
    assert all(g['momentum'] == 0.5 for g in sgd.param_groups)
    # weight decay only on weights, not on biases
    assert {g['weight_decay'] for g in adam.param_groups if g['apply_reg']} == {1e-3}
    assert {g['weight_decay'] for g in adam.param_groups if not g['apply_reg']} == {0.0}
    assert model.lr == 0.01
    with pytest.raises(ConfigError, match="Unknown optimiser 'Adamax'"):
        model.trainingstep(x, y, optimiser='Adamax')
    with pytest.raises(ConfigError, match='finite number'):
        model.lr = -1


def test_dropout_rates_property():
    model = build_classifier(dropout=0.3)
    assert model.dropout_rates == [0.0, 0.3, 0.0, 0.0]
    model.dropout_rates = 0.1
    assert model.dropout_rates == [0.1] * 4
    with pytest.raises(GraphError, match='2 dropout rates given for 4 nodes'):
        model.dropout_rates = [0.1, 0.2]


def test_batch_normalisation_active():
    assert build_classifier(bn=True).batch_normalisation_active
    nm.model_manager.newmodel()
    assert not build_classifier().batch_normalisation_active


def test_node_call_compiles_once():
    model = build_classifier()
    x, _ = blob_batch(4)
    probs = model.prediction_node
    first = probs(x)
    fn = model.function([probs])
    second = probs(x)
    assert model.function([probs]) is fn
    np.testing.assert_array_equal(first, second)
    assert first.shape == (4, 2)


def test_predict_and_predict_ext():
    model = build_classifier()
    x, y = blob_batch(5)
    loss, err, probs = model.predict_ext(x, y)
    assert loss.shape == () and 0 <= err <= 1 and probs.shape == (5, 2)
    np.testing.assert_allclose(model.predict(x), probs)


def test_designation_errors():
    model = build_classifier()
    with pytest.raises(GraphError, match="no node 'nope'"):
        model.designate_nodes(input_node='nope')
    with pytest.raises(ShapeError, match='must be a scalar'):
        model.designate_nodes(input_node='raw', loss_node='nll')
    empty = nm.model_manager.newmodel()
    with pytest.raises(GraphError, match='designate_nodes\\(loss_node'):
        empty.trainingstep(np.zeros(1))


def test_unique_names_and_descriptors():
    inp = nm.Input((None, 1, 8), 'b,f,x')
    c0, c1, c2 = nm.Conv(inp, 2, 3), nm.Conv(inp, 2, 3), nm.Conv(inp, 2, 3, name='conv')
    assert (c0.name, c1.name, c2.name) == ('conv', 'conv1', 'conv2')
    d = c1.descriptor
    assert d['class'] == 'Conv' and d['args']['parent'] is inp and d['args']['n_f'] == 2
    assert d['args']['name'] == 'conv1'
    assert c0.children == [] and inp.children == [c0, c1, c2]


def test_summary_and_params():
    model = build_classifier()
    text = model.summary()
    assert 'softmax' in text and 'trainable parameters' in text and 'Conv' in text
    values = model.get_param_values()
    assert set(values['conv']) == {'w', 'b'}
    values['conv']['w'] = values['conv']['w'] * 0 + 1
    model.set_param_values(values)
    assert torch.all(model['conv'].params['w'] == 1)
    with pytest.raises(ShapeError, match='conv.w has shape'):
        model.set_param_values({'conv': {'w': np.zeros(3)}})
    with pytest.raises(GraphError, match="no parameter 'q'"):
        model.set_param_values({'conv': {'q': np.zeros(3)}})


def test_test_run_and_exectimes():
    model = build_classifier()
    out, seconds = model.test_run_prediction()
    assert out.shape == (1, 2) and seconds >= 0
    times = model.measure_exectimes(n_samples=2, n_warmup=1, print_info=False)
    assert set(times) >= {'conv', 'softmax'} and all(t >= 0 for t in times.values())


@pytest.mark.parametrize('as_directory', [False, True])
def test_save_and_modelload_roundtrip(tmp_path, as_directory):
    model = build_classifier(bn=True)
    x, y = blob_batch()
    for _ in range(3):
        model.trainingstep(x, y)
    model.lr = 0.0123
    path = tmp_path / ('model_dir/' if as_directory else 'model.mdl')
    if as_directory:
        path.mkdir()
    model.save(path)
    loaded = nm.modelload(path)
    assert loaded is not model and loaded is nm.model_manager.getmodel()
    assert list(loaded.nodes) == list(model.nodes)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for name, params in model.get_param_values().items():
        for key, value in params.items():
            np.testing.assert_array_equal(loaded.get_param_values()[name][key], value)
    assert loaded.lr == 0.0123 and loaded.iterations == 3
    assert loaded.loss_node.name == 'loss' and [n.name for n in loaded.prediction_ext] == \
        ['loss', 'errors', 'softmax']
    # a loaded model trains on
    loaded.trainingstep(x, y)


def test_save_is_atomic_and_overwrites(tmp_path):
    model = build_classifier()
    path = tmp_path / 'm.mdl'
    model.save(path)
    model.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.mdl']
    assert zipfile.ZipFile(path).namelist() == ['graph.json', 'params.safetensors']


class _Payload:
    def __reduce__(self):
        import os
        return os.system, ('touch PAYLOAD_RAN',)


def test_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'evil.mdl'
    path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(ModelFileError, match='pickle'):
        nm.modelload(path)
    # a zip with a pickle inside (as torch.save writes) is refused too
    with zipfile.ZipFile(tmp_path / 'torch.mdl', 'w') as zf:
        zf.writestr('archive/data.pkl', pickle.dumps(_Payload()))
    with pytest.raises(ModelFileError, match='not an elektronn2 model'):
        nm.modelload(tmp_path / 'torch.mdl')
    assert not (tmp_path / 'PAYLOAD_RAN').exists()


def test_corrupt_truncated_and_foreign_files(tmp_path):
    model = build_classifier()
    good = model.save(tmp_path / 'good.mdl')
    data = good.read_bytes()
    (tmp_path / 'trunc.mdl').write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelFileError, match='corrupt or truncated'):
        nm.modelload(tmp_path / 'trunc.mdl')
    (tmp_path / 'text.mdl').write_text('hello')
    with pytest.raises(ModelFileError, match='not a zip archive'):
        nm.modelload(tmp_path / 'text.mdl')
    with pytest.raises(ModelFileError, match='does not exist'):
        nm.modelload(tmp_path / 'missing.mdl')

    def rewrite(name, graph_edit=None, drop_param=False):
        graph, tensors = modelfile.read(good)
        if graph_edit:
            graph_edit(graph)
        if drop_param:
            tensors.pop('conv.w')
        path = tmp_path / name
        if path.exists():
            path.unlink()
        graph = {k: v for k, v in graph.items() if k not in ('format', 'version')} \
            if graph.get('format') == modelfile.FORMAT_NAME else graph
        modelfile.write(path, graph, tensors)
        return path

    evil_class = rewrite('cls.mdl', lambda g: g['nodes'][1].update({'class': 'os.system'}))
    with pytest.raises(ModelFileError, match="unknown class 'os.system'"):
        nm.modelload(evil_class)
    bad_args = rewrite('args.mdl', lambda g: g['nodes'][1]['args'].update({'bogus': 1}))
    with pytest.raises(ModelFileError, match='invalid arguments'):
        nm.modelload(bad_args)
    with pytest.raises(ModelFileError, match="missing \\['conv.w'\\]"):
        nm.modelload(rewrite('params.mdl', drop_param=True))


def test_future_format_version_refused(tmp_path):
    model = build_classifier()
    path = model.save(tmp_path / 'm.mdl')
    graph, tensors = modelfile.read(path)
    with zipfile.ZipFile(tmp_path / 'new.mdl', 'w') as zf:
        import json
        graph['version'] = 99
        zf.writestr('graph.json', json.dumps(graph))
        zf.writestr('params.safetensors', zipfile.ZipFile(path).read('params.safetensors'))
    with pytest.raises(ModelFileError, match='version 99.*upgrade'):
        nm.modelload(tmp_path / 'new.mdl')
