"""Data-parallel training: a real ``torchrun --nproc-per-node 2`` run on CPUs (gloo)."""
import os
import subprocess
import sys
import textwrap

import numpy as np

import elektronn2.neuromancer as nm

DATA_MODULE = '''
import atexit, os
import numpy as np
import elektronn2.neuromancer as nm

FIRST_BATCH_SUMS = []


class RandomThresholds:
    """Random images; the target marks the centre pixels above 0.5."""

    def __init__(self, input_node, target_node):
        self.rng = np.random.default_rng(0)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)

    def getbatch(self, batch_size, source='train'):
        x = self.rng.random((batch_size, 1, 12, 12), dtype=np.float32)
        if source == 'train' and not FIRST_BATCH_SUMS:
            FIRST_BATCH_SUMS.append(float(x.sum()))
        return x, (x[:, :, 3:-3, 3:-3] > 0.5).astype(np.int16)


@atexit.register
def _dump():
    params = nm.model_manager.current.get_param_values()
    flat = {f"{node}.{key}": value for node, values in params.items()
            for key, value in values.items()}
    np.savez(os.path.join(os.environ['DUMP_DIR'], f"rank{os.environ['RANK']}.npz"),
             first_batch_sum=FIRST_BATCH_SUMS[0], **flat)
'''

CONFIG = '''
save_name = 'run'
data_class = ('thresholds.py', 'RandomThresholds')
batch_size = 4
n_steps = 10 ** 6
max_runtime = 10
history_freq = 20
monitor_batch_size = 4
param_save_it = 10 ** 6
background_processes = 0
optimiser = 'Adam'
optimiser_params = {'lr': 3e-3}


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 12, 12), 'b,f,x,y', name='raw')
    out = nm.Conv(inp, 6, (3, 3))
    out = nm.Conv(out, 2, (5, 5), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    return model
'''


def test_torchrun_two_ranks_stay_identical_and_only_rank0_writes(tmp_path):
    (tmp_path / 'thresholds.py').write_text(textwrap.dedent(DATA_MODULE))
    config = tmp_path / 'ddp.py'
    config.write_text(CONFIG)
    runs, dumps = tmp_path / 'runs', tmp_path / 'dumps'
    dumps.mkdir()
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               '--nproc-per-node', '2', '-m', 'elektronn2.training.cli', str(config),
               '--gpu', 'none', '--save-path', str(runs)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, DUMP_DIR=str(dumps), PYTHONUNBUFFERED='1'))
    assert result.returncode == 0, result.stdout + result.stderr

    # only rank 0 wrote a run directory and logged
    assert [p.name for p in runs.iterdir()] == ['run']
    log = (runs / 'run' / 'train.log').read_text()
    assert 'Training ends (max_runtime)' in log and '2 processes' in log
    assert result.stdout.count('Training ends') == 1
    assert 'rank 1' not in result.stdout + result.stderr

    # both ranks drew different batches but hold the same parameters, which trained
    rank0, rank1 = (np.load(dumps / f'rank{r}.npz') for r in (0, 1))
    assert rank0['first_batch_sum'] != rank1['first_batch_sum']
    final = nm.modelload(runs / 'run' / 'model-final.mdl')
    assert final.iterations > 5
    for key in rank0.files:
        if key != 'first_batch_sum':
            np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)
            node, param = key.split('.')
            np.testing.assert_array_equal(rank0[key], final[node].get_param_values()[param])
