"""A profiling timer for code in loops: named sections, totals, mean per call, a table.

>>> timer = Timer()
>>> for batch in batches:
...     with timer.section('data'):
...         x, y = next(data)
...     with timer.section('step'):
...         model.trainingstep(x, y)
>>> print(timer.report())

Sections opened inside another section are recorded as ``outer/inner``. Overhead is a
few microseconds per section. With ``synchronize_cuda=True`` each section boundary waits
for queued CUDA work, so that GPU time is charged to the section that queued it.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import ConfigError


class _Section:
    """Context manager timing one entry of a named section."""
    __slots__ = ('timer', 'name', 'start')

    def __init__(self, timer: Timer, name: str):
        self.timer = timer
        self.name = name

    def __enter__(self) -> _Section:
        timer = self.timer
        timer._sync()
        timer._stack.append(self.name)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        timer = self.timer
        timer._sync()
        elapsed = time.perf_counter() - self.start
        key = '/'.join(timer._stack)
        timer._stack.pop()
        timer.add(key, elapsed)


class Timer:
    """Accumulates wall-clock time per named section.

    Args:
        synchronize_cuda: wait for CUDA at section boundaries (only if CUDA is in use).
    """

    def __init__(self, synchronize_cuda: bool = False):
        self._sync: Callable[[], None] = _cuda_synchronizer() if synchronize_cuda else _no_sync
        self._stack: list[str] = []
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._started = time.perf_counter()

    def section(self, name: str) -> _Section:
        """``with timer.section(name):`` times the block under ``name``."""
        if not name or '/' in name:
            raise ConfigError(f"Timer section name {name!r} must be non-empty and without '/' "
                              f"('/' joins the names of nested sections)")
        return _Section(self, name)

    def add(self, name: str, seconds: float) -> None:
        """Record ``seconds`` spent in ``name`` (for times measured elsewhere)."""
        if name in self.totals:
            self.totals[name] += seconds
            self.counts[name] += 1
        else:
            self.totals[name] = seconds
            self.counts[name] = 1

    def mean(self, name: str) -> float:
        """Mean seconds per entry of section ``name``."""
        if name not in self.totals:
            raise ConfigError(f"Timer has no section {name!r}; sections: {sorted(self.totals)}")
        return self.totals[name] / self.counts[name]

    @property
    def elapsed(self) -> float:
        """Seconds since the timer was made or last reset."""
        return time.perf_counter() - self._started

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()
        self._started = time.perf_counter()

    def report(self) -> str:
        """A table of sections (by total time): calls, total, mean, share of elapsed time."""
        elapsed = self.elapsed
        rows = [('section', 'calls', 'total s', 'mean ms', '% of time')]
        for name in sorted(self.totals, key=self.totals.get, reverse=True):
            total = self.totals[name]
            rows.append((name, str(self.counts[name]), f"{total:.3f}",
                         f"{1e3 * total / self.counts[name]:.3f}",
                         f"{100 * total / elapsed:.1f}" if elapsed > 0 else '-'))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ['  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
        lines.insert(1, '  '.join('-' * w for w in widths))
        lines.append(f"elapsed {elapsed:.3f} s")
        return '\n'.join(lines)

    def __repr__(self) -> str:
        return f"Timer({len(self.totals)} sections, {self.elapsed:.1f} s elapsed)"


def _no_sync() -> None:
    return None


def _cuda_synchronizer() -> Callable[[], None]:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.synchronize
    return _no_sync
