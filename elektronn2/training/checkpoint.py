"""Checkpoints: everything needed to continue a run exactly, written atomically, no pickles.

A checkpoint is a directory ``checkpoints/step-<N>/`` holding ``model.mdl``
(graph + parameters), ``state.json`` (step, timing, hyper-parameters, schedule
states, RNG states, the optimisers' non-tensor state) and ``tensors.safetensors``
(optimiser tensors, torch RNG states). It is written to a temporary directory
and renamed into place, so a directory named ``step-<N>`` is complete unless the disk
lost it (a crash before the data reached the disk); :func:`load_newest` then falls back
to an older one. A save interrupted by kill -9 leaves a ``.tmp-*`` directory that
``--resume`` removes (:func:`remove_temporaries`). ELEKTRONN2's model names
(``<save_name>-LAST.mdl``, ``-FINAL.mdl``) are second names of these files (:func:`alias`).
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import safetensors.numpy
import torch

from ..errors import ConfigError, Error, ModelFileError
from ..neuromancer.loading import modelload

if TYPE_CHECKING:
    from ..neuromancer.model import Model

logger = logging.getLogger('elektronn2')

KEEP = 3  # most recent checkpoints kept
_PREFIX = 'step-'
_NAME = re.compile(rf'{_PREFIX}(\d+)')


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

    Refuses (ModelFileError from :meth:`Model.save`, before anything is written) when a
    parameter is not finite; keeps the newest :data:`KEEP` checkpoints.
    """
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


def alias(source: Path, target: Path) -> Path:
    """``target`` as a second name of the file ``source``: a hard link (a copy where the
    file system has none), replacing ``target`` atomically."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)
    return target


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoint directories ``step-<N>``, oldest first; other names are ignored."""
    root = Path(run_dir) / 'checkpoints'
    if not root.is_dir():
        return []
    found = [(int(match[1]), path) for path in root.iterdir()
             if (match := _NAME.fullmatch(path.name)) and path.is_dir()]
    return [path for _, path in sorted(found)]


def load_state(checkpoint: Path) -> dict:
    """The trainer state of a checkpoint (tensors restored); ModelFileError if it is
    missing or corrupt."""
    checkpoint = Path(checkpoint)
    try:
        tensors = safetensors.numpy.load_file(str(checkpoint / 'tensors.safetensors'))
        state = _join(json.loads((checkpoint / 'state.json').read_text()), tensors)
    except Exception as err:  # missing files, JSON, safetensors and structure errors alike
        raise ModelFileError(f"checkpoint {str(checkpoint)!r}: state.json or tensors.safetensors "
                             f"is missing or corrupt ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or not isinstance(state.get('step'), int):
        raise ModelFileError(f"checkpoint {str(checkpoint)!r}: state.json holds no 'step'")
    return state


def load_newest(run_dir: Path, set_aside_broken: bool = True) -> tuple[Path, Model, dict]:
    """(checkpoint, model, trainer state) of the newest intact checkpoint of ``run_dir``.

    Broken newer ones are skipped with a warning and, with ``set_aside_broken``, renamed
    to ``step-<N>.broken-<time>`` (kept for inspection, no longer listed). ConfigError
    when there is no intact checkpoint.
    """
    checkpoints = list_checkpoints(run_dir)
    broken: list[str] = []
    for path in reversed(checkpoints):
        try:
            state = load_state(path)
            model = modelload(path / 'model.mdl')
        except Error as err:
            logger.warning("Skipping broken checkpoint %s: %s", path, err)
            broken.append(f"{path.name}: {err}")
            continue
        if broken:
            logger.warning("Resuming from %s, the newest intact checkpoint", path)
            if set_aside_broken:
                _set_aside(checkpoints[checkpoints.index(path) + 1:])
        return path, model, state
    where = str(Path(run_dir) / 'checkpoints')
    if not checkpoints:
        raise ConfigError(f"--resume {str(run_dir)!r}: no checkpoint found in {where!r}")
    raise ConfigError(f"--resume {str(run_dir)!r}: no intact checkpoint in {where!r} "
                      f"({'; '.join(broken)})")


def _set_aside(paths: list[Path]) -> None:
    stamp = int(time.time())
    for path in paths:
        target = path.with_name(f"{path.name}.broken-{stamp}")
        os.replace(path, target)
        logger.warning("Broken checkpoint %s kept as %s", path.name, target.name)


def remove_temporaries(run_dir: Path) -> None:
    """Delete ``checkpoints/.tmp-*``, left by interrupted saves; only while holding the
    run directory's lock (then no save is in progress)."""
    root = Path(run_dir) / 'checkpoints'
    leftovers = sorted(root.glob('.tmp-*')) if root.is_dir() else []
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if leftovers:
        logger.info("Removed %d leftover(s) of interrupted checkpoint saves in %s",
                    len(leftovers), root)
