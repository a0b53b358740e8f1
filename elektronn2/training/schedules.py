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

import math
import numbers
from dataclasses import dataclass, field

from ..errors import ConfigError

DEC_INTERVAL = 1000
FORMS = ('dec', 'updates', 'lindec')
FORM_HELP = {'dec': 'a factor > 0, e.g. 0.995',
             'updates': 'a list of (step, value) pairs with steps >= 0, e.g. [(1000, 1e-4)]',
             'lindec': '[n_steps, value] with n_steps >= 1, e.g. [10000, 1e-5]'}


def _number(value, integer: bool = False, above: float = -math.inf) -> float:
    """``value`` as a finite float (an int if ``integer``) greater than ``above``, else
    ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(value)
    if (integer and value != int(value)) or value <= above:
        raise ValueError(value)
    return int(value) if integer else float(value)


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
        """The schedule of ``variable`` from its config entry, e.g. ``{'dec': 0.995}``."""
        forms = [k for k in FORMS if k in spec]
        unknown = [k for k in spec if k not in FORMS]
        if len(forms) != 1 or unknown:
            extra = f" ({', '.join(map(repr, unknown))} is none of them)" if unknown else ''
            raise ConfigError(f"schedules[{variable!r}] = {spec!r}: give exactly one of 'dec', "
                              f"'updates', 'lindec'{extra}")
        form, value = forms[0], spec[forms[0]]
        try:
            if form == 'dec':
                return cls(variable, dec=_number(value, above=0))
            if form == 'updates':
                return cls(variable, updates=sorted((_number(s, integer=True, above=-1),
                                                     _number(v)) for s, v in value))
            steps, end = value
            return cls(variable, lindec=(_number(steps, integer=True, above=0), _number(end)))
        except (TypeError, ValueError):
            raise ConfigError(f"schedules[{variable!r}]['{form}'] = {value!r} is invalid; it must "
                              f"be {FORM_HELP[form]}") from None

    def targets(self) -> list[float]:
        """The values this schedule sets explicitly ('updates' values, the 'lindec' end)."""
        return [v for _, v in self.updates] + ([self.lindec[1]] if self.lindec else [])

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
