"""Run directories: a fresh one for every new run, owned by one live trainer at a time.

The trainer holds an exclusive ``flock`` on ``RUN_DIR/.lock`` for its whole life and
writes its pid and host into it. The kernel releases the lock when the process ends,
also by kill -9, so a lock is never stale: a run directory whose lock is free has no
live trainer, and ``--resume`` may continue it.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import zipfile
from pathlib import Path

from ..errors import ConfigError

LOCK_NAME = '.lock'
_held: set[int] = set()  # descriptors of the locks this process holds


def create_run_dir(save_path: str, save_name: str) -> Path:
    """save_path/save_name, or save_name-1, -2, ... if taken (never reuses a directory)."""
    parent = Path(save_path).expanduser()
    parent.mkdir(parents=True, exist_ok=True)
    candidate, i = parent / save_name, 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            i += 1
            candidate = parent / f"{save_name}-{i}"


class RunDirLock:
    """``with RunDirLock(run_dir):`` owns ``run_dir`` for the block; ConfigError (naming
    the owner's pid) when a live process owns it already."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        if not self.run_dir.is_dir():
            raise ConfigError(f"run directory {str(self.run_dir)!r} does not exist")
        try:
            fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ConfigError(f"cannot lock run directory {str(self.run_dir)!r}: {err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_owner(fd)
            os.close(fd)
            raise ConfigError(
                f"run directory {str(self.run_dir)!r} is in use by a live trainer ({holder}); "
                f"wait for it to end, stop it ('kill' in elektronn2-shell {self.run_dir}) or "
                f"train into another directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        _held.add(fd)
        return self

    def __exit__(self, *exc_info) -> None:
        _held.discard(self._fd)
        os.close(self._fd)  # releases the lock; the file stays (an unlocked one is free)
        self._fd = None


def owner(run_dir: Path) -> str | None:
    """'pid N on HOST' of the live trainer owning ``run_dir``, or None when none does."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe, dropped by the close below
        return None
    except BlockingIOError:
        return _read_owner(fd)
    finally:
        os.close(fd)


def _read_owner(fd: int) -> str:
    text = os.pread(fd, 256, 0).decode(errors='replace').strip()
    return text or 'pid unknown'


def _close_in_child() -> None:
    """A forked child must not keep the parent's lock alive after the parent dies."""
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def backup_sources(config_path: Path, run_dir: Path) -> None:
    """Copy the config to ``run_dir/config.py`` and the package's source into
    ``run_dir/elektronn2-source.zip``, so that a run can be repeated."""
    shutil.copy2(config_path, run_dir / 'config.py')
    package = Path(__file__).resolve().parents[1]
    with zipfile.ZipFile(run_dir / 'elektronn2-source.zip', 'w', zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(package.rglob('*.py')):
            zf.write(file, file.relative_to(package.parent))
