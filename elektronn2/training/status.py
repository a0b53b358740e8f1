"""The trainer's status line: redrawn in place on a terminal, plain log lines otherwise.

:class:`ConsoleFilter` (on the console's logging handler) ends a shown line before a
log record is printed, so records never land inside it. :class:`LoopTimer`
measures the whole training loop (data wait, step, monitoring) for honest speeds.
"""
from __future__ import annotations

import collections
import logging
import shutil
import sys
import time

logger = logging.getLogger('elektronn2')
#: records of this logger go to train.log only (shell actions: the shell shows them itself)
TRAIN_LOG_ONLY = 'elektronn2.train_log'
_shown: StatusLine | None = None   # the line now on the terminal, if any


class StatusLine:
    """Shows ``text`` at most every ``interval`` seconds (log lines: every ``log_interval``)."""

    def __init__(self, stream=None, interval: float = 0.5, log_interval: float = 30.0):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.interval = interval if self.tty else log_interval
        self._last = 0.0
        self._shown = False

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns
            self.stream.write('\r' + text[:width - 1].ljust(width - 1))
            self.stream.flush()
            self._mark_shown(True)
        else:
            logger.info(text)

    def clear(self) -> None:
        """End the in-place line (before other output)."""
        if self.tty and self._shown:
            self.stream.write('\n')
            self.stream.flush()
            self._mark_shown(False)

    def _mark_shown(self, shown: bool) -> None:
        global _shown
        self._shown = shown
        _shown = self if shown else None


class ConsoleFilter(logging.Filter):
    """Drops the records meant for train.log only; ends a shown status line before the
    others are printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == TRAIN_LOG_ONLY:
            return False
        if _shown is not None:
            _shown.clear()
        return True


class LoopTimer:
    """Wall time per training step over the last ``window`` steps, with the part spent
    waiting for data; pauses (:meth:`restart`) are not counted."""

    def __init__(self, window: int = 50):
        self._steps: collections.deque = collections.deque(maxlen=window)  # (seconds, wait)
        self._since = time.monotonic()

    def restart(self) -> None:
        """Measure the next step from now (after a pause)."""
        self._since = time.monotonic()

    def step_done(self, wait_seconds: float) -> None:
        now = time.monotonic()
        self._steps.append((now - self._since, wait_seconds))
        self._since = now

    @property
    def steps_per_s(self) -> float | None:
        total = sum(s for s, _ in self._steps)
        return len(self._steps) / total if total > 0 else None

    @property
    def wait_fraction(self) -> float | None:
        total = sum(s for s, _ in self._steps)
        return sum(w for _, w in self._steps) / total if total > 0 else None


def duration(seconds: float) -> str:
    """``seconds`` as h:mm:ss."""
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}"
