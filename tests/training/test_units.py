"""Config validation, schedules, checkpoints and recovery from non-finite losses."""
import logging
import math

import numpy as np
import pytest
import torch

from elektronn2.errors import ConfigError
from elektronn2.training import checkpoint, cli
from elektronn2.training.experiment import ExperimentConfig
from elektronn2.training.schedules import Schedule


def test_unknown_setting_warns_with_closest_name(tmp_path, write_config, caplog):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs')
    config.write_text(config.read_text() + '\nhistory_frq = 7\n_private = 1\nimport os\n')
    with caplog.at_level(logging.WARNING, logger='elektronn2'):
        exp = ExperimentConfig(config)
    assert "unknown setting 'history_frq' is ignored; did you mean 'history_freq'?" in caplog.text
    assert '_private' not in caplog.text and exp.history_freq == 10


@pytest.mark.parametrize('line, message', [
    ("batch_size = 'two'", "batch_size='two' must be of type int"),
    ("n_steps = 0", "n_steps=0 must be >= 1"),
    ("optimiser_params = {'lr': 1, 'momentum': 0.9}", "unknown keys ['momentum']"),
    ("schedules = {'lr': 0.99}", "schedules['lr'] must be a dict"),
    ("data_class = None", "data_class is missing"),
    ("raise RuntimeError('boom')", "raised RuntimeError while loading: boom"),
])
def test_invalid_settings_name_the_key(tmp_path, write_config, line, message):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs')
    config.write_text(config.read_text() + '\n' + line + '\n')
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(config)
    assert message in str(info.value)


def test_schedules():
    dec = Schedule.from_spec('lr', {'dec': 0.5})
    assert dec.value_at(999, 1.0) is None and dec.value_at(1000, 1.0) == 0.5
    upd = Schedule.from_spec('mom', {'updates': [(10, 0.5), (5, 0.7)]})
    assert upd.value_at(5, 0.9) == 0.7 and upd.value_at(6, 0.7) is None and upd.value_at(10, 0.7) == 0.5
    lin = Schedule.from_spec('dropout', {'lindec': [100, 0.5]})   # from 0.5 down to 0 (ELEKTRONN2)
    assert lin.value_at(0, 0.9) == 0.5 and lin.value_at(1, 0.5) == pytest.approx(0.495)
    assert lin.value_at(50, 0.3) == pytest.approx(0.25)
    assert lin.value_at(100, 0.1) == 0.0 and lin.value_at(101, 0.0) is None
    restored = Schedule.from_spec('dropout', {'lindec': [100, 0.5]})
    restored.load_state(lin.state())
    assert restored.value_at(50, 0.9) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match='exactly one'):
        Schedule.from_spec('lr', {'dec': 0.5, 'lindec': [1, 2]})


def test_schedules_continue_from_a_value_set_by_hand():
    lin = Schedule.from_spec('lr', {'lindec': [100, 1.0]})
    lin.value_at(1, 1.0)
    assert lin.continue_from(50, 0.1) == ("the 'lindec' schedule now continues from it to 0 "
                                          "at step 100")
    assert lin.value_at(51, 0.1) == pytest.approx(0.098) and lin.value_at(100, 0.0) == 0.0
    restored = Schedule.from_spec('lr', {'lindec': [100, 1.0]})
    restored.load_state(lin.state())  # a checkpoint keeps it
    assert restored.value_at(75, 0.05) == pytest.approx(0.05)
    assert 'has ended' in lin.continue_from(100, 0.3) and lin.value_at(100, 0.3) is None
    dec = Schedule.from_spec('lr', {'dec': 0.5})
    assert 'multiplies it by 0.5' in dec.continue_from(10, 0.2) and dec.value_at(1000, 0.2) == 0.1
    upd = Schedule.from_spec('mom', {'updates': [(10, 0.5)]})
    assert 'next update at step 10' in upd.continue_from(3, 0.7) and upd.value_at(4, 0.7) is None


def test_checkpoint_roundtrip_and_refusal(tmp_path):
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 3), 'b,f', name='raw')
    out = nm.Perceptron(inp, 2, activation_func='lin')
    target = nm.Input_like(out, name='target')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target,
                          loss_node=nm.AggregateLoss(nm.SquaredLoss(out, target)))
    x, y = np.random.rand(4, 3).astype(np.float32), np.random.rand(4, 2).astype(np.float32)
    model.trainingstep(x, y)
    np.random.seed(5)
    path = checkpoint.save(tmp_path, model, {'step': 7})
    expected_draw = np.random.rand()
    state = checkpoint.load_state(path)
    assert state['step'] == 7 and state['iterations'] == 1
    checkpoint.set_rng_state(state['rng'])
    assert np.random.rand() == expected_draw
    exp_avg = model.optimisers.state_dict()['optimisers']['Adam']['state'][0]['exp_avg']
    assert torch.equal(state['optimisers']['optimisers']['Adam']['state'][0]['exp_avg'], exp_avg)
    with torch.no_grad():
        out.params['w'][0, 0] = math.nan
    with pytest.raises(Exception, match='not finite'):
        checkpoint.save(tmp_path, model, {'step': 8})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ['step-000000007']


NAN_DATA = '''
import numpy as np
from elektronn2.data import BatchCreatorImage


class NaNAtBatch(BatchCreatorImage):
    """Training batches number 15 and 16 (counted in this process) are so large (finite)
    that the loss overflows to NaN."""
    calls = 0

    def getbatch(self, batch_size=1, source='train', **kwargs):
        batch = super().getbatch(batch_size, source, **kwargs)
        if source == 'train':
            type(self).calls += 1
            if type(self).calls in (15, 16):
                return (np.full_like(batch[0], 3e38),) + tuple(batch[1:])
        return batch
'''


def test_nonfinite_loss_rolls_back_and_lowers_lr(tmp_path, write_config, capsys):
    (tmp_path / 'nan_data_for_test.py').write_text(NAN_DATA)
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=30, history_freq=5,
                          background_processes=0, preview_data_path=None,
                          data_class=('nan_data_for_test.py', 'NaNAtBatch'))
    assert cli.main([str(config), '--gpu', 'none']) == 0
    run = tmp_path / 'runs' / 'run'
    log = (run / 'train.log').read_text()
    assert log.count('parameters rolled back to step 10, lr lowered') == 2
    lrs = [float(line.split(',')[7]) for line in (run / 'history.csv').read_text().splitlines()[1:]]
    assert lrs[0] == 1e-3 and lrs[-1] == pytest.approx(2.5e-4)
    for ckpt in checkpoint.list_checkpoints(run):
        import elektronn2.neuromancer as nm
        params = nm.modelload(ckpt / 'model.mdl').all_params()
        assert all(torch.isfinite(p).all() for p in params.values())


def test_history_rows_plots_and_custom_targets(tmp_path):
    from elektronn2.training.history import History
    history = History(tmp_path, extra_columns=('boundary_fraction',))
    for step in (1, 10, 20):
        history.append({'step': step, 'train_loss': 1.0 / step, 'valid_err': 0.1,
                        'boundary_fraction': 0.2 + step / 100})
    written = {p.name for p in history.plot(tmp_path)}
    assert written == {'loss.png', 'errors.png', 'timeline.png', 'custom.png'}
    history.truncate_after(10)
    history.close()
    reread = History(tmp_path, extra_columns=('boundary_fraction',), tensorboard=False)
    assert [r['step'] for r in reread.rows] == [1, 10]
    assert reread.column('boundary_fraction')[-1] == pytest.approx(0.3)
    assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
