"""Runs that cannot train: NaN/Inf input, a diverging learning rate. Each ends within
seconds with a non-zero exit and a message naming the cause, and leaves no model or
checkpoint with non-finite parameters on disk."""
import time

import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.training import checkpoint

BAD_DATA = '''
import numpy as np
from elektronn2.data import BatchCreatorImage


class BadAfter(BatchCreatorImage):
    """Training batches from the {first}-th on (in each process) hold {value} at voxel 7."""
    calls = 0

    def getbatch(self, batch_size=1, source='train', **kwargs):
        batch = super().getbatch(batch_size, source, **kwargs)
        if source == 'train':
            type(self).calls += 1
            if type(self).calls >= {first}:
                batch[0][0, 0, 0, 0, 7] = {value}
        return batch
'''


def _finite_models_only(run) -> None:
    assert not (run / 'model-final.mdl').exists()
    for ckpt in checkpoint.list_checkpoints(run):
        params = nm.modelload(ckpt / 'model.mdl').all_params()
        assert all(bool(torch.isfinite(p).all()) for p in params.values()), ckpt


@pytest.mark.parametrize('value', ['np.nan', 'np.inf', '-np.inf'])
@pytest.mark.parametrize('first', [1, 6])
def test_nonfinite_input_stops_the_run_naming_the_batch(tmp_path, write_config, train, bystander,
                                                        guard, value, first):
    (tmp_path / 'bad_data.py').write_text(BAD_DATA.format(first=first, value=value))
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=100000, history_freq=2,
                          param_save_it=2, preview_data_path=None, background_processes=1,
                          data_class=('bad_data.py', 'BadAfter'))
    run = tmp_path / 'runs' / 'run'
    started = time.time()
    with guard(tmp_path, run, tmp_path / '__pycache__'):
        result = train(config, '--gpu', 'none', timeout=120)
    assert time.time() - started < 60
    assert result.returncode == 1, result.stdout[-1500:] + result.stderr[-1500:]
    assert 'elektronn2-train: error:' in result.stderr and 'Traceback' not in result.stderr
    assert f'training batch {first - 1} from BadAfter.getbatch' in result.stderr
    assert 'NaN/Inf' in result.stderr and '(0, 0, 0, 0, 7)' in result.stderr
    assert 'Loss nan' not in result.stdout
    _finite_models_only(run)
    if first > 1:   # the steps made before the bad batch are kept in a checkpoint
        assert checkpoint.list_checkpoints(run)[-1].name == f'step-{first - 1:09d}'


@pytest.mark.parametrize('lr', [1e30, 1e10])
def test_diverging_run_rolls_back_then_stops(tmp_path, write_config, train, guard, lr):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=100000, history_freq=2,
                          param_save_it=2, preview_data_path=None, background_processes=1,
                          optimiser='SGD', optimiser_params={'lr': lr, 'mom': 0.9})
    run = tmp_path / 'runs' / 'run'
    started = time.time()
    with guard(tmp_path, run):
        result = train(config, '--gpu', 'none', timeout=120)
    assert time.time() - started < 60
    assert result.returncode == 1, result.stdout[-1500:] + result.stderr[-1500:]
    assert 'training diverged' in result.stderr and "optimiser_params['lr']" in result.stderr
    assert 'Traceback' not in result.stderr
    log = (run / 'train.log').read_text()
    assert log.count('rolled back') == 3, log    # one message per rollback, no flood
    assert len(log.splitlines()) < 80
    _finite_models_only(run)


NAN_TARGETS = '''
import numpy as np
from elektronn2.data import BatchCreatorImage


class UnlabelledCorner(BatchCreatorImage):
    """Float targets with a NaN (unlabelled) corner in every training batch."""

    def getbatch(self, batch_size=1, source='train', **kwargs):
        data, target, *rest = super().getbatch(batch_size, source, **kwargs)
        target = target.astype(np.float32)
        target[:, :, :, :4, :4] = np.nan
        return (data, target, *rest)
'''

SIGMOID_MODEL = '''
def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 5, 37, 37), 'b,f,z,x,y', name='raw')
    out = nm.Conv(inp, 4, (1, 4, 4), (1, 2, 2))
    out = nm.Conv(out, 8, (2, 3, 3))
    prob = nm.Conv(out, 1, (1, 1, 1), activation_func='sigmoid')
    target = nm.Input_like(prob, name='target')
    loss = nm.AggregateLoss(nm.BinaryNLL(prob, target), name='loss')
    errors = nm.Errors(prob, target)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=prob, prediction_ext=[loss, errors, prob])
    return model
'''


@pytest.mark.parametrize('model', ['sigmoid', 'softmax'])
def test_nan_targets_train_only_where_the_losses_read_them_as_unlabelled(
        tmp_path, write_config, train, guard, model):
    """BinaryNLL and Errors skip NaN targets (e.g. affinities to unknown partners): such
    batches train; the sparse MultinoulliNLL does not: refused, naming the node."""
    (tmp_path / 'nan_targets.py').write_text(NAN_TARGETS)
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=6, history_freq=3,
                          param_save_it=100, preview_data_path=None, background_processes=0,
                          data_class=('nan_targets.py', 'UnlabelledCorner'))
    if model == 'sigmoid':
        config.write_text(config.read_text() + SIGMOID_MODEL)   # replaces create_model
    run = tmp_path / 'runs' / 'run'
    with guard(tmp_path, run, tmp_path / '__pycache__'):
        result = train(config, '--gpu', 'none', timeout=180)
    if model == 'sigmoid':
        assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
        params = nm.modelload(run / 'model-final.mdl').all_params()
        assert all(bool(torch.isfinite(p).all()) for p in params.values())
    else:
        assert result.returncode == 1, result.stdout[-1500:] + result.stderr[-1500:]
        assert "MultinoulliNLL 'nll' would not" in result.stderr.replace('\n', ' ')
        assert 'Traceback' not in result.stderr
