"""Helpers of the command-line programs: help text and how errors end a program.

Imports only the standard library, so that a command's ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Callable

from .errors import Error

#: exit status after Ctrl+C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130
#: exit status for refused arguments, input, model or output (as argparse's)
EXIT_REFUSED = 2

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
