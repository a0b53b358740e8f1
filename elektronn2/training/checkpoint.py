"""Checkpoints: everything needed to continue a run exactly, written atomically, no pickles.

A checkpoint is a directory ``checkpoints/step-<N>/`` holding ``model.mdl``
(graph + parameters), ``state.json`` (step, timing, hyper-parameters, schedule
states, RNG states, the optimisers' non-tensor state) and ``tensors.safetensors``
(optimiser tensors, torch RNG states). It is written to a temporary directory
and renamed into place, so a directory named ``step-<N>`` is always complete.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch

from ..errors import ModelFileError

logger = logging.getLogger('elektronn2')

KEEP = 3  # most recent checkpoints kept
_PREFIX = 'step-'


def _split(obj, prefix: str, tensors: dict):
    """JSON-able copy of ``obj`` with tensors moved into ``tensors`` (by key)."""
    if torch.is_tensor(obj):
        # safetensors writes the raw buffer: C order (e.g. channels-last optimiser state)
        tensors[prefix] = np.ascontiguousarray(obj.detach().cpu().numpy())
        return {'__tensor__': prefix}
    if isinstance(obj, dict):
        if obj and all(isinstance(k, int) for k in obj):
            return {'__intkeys__': {str(k): _split(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}}
        return {str(k): _split(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def _join(obj, tensors: dict):
    """Inverse of :func:`_split`."""
    if isinstance(obj, dict):
        if set(obj) == {'__tensor__'}:
            return torch.from_numpy(tensors[obj['__tensor__']].copy())
        if set(obj) == {'__intkeys__'}:
            return {int(k): _join(v, tensors) for k, v in obj['__intkeys__'].items()}
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def rng_state() -> dict:
    """Python, numpy and torch random states (torch ones as tensors)."""
    state = {'python': random.getstate(), 'numpy': np.random.get_state(),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'].to(torch.uint8))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state['cuda']])


def save(run_dir: Path, model, state: dict) -> Path:
    """Write a checkpoint of ``model`` and the trainer ``state`` (must hold 'step').

    Refuses (ModelFileError) when a parameter is not finite; keeps the newest
    :data:`KEEP` checkpoints.
    """
    bad = [k for k, p in model.all_params().items() if not torch.isfinite(p).all()]
    if bad:
        raise ModelFileError(f"not saving a checkpoint: parameters {bad} are not finite")
    root = Path(run_dir) / 'checkpoints'
    root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.tmp-', dir=root))
    os.chmod(tmp, root.stat().st_mode & 0o777)
    try:
        model.save(tmp / 'model.mdl')
        tensors: dict = {}
        full_state = dict(state, optimisers=model.optimisers.state_dict(), rng=rng_state(),
                          iterations=model.iterations, elapsed_time=model.elapsed_time)
        (tmp / 'state.json').write_text(json.dumps(_split(full_state, 'state', tensors)))
        safetensors.numpy.save_file(tensors, str(tmp / 'tensors.safetensors'))
        target = root / f"{_PREFIX}{int(state['step']):09d}"
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / 'checkpoints'
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def load_state(checkpoint: Path) -> dict:
    """The trainer state of a checkpoint (tensors restored)."""
    tensors = safetensors.numpy.load_file(str(Path(checkpoint) / 'tensors.safetensors'))
    return _join(json.loads((Path(checkpoint) / 'state.json').read_text()), tensors)
