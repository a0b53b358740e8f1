"""Schedules of hyper-parameters during training (ELEKTRONN2's config ``schedules``).

One :class:`Schedule` per variable, in one of three forms (values may be per-layer lists,
e.g. dropout rates ``[0.2, 0.2, 0.0]``):

* ``{'dec': f}``: multiply the current value by ``f`` every 1000 steps;
* ``{'updates': [(step, value), ...]}``: set ``value`` when ``step`` is reached;
* ``{'lindec': [n_steps, value]}``: start at ``value`` and go linearly down to 0 over
  ``n_steps`` steps, then stay at 0 (ELEKTRONN2's meaning).

A value changed by hand (``setlr`` in the shell, or a rollback after a non-finite
loss) is where the schedule continues from (:meth:`Schedule.continue_from`): 'dec'
multiplies it, 'lindec' goes linearly from it to 0 over the remaining steps, 'updates'
keeps it until the next update.
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
             'lindec': '[n_steps, start value] with n_steps >= 1, e.g. [10000, 1e-3]'}


def _value(value) -> float | tuple[float, ...]:
    """A schedule value: a number, or a list of numbers (one per layer, e.g. dropout rates)."""
    if isinstance(value, (list, tuple)) and value:
        return tuple(_number(v) for v in value)
    return _number(value)


def _scaled(value, factor: float):
    """``value`` (a number or per-layer list) times ``factor``."""
    if isinstance(value, (list, tuple)):
        return [v * factor for v in value]
    return value * factor


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
    start_value: float | list[float] | None = None
    start_step: int = 0

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
                return cls(variable, updates=sorted(((_number(s, integer=True, above=-1),
                                                      _value(v)) for s, v in value),
                                                    key=lambda update: update[0]))
            steps, start = value
            return cls(variable, lindec=(_number(steps, integer=True, above=0), _value(start)))
        except (TypeError, ValueError):
            raise ConfigError(f"schedules[{variable!r}]['{form}'] = {value!r} is invalid; it must "
                              f"be {FORM_HELP[form]}") from None

    def targets(self) -> list[float]:
        """The values this schedule sets explicitly ('updates' values, the 'lindec' start;
        'lindec' ends at 0), per-layer lists flattened."""
        values = [v for _, v in self.updates] + ([self.lindec[1]] if self.lindec else [])
        return [x for v in values for x in (v if isinstance(v, tuple) else (v,))]

    def value_at(self, step: int, current: float | list[float]) -> float | list[float] | None:
        """The new value after ``step`` steps, or None to leave ``current`` unchanged."""
        if self.start_value is None:
            self.start_value = self.lindec[1] if self.lindec is not None else current
        if self.dec is not None:
            return (_scaled(current, self.dec) if step > 0 and step % DEC_INTERVAL == 0
                    else None)
        if self.lindec is not None:
            n = self.lindec[0]
            if step > n or self.start_step >= n:
                return None
            return _scaled(self.start_value, (n - step) / (n - self.start_step))
        for at, value in self.updates:
            if at == step:
                return list(value) if isinstance(value, tuple) else value
        return None

    def continue_from(self, step: int, value: float) -> str:
        """Continue from ``value`` set by hand after ``step`` steps; says how, e.g. "the
        'lindec' schedule now continues from it to 1e-05 at step 2000"."""
        self.start_value, self.start_step = value, step
        if self.dec is not None:
            return f"the 'dec' schedule multiplies it by {self.dec:g} every {DEC_INTERVAL} steps"
        if self.lindec is not None:
            n = self.lindec[0]
            return (f"the 'lindec' schedule now continues from it to 0 at step {n}"
                    if step < n else "the 'lindec' schedule has ended; it stays")
        later = [at for at, _ in self.updates if at > step]
        return (f"it holds until the 'updates' schedule's next update at step {later[0]}"
                if later else "the 'updates' schedule has no more updates; it stays")

    def state(self) -> dict:
        return {'start_value': self.start_value, 'start_step': self.start_step}

    def load_state(self, state: dict) -> None:
        self.start_value = state.get('start_value')
        self.start_step = int(state.get('start_step', 0))  # older checkpoints: none
