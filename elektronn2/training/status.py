"""The trainer's status line: redrawn in place on a terminal, plain log lines otherwise."""
from __future__ import annotations

import logging
import shutil
import sys
import time

logger = logging.getLogger('elektronn2')


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
            self._shown = True
        else:
            logger.info(text)

    def clear(self) -> None:
        """End the in-place line (before other output)."""
        if self.tty and self._shown:
            self.stream.write('\n')
            self.stream.flush()
            self._shown = False
