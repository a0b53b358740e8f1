"""Public names of a package imported from their submodules on first use (PEP 562), so
that importing the package, e.g. for a command's ``--help``, does not load torch."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, sources: dict[str, tuple[str, ...]]
                    ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package`` whose submodule
    ``module`` defines the names ``sources[module]``."""
    module_of = {name: module for module, names in sources.items() for name in names}
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f'{package}.{module_of[name]}'), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(module_of))

    return sorted(module_of), __getattr__, __dir__
