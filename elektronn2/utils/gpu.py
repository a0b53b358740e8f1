"""ELEKTRONN2's GPU selection (``initgpu``, ``get_free_gpu``) for PyTorch.

``initgpu(n)`` makes CUDA device ``n`` the device of elektronn2
(``elektronn2.config.config.device = 'cuda:n'``) and torch's current device. Without
CUDA it logs that computations stay on the CPU and changes nothing, so scripts written
for a GPU machine run anywhere.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time

from ..config import config
from ..errors import ConfigError

logger = logging.getLogger('elektronn2')

_NO_GPU = ('none', 'None', 'cpu', 'false', 'False')
_INDEX = re.compile(r'^(?:cuda:?|gpu)?(\d+)$')
_POLL_SECONDS = 2.0


def initgpu(gpu: int | str | None) -> None:
    """Use CUDA device ``gpu``: an index (``0``, ``'1'``, ``'cuda0'``, ``'cuda:0'``,
    ``'gpu0'``), ``'auto'`` (the first GPU without processes, :func:`get_free_gpu`) or
    None / ``'none'`` (CPU)."""
    gpu = 'none' if gpu is None else str(gpu).strip()
    if gpu in _NO_GPU:
        logger.info("initgpu(%r): computing on the CPU", gpu)
        return
    if gpu.lower() == 'auto':
        index = get_free_gpu()
        if index < 0:
            logger.warning("initgpu('auto'): no free GPU found; computing on the CPU")
            return
        logger.info("initgpu('auto'): automatically assigning free GPU %d", index)
    else:
        match = _INDEX.match(gpu)
        if match is None:
            raise ConfigError(f"initgpu({gpu!r}): not understood; give a device index such as 0 "
                              f"or 'cuda:0', 'auto' or 'none'")
        index = int(match.group(1))
    import torch
    if not torch.cuda.is_available():
        logger.warning("initgpu(%r): CUDA is not available here; computing on the CPU", gpu)
        return
    if index >= torch.cuda.device_count():
        raise ConfigError(f"initgpu({gpu!r}): there are only {torch.cuda.device_count()} CUDA "
                          f"devices (0..{torch.cuda.device_count() - 1})")
    config.device = f'cuda:{index}'
    torch.cuda.set_device(index)
    logger.info("Initialising GPU to cuda:%d (%s)", index, torch.cuda.get_device_name(index))


def _busy_gpu_uuids() -> set[str] | None:
    """UUIDs (lower case, without 'GPU-') of GPUs running compute processes, by
    nvidia-smi; None when nvidia-smi is not there."""
    if shutil.which('nvidia-smi') is None:
        return None
    out = subprocess.run(['nvidia-smi', '--query-compute-apps=gpu_uuid', '--format=csv,noheader'],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        logger.warning("nvidia-smi failed (%s); cannot tell which GPUs are busy",
                       out.stderr.strip()[:200])
        return None
    return {line.strip().lower().removeprefix('gpu-') for line in out.stdout.splitlines()
            if line.strip()}


def get_free_gpu(wait: float = 0, nb_gpus: int = -1) -> int:
    """Index (torch's numbering) of the first CUDA device that runs no process, or -1.

    Args:
        wait: seconds to keep looking (every 2 s) while all GPUs are busy.
        nb_gpus: how many devices to consider (-1: all that torch sees).
    """
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    count = count if nb_gpus < 0 else min(nb_gpus, count)
    if count == 0:
        return -1
    deadline = time.monotonic() + wait
    while True:
        busy = _busy_gpu_uuids()
        if busy is None:
            logger.warning("nvidia-smi not found: cannot see other processes; taking GPU 0")
            return 0
        for index in range(count):
            uuid = str(torch.cuda.get_device_properties(index).uuid).lower().removeprefix('gpu-')
            if uuid not in busy:
                return index
        if time.monotonic() >= deadline:
            return -1
        time.sleep(_POLL_SECONDS)
