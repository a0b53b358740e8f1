"""Optional dependencies and external programs, looked up only when a feature needs them."""
from __future__ import annotations

import importlib
import shutil
from types import ModuleType

from ..errors import Error


class MissingDependencyError(Error, ImportError):
    """An optional Python package or external program that a feature needs is not installed."""


def import_optional(module: str, pip_name: str, extra: str | None = None,
                    purpose: str = '') -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        hint = f"pip install {pip_name}"
        if extra:
            hint += f" (or pip install 'elektronn2[{extra}]')"
        raise MissingDependencyError(
            f"{purpose or 'This feature'} needs the optional package {pip_name!r}, which "
            f"could not be imported ({err}); install it with: {hint}") from None


def require_program(program: str, apt_package: str, purpose: str = '') -> str:
    """The path of an external program, or :class:`MissingDependencyError` naming its package."""
    path = shutil.which(program)
    if path is None:
        raise MissingDependencyError(
            f"{purpose or 'This feature'} needs the program {program!r}, which is not on PATH; "
            f"install it, e.g. on Debian/Ubuntu: apt-get install {apt_package}")
    return path
