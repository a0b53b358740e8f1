"""Reduced precision: bf16 training converges like fp32 (MNIST, FIB-25); fp16 scales the loss."""
import h5py
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm
from elektronn2.config import config
from elektronn2.data import BatchCreatorImage, MNISTData, ids2barriers
from elektronn2.errors import ConfigError

STEPS = 200


def mnist_net():
    inp = nm.Input((None, 1, 26, 26), 'b,f,y,x', name='raw')
    out = nm.Conv(inp, 8, (3, 3), (2, 2), batch_normalisation='train')
    out = nm.Conv(out, 16, (3, 3), (2, 2))
    out = nm.Perceptron(out, 10, flatten=True, activation_func='lin')
    return inp, out


def fib25_net():
    inp = nm.Input((None, 1, 6, 37, 37), 'b,f,z,x,y', name='raw')
    out = nm.Conv(inp, 8, (1, 4, 4), (1, 2, 2))
    out = nm.Conv(out, 16, (2, 3, 3))
    out = nm.Conv(out, 16, (2, 3, 3))
    out = nm.Conv(out, 2, (1, 1, 1), activation_func='lin')
    return inp, out


def classifier(build):
    """A fresh model: ``build()`` -> (input, logits) plus softmax, target and loss."""
    nm.model_manager.newmodel('precision')
    torch.manual_seed(0)
    inp, logits = build()
    probs = nm.Softmax(logits)
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    model.lr = 3e-3
    return model


def loss_curve(build, batches, precision: str) -> np.ndarray:
    config.precision = precision
    model = classifier(build)
    return np.array([model.trainingstep(*batches[i % len(batches)])[0] for i in range(STEPS)])


def assert_bf16_trains_like_fp32(build, batches, min_reduction: float) -> None:
    fp32, bf16 = (loss_curve(build, batches, p) for p in ('fp32', 'bf16'))
    start = fp32[:10].mean()
    np.testing.assert_allclose(bf16[:10].mean(), start, rtol=0.02)
    end32, end16 = fp32[-50:].mean(), bf16[-50:].mean()
    assert end32 < (1 - min_reduction) * start, (start, end32)
    assert end16 < (1 - min_reduction) * start, (start, end16)
    assert abs(end16 - end32) < 0.2 * (start - end32), (start, end32, end16)


def test_bf16_trains_mnist_like_fp32(data_dir):
    inp, logits = mnist_net()
    data = MNISTData(inp, None, path=data_dir / 'mnist', seed=0)
    batches = [data.getbatch(16) for _ in range(STEPS)]
    assert_bf16_trains_like_fp32(mnist_net, batches, min_reduction=0.6)


@pytest.fixture(scope='module')
def fib25_volumes(data_dir):
    with h5py.File(data_dir / 'em' / 'fib25_training_sample2.h5', 'r') as f:
        raw = f['volumes/raw'][:60, :160, :160]
        ids = f['volumes/labels/neuron_ids'][:60, :160, :160]
    return raw, ids2barriers(ids)


def test_bf16_trains_fib25_boundaries_like_fp32(fib25_volumes):
    inp, logits = fib25_net()
    probs = nm.Softmax(logits)
    data = BatchCreatorImage(inp, nm.Input_like(probs, override_f=1, name='target'),
                             d_files=[fib25_volumes[0]], l_files=[fib25_volumes[1]],
                             aniso_factor=1, seed=0)
    batches = [data.getbatch(2, warp=0) for _ in range(100)]
    assert_bf16_trains_like_fp32(fib25_net, batches, min_reduction=0.15)


def test_fp16_training_scales_the_loss_and_unscales_the_gradients():
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 6, 37, 37), dtype=np.float32)
    y = (x[:, :, 1:5, 12:25, 12:25] > 0.5).astype(np.int16)     # the output's centre
    updates = {}
    for precision in ('fp32', 'fp16'):
        config.precision = precision
        model = classifier(fib25_net)
        model.lr, model.mom = 0.1, 0.0
        before = {k: p.detach().clone() for k, p in model.all_params().items()}
        model.trainingstep(x, y, optimiser='SGD')
        updates[precision] = {k: (p.detach() - before[k]) for k, p in model.all_params().items()}
    assert model.grad_scaler.get_scale() == 2.0 ** 16
    assert model.grad_scaler.state_dict()['_growth_tracker'] == 1    # one unskipped step
    for key, update in updates['fp32'].items():
        torch.testing.assert_close(updates['fp16'][key], update, rtol=0.05,
                                   atol=0.05 * float(update.abs().max()), msg=key)
    with pytest.raises(ConfigError, match="LBFGS"):
        model.trainingstep(x, y, optimiser='LBFGS')


FP16_CONFIG = """
data_class = ({blobs!r}, 'Blobs')
precision = 'fp16'
batch_size = 2
n_steps = 4
history_freq = 2
monitor_batch_size = 2
param_save_it = 2
background_processes = 0


def create_model():
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 1, 12, 12), 'b,f,x,y', name='raw')
    probs = nm.Softmax(nm.Conv(nm.Conv(inp, 4, 3), 2, 3, activation_func='lin'))
    target = nm.Input_like(probs, override_f=1, name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    return model
"""
BLOBS = """
import numpy as np


class Blobs:
    def __init__(self, *nodes):
        self.rng = np.random.default_rng(0)

    def getbatch(self, batch_size, source='train'):
        x = self.rng.random((batch_size, 1, 12, 12), dtype=np.float32)
        return x, (x[:, :, 2:-2, 2:-2] > 0.5).astype(np.int16)
"""


def test_trainer_checkpoints_and_resumes_the_fp16_loss_scale(tmp_path):
    from argparse import Namespace

    from elektronn2.training import checkpoint, cli
    from elektronn2.training.trainer import Trainer
    (tmp_path / 'blobs.py').write_text(BLOBS)
    (tmp_path / 'fp16.py').write_text(FP16_CONFIG.format(blobs=str(tmp_path / 'blobs.py')))
    args = Namespace(config=str(tmp_path / 'fp16.py'), resume=None, save_path=str(tmp_path))
    exp, model, data, preview, run_dir, state = cli.prepare(args)
    Trainer(exp, model, data, run_dir, interactive=False).run()
    saved = checkpoint.load_state(checkpoint.list_checkpoints(run_dir)[-1])['grad_scaler']
    assert saved == model.grad_scaler.state_dict() and saved['_growth_tracker'] > 0
    args = Namespace(config=None, resume=str(run_dir), save_path=None)
    exp, model, data, preview, run_dir, state = cli.prepare(args)
    resumed = Trainer(exp, model, data, run_dir, resume_state=state, interactive=False)
    assert model.grad_scaler.state_dict() == saved
    resumed.batches.close()
    resumed.history.close()
