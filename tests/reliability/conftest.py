"""The bad-input suite's guard: nothing outside the allowed places changes.

Every case asserts three things: the error type, that the message names the culprit
(file, key, node, axis or argument), and -- with ``guard`` -- that no file outside the
run directory (or the output a command was asked to write) was created, changed or
deleted. The training config and runner fixtures come from ``tests/conftest.py``.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

import pytest


def _inside(path: Path, allowed: list[Path]) -> bool:
    return any(path == a or a in path.parents for a in allowed)


def _snapshot(root: Path, allowed: list[Path]) -> dict[str, tuple[int, str]]:
    """path -> (size, sha256) of every file under ``root`` outside ``allowed``."""
    allowed = [Path(p).resolve() for p in allowed]
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath).resolve()
        dirnames[:] = [d for d in dirnames if not _inside(here / d, allowed)]
        for name in filenames:
            path = here / name
            if _inside(path, allowed):
                continue
            try:
                data = path.read_bytes()
            except OSError:     # a socket or a file removed meanwhile
                continue
            state[str(path)] = (len(data), hashlib.sha256(data).hexdigest())
    return state


@contextmanager
def unchanged_outside(root: Path, *allowed: Path):
    """Assert that no file under ``root``, except under ``allowed``, is created, changed
    or deleted inside the ``with`` block."""
    before = _snapshot(root, list(allowed))
    yield
    after = _snapshot(root, list(allowed))
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (created or deleted or changed), (
        f"files outside {[str(a) for a in allowed]} changed: created {created[:5]}, "
        f"deleted {deleted[:5]}, changed {changed[:5]}")


@pytest.fixture
def guard():
    """``with guard(root, *allowed):`` -- see :func:`unchanged_outside`."""
    return unchanged_outside


@pytest.fixture
def bystander(tmp_path) -> Path:
    """A directory of files that no command of a test may touch (checked with ``guard``)."""
    folder = tmp_path / 'bystander'
    folder.mkdir()
    (folder / 'notes.txt').write_text('precious\n')
    (folder / 'model.mdl').write_bytes(b'not a model, but precious')
    return folder
