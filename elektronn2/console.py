"""Helpers of the command-line programs: help text, argparse types, logging to stderr and how
errors end a program.

Imports only the standard library, so that a command's ``--help`` stays fast
(:func:`use_mpl_backend` imports matplotlib, never pyplot, when it is called).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Callable

from .errors import ConfigError, Error

#: exit status after Ctrl+C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130
#: exit status for refused arguments, input, model or output (as argparse's)
EXIT_REFUSED = 2

#: matplotlib's built-in backends that need no display
NON_INTERACTIVE_BACKENDS = ('agg', 'cairo', 'pdf', 'pgf', 'ps', 'svg', 'template')
MPL_BACKEND_HELP = ("matplotlib backend, set before anything imports pyplot: 'auto' keeps "
                    "matplotlib's choice, or Agg on a machine without a display; a backend "
                    "name (e.g. qtagg, tkagg, pdf) is used where there is a display (Agg "
                    "otherwise, unless it needs none); 'force-NAME' uses NAME regardless")

_ROLE = re.compile(r':[\w:]+:`~?\.?([^`]+)`')
_LITERAL = re.compile(r'``([^`]+)``')


def plain(text: str) -> str:
    """``text`` (a docstring) without reST markup: double backticks and roles such as
    ``:mod:`x``` are dropped, leaving x."""
    return _LITERAL.sub(r'\1', _ROLE.sub(r'\1', text))


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in ``--help``, except the uninformative None and False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def run_script(main: Callable[[], int], prog: str) -> int:
    """``main()``, with elektronn2's errors and Ctrl+C ending it in one message, not a
    traceback: ``prog: error: ...`` on stderr and exit status 2, or 130 after Ctrl+C."""
    try:
        return main()
    except Error as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def add_device_options(parser) -> None:
    """``--gpu`` and ``--mpl-backend`` of the commands that run a network."""
    parser.add_argument('--gpu', metavar='auto|none|N',
                        help="'auto', 'none' or a GPU index (default: the device of "
                             "~/.elektronn2rc, else 'auto')")
    parser.add_argument('--mpl-backend', default='auto', metavar='auto|NAME|force-NAME',
                        help=MPL_BACKEND_HELP)


def has_display() -> bool:
    """Whether windows can open: always on macOS and Windows, elsewhere when $DISPLAY or
    $WAYLAND_DISPLAY is set."""
    return sys.platform in ('darwin', 'win32') or bool(
        os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def use_mpl_backend(choice: str) -> str | None:
    """Set matplotlib's backend as ``--mpl-backend choice`` asks (see
    :data:`MPL_BACKEND_HELP`), also for subprocesses ($MPLBACKEND). Returns the backend
    set, or None where matplotlib's own choice stands. An unknown backend is a
    :class:`~elektronn2.errors.ConfigError`."""
    forced = choice.startswith('force-')
    name = choice[len('force-'):] if forced else choice
    if name.lower() == 'auto':
        if has_display() or os.environ.get('MPLBACKEND') or 'matplotlib.pyplot' in sys.modules:
            return None  # matplotlib's own choice, or the one already made
        name = 'agg'
    import matplotlib
    from matplotlib import rcsetup
    try:
        rcsetup.validate_backend(name)
    except ValueError:
        raise ConfigError(f"--mpl-backend {choice!r}: {name!r} is not a matplotlib backend; "
                          f"use 'auto', a backend such as agg, pdf, qtagg or tkagg, or "
                          f"'force-NAME'") from None
    if not (forced or has_display() or name.lower() in NON_INTERACTIVE_BACKENDS
            or name.startswith('module://')):
        print(f"No display found: using matplotlib's Agg backend instead of {name!r} "
              f"(--mpl-backend force-{name} insists)", file=sys.stderr)
        name = 'agg'
    matplotlib.use(name)
    os.environ['MPLBACKEND'] = name
    return name


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (as logging's last resort)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


_HANDLER = _StderrHandler()
_HANDLER.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))


def setup_command_logging(verbose: bool) -> None:
    """Log to stderr (one handler, however often a command runs in this process)."""
    logger = logging.getLogger('elektronn2')
    logger.addHandler(_HANDLER)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be {minimum} "
                                             f"or more")
        return value
    return parse


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range: it must be in [0, 1)")
    return value
