"""ELEKTRONN2's ``FileLock``: exclusive access to a file among processes and threads.

Built on the ``filelock`` package (an OS lock, ``flock`` on POSIX, on
``<protected file>.lock``): the operating system drops the lock when its holder dies, so
a killed process leaves no stale lock behind, unlike ELEKTRONN2's create-exclusive lock
files. The lock file therefore stays on disk between uses; it holds
``lock_file_contents`` (by default the holder's command line) while locked.

>>> with FileLock('/data/results.csv'):
...     append_row('/data/results.csv')
"""
from __future__ import annotations

import os
import sys

import filelock

from ..errors import Error


class FileLock:
    """Lock ``protected_file_path`` (through ``protected_file_path + '.lock'``).

    Args:
        protected_file_path: the file to protect (it need not exist).
        timeout: seconds ``acquire`` waits before raising ``FileLock.FileLockException``
            (None: wait for ever).
        delay: seconds between attempts.
        lock_file_contents: text written into the lock file while it is held.

    An instance shared by several threads excludes them from each other (each thread
    holds the lock on its own); within one thread the lock is re-entrant.
    """

    class FileLockException(Error, TimeoutError):  # noqa: N818 (ELEKTRONN2's name)
        """The lock was not acquired within the timeout."""

    def __init__(self, protected_file_path: str | os.PathLike, timeout: float | None = 120,
                 delay: float = 1, lock_file_contents: str | None = None):
        self.lockfile = os.fspath(protected_file_path) + '.lock'
        self.timeout = timeout
        self.delay = delay
        if lock_file_contents is None:
            lock_file_contents = 'Owning process args:\n' + ''.join(f"{a}\n" for a in sys.argv)
        self._lock_file_contents = lock_file_contents
        self._lock = filelock.FileLock(self.lockfile)

    @property
    def is_locked(self) -> bool:
        """Whether this instance holds the lock (in the calling thread)."""
        return self._lock.is_locked

    def locked(self) -> bool:
        """True iff this instance holds the lock (another may hold it even if False)."""
        return self.is_locked

    def available(self) -> bool:
        """True iff nobody holds the lock at this moment."""
        probe = filelock.FileLock(self.lockfile, thread_local=False)
        try:
            probe.acquire(blocking=False)
        except filelock.Timeout:
            return False
        probe.release()
        return True

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (trying every ``delay`` s).

        Returns True; with ``blocking=False`` returns False at once when the lock is
        held elsewhere. Raises ``FileLock.FileLockException`` on timeout.
        """
        timeout = -1 if self.timeout is None else self.timeout
        try:
            self._lock.acquire(timeout=timeout, poll_interval=self.delay, blocking=blocking)
        except filelock.Timeout:
            if not blocking:
                return False
            raise FileLock.FileLockException(
                f"{self.lockfile} is still locked by another process after {self.timeout} s "
                f"(its holder: {self._holder()!r}); wait longer (timeout=None) or stop it"
            ) from None
        with open(self.lockfile, 'w') as f:
            f.write(self._lock_file_contents)
        return True

    def _holder(self) -> str:
        try:
            with open(self.lockfile) as f:
                return f.read(200).strip()
        except OSError:
            return 'unknown'

    def release(self) -> None:
        """Give the lock up (the ``with`` block does this itself)."""
        self._lock.release()

    def purge(self) -> bool:
        """Debugging: release if held and delete the lock file; True if there was one."""
        if not os.path.exists(self.lockfile):
            return False
        if self.is_locked:
            self._lock.release(force=True)
        os.remove(self.lockfile)
        return True

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"FileLock({self.lockfile!r}, {'held' if self.is_locked else 'not held'})"
