"""Data-parallel training with torch.distributed (several GPUs, CPU processes or nodes).

Start one process per GPU (or CPU worker) with torchrun::

    torchrun --nproc-per-node 4 -m elektronn2.training.cli CONFIG
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --nproc-per-node 8 \\
        -m elektronn2.training.cli CONFIG

(``elektronn2-train --distributed`` insists on it). Every process (rank) builds the model
and draws its own batches: its batches and dropout are seeded with the rank. Gradients are
averaged over the ranks during the backward pass by ``DistributedDataParallel`` (around
a thin ``nn.Module`` holding the training graph function), so every rank makes the same
update and the parameters stay identical.

Rank 0 is the chief: it alone writes the run directory, logs to the console and serves
the shell (reach it with ``elektronn2-shell RUN_DIR``; Ctrl+C under torchrun stops the
job). Before every step the chief broadcasts its decision: train on, stop (n_steps,
max_runtime, kill), or first hand out its state (parameters, optimiser state,
hyper-parameters, dropout rates, batch arguments), which it does after a shell pause or
a rollback after a non-finite loss. The other ranks wait for that decision, so they never
block in a collective that the chief does not reach; a pause in the shell longer than
:data:`COLLECTIVE_TIMEOUT` ends them. Python run in the shell that changes the data
object reaches rank 0's batch workers only.
"""
from __future__ import annotations

import datetime
import gc
import logging
import os

import numpy as np
import torch
import torch.distributed as dist

from ..config import config
from ..errors import ConfigError
from ..neuromancer import execution

logger = logging.getLogger('elektronn2')

#: how long ranks wait in a collective (e.g. for the chief, paused in the shell)
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=12)
STOP_REASONS = ('n_steps', 'max_runtime', 'kill', 'diverged')


class SingleProcess:
    """The coordination of a run in one process: every call is the identity or a no-op."""
    rank = 0
    world_size = 1
    is_chief = True

    def agree(self, stop_reason: str | None, share_state: bool) -> tuple[str | None, bool]:
        """The chief's (stop reason, whether to share its state), as every rank learns it."""
        return stop_reason, share_state

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks."""
        return value

    def share_state(self, trainer) -> None:
        """Give every rank the chief's parameters, optimiser state and batch settings."""

    def rank_seed(self, seed: int) -> int:
        """This rank's seed (batches, dropout) for the run's ``seed``."""
        return seed

    def wrap(self, model) -> None:
        """Make ``model.trainingstep`` average gradients over the ranks."""

    def from_chief(self, obj):
        """The chief's ``obj`` (picklable), on every rank."""
        return obj

    def close(self) -> None:
        """Leave the process group."""


class DataParallel(SingleProcess):
    """The coordination of one rank of a torchrun job (see the module docstring)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._wrapped_model = None
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_chief = self.rank == 0

    def agree(self, stop_reason: str | None, share_state: bool) -> tuple[str | None, bool]:
        code = STOP_REASONS.index(stop_reason) + 1 if stop_reason else 0
        decision = torch.tensor([code, int(share_state)], device=self.device)
        dist.broadcast(decision, src=0)
        code, share = (int(v) for v in decision.cpu())
        return (STOP_REASONS[code - 1] if code else None), bool(share)

    def mean(self, value: float) -> float:
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item()) / self.world_size

    def share_state(self, trainer) -> None:
        model = trainer.model
        with torch.no_grad():
            for param in model.all_params().values():
                dist.broadcast(param.data, src=0)
        settings = self.from_chief({'optimisers': _to_cpu(model.optimisers.state_dict()),
                                    'dropout_rates': model.dropout_rates,
                                    'batch_args': trainer.batch_args})
        if self.is_chief:
            return
        params = list(model.loss_node.all_trainable_params.values())
        model.optimisers.load_state_dict(settings['optimisers'], params)
        if settings['dropout_rates']:
            model.dropout_rates = settings['dropout_rates']
        if settings['batch_args'] != trainer.batch_args:
            trainer.batch_args = dict(settings['batch_args'])
            trainer.restart_batches()

    def rank_seed(self, seed: int) -> int:
        return int(np.random.SeedSequence((seed, self.rank)).generate_state(1)[0])

    def wrap(self, model) -> None:
        wrapped: dict = {}

        def parallel(function):
            if function not in wrapped:
                wrapped[function] = _data_parallel(function, model, self.device)
            return wrapped[function]
        model.parallel_wrapper = parallel
        self._wrapped_model = model

    def from_chief(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def close(self) -> None:
        # DistributedDataParallel's reducer must go while its process group still exists:
        # destroyed at interpreter exit, after the group, it can abort the process
        if self._wrapped_model is not None:
            self._wrapped_model.parallel_wrapper = None
            self._wrapped_model = None
            gc.collect()
        dist.destroy_process_group()


class _GraphModule(torch.nn.Module):
    """A training GraphFunction as the ``nn.Module`` that DistributedDataParallel wraps:
    its parameters are the loss's trainable parameters (shared, not copied)."""

    def __init__(self, function, params: dict[str, torch.nn.Parameter]):
        super().__init__()
        self.function = function
        for key, param in params.items():
            self.register_parameter(key.replace('.', '__'), param)

    def forward(self, *tensors: torch.Tensor, settings=None) -> tuple[torch.Tensor, ...]:
        return self.function(*tensors, settings=settings)


def _data_parallel(function, model, device: torch.device):
    from torch.nn.parallel import DistributedDataParallel

    # DDP's gradient buckets follow the parameters' layout at construction: arrange them first
    function.arrange_parameters(execution.resolve(device, update=True))
    module = _GraphModule(function, model.loss_node.all_trainable_params)
    device_ids = [device] if device.type == 'cuda' else None
    # running batch-norm statistics stay per rank; the chief's are saved and shared
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)


def _to_cpu(obj):
    """``obj`` with every tensor moved to the CPU (to send it pickled)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def start(requested: bool, gpu: str) -> SingleProcess:
    """Join the torchrun job when there is one (or ``requested``, which then needs one).

    ``gpu`` is elektronn2-train's ``--gpu``: 'none' trains on CPUs (gloo backend);
    'auto' uses the GPU of this rank's local index when CUDA is available (NCCL).
    Returns the coordination and sets ``elektronn2.config.device`` for this rank.
    """
    if requested and 'WORLD_SIZE' not in os.environ:
        raise ConfigError("--distributed: start elektronn2-train with torchrun, e.g. "
                          "`torchrun --nproc-per-node 2 -m elektronn2.training.cli CONFIG`")
    if int(os.environ.get('WORLD_SIZE', '1')) == 1:
        return SingleProcess()
    if gpu not in ('auto', 'none'):
        raise ConfigError(f"--gpu {gpu}: under torchrun each rank uses the GPU of its local "
                          f"rank; give --gpu auto or --gpu none")
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if gpu == 'auto' and torch.cuda.is_available():
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
        backend = 'nccl'
    else:
        device = torch.device('cpu')
        backend = 'gloo'
    config.device = str(device)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    parallel = DataParallel(device)
    logger.info("Rank %d of %d on %s (%s)", parallel.rank, parallel.world_size, device, backend)
    return parallel
