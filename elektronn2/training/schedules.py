"""Schedules of hyper-parameters during training (ELEKTRONN2's config ``schedules``).

One :class:`Schedule` per variable, in one of three forms:

* ``{'dec': f}``: multiply the current value by ``f`` every 1000 steps;
* ``{'updates': [(step, value), ...]}``: set ``value`` when ``step`` is reached;
* ``{'lindec': [n_steps, value]}``: go linearly from the value at the start to
  ``value`` over ``n_steps`` steps, then stay.

Because 'dec' multiplies the *current* value, a value changed by hand (e.g.
``setlr`` in the shell) keeps decaying from there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

DEC_INTERVAL = 1000


@dataclass
class Schedule:
    """How ``variable`` changes with the training step (see module docs)."""
    variable: str
    dec: float | None = None
    updates: list = field(default_factory=list)
    lindec: tuple | None = None
    start_value: float | None = None

    @classmethod
    def from_spec(cls, variable: str, spec: dict) -> Schedule:
        forms = [k for k in ('dec', 'updates', 'lindec') if k in spec]
        unknown = set(spec) - {'dec', 'updates', 'lindec'}
        if len(forms) != 1 or unknown:
            raise ConfigError(f"schedules[{variable!r}] = {spec!r}: give exactly one of 'dec', "
                              f"'updates', 'lindec'")
        if 'updates' in spec:
            try:
                updates = sorted((int(s), float(v)) for s, v in spec['updates'])
            except (TypeError, ValueError):
                raise ConfigError(f"schedules[{variable!r}]['updates'] must be a list of "
                                  f"(step, value) pairs, got {spec['updates']!r}") from None
            return cls(variable, updates=updates)
        if 'lindec' in spec:
            steps, value = spec['lindec']
            if int(steps) < 1:
                raise ConfigError(f"schedules[{variable!r}]['lindec'] needs >= 1 steps")
            return cls(variable, lindec=(int(steps), float(value)))
        return cls(variable, dec=float(spec['dec']))

    def value_at(self, step: int, current: float) -> float | None:
        """The new value after ``step`` steps, or None to leave ``current`` unchanged."""
        if self.start_value is None:
            self.start_value = current
        if self.dec is not None:
            return current * self.dec if step > 0 and step % DEC_INTERVAL == 0 else None
        if self.lindec is not None:
            n, end = self.lindec
            if step > n:
                return None
            return self.start_value + (end - self.start_value) * step / n
        for at, value in self.updates:
            if at == step:
                return value
        return None

    def state(self) -> dict:
        return {'start_value': self.start_value}

    def load_state(self, state: dict) -> None:
        self.start_value = state.get('start_value')
