"""How much of ELEKTRONN2's public API an ELEKTRONN2 script finds here.

Reads ``elektronn2_api.txt`` (the original's classes and functions with module paths and
signatures; in the repository's shared reference folder) and reports, outside the
skeleton-tracing stack: names that resolve at their original module path, names that
resolve in the package namespace the original star-exported them into, and names whose
signature accepts the original's parameters (same names, positional ones in the same
order, literal defaults equal). Names that cannot exist on PyTorch raise an error naming
the replacement (:data:`elektronn2.compat.REMOVED`) and count as resolved.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

API_FILE = Path(os.environ.get('ELEKTRONN2_REFERENCE', Path(__file__).resolve().parents[3]
                               / 'shared' / 'reference')) / 'elektronn2_api.txt'
#: the skeleton-tracing stack comes later (issue text)
TRACING_MODULES = ('elektronn2.data.skeleton', 'elektronn2.data.tracing_utils')
TRACING_NAMES = ('AgentData', 'GridData', 'DummySkel', 'TracingTrainer', 'TracingTrainerRNN')
#: package -> the original modules it star-exported (``from .neural import *``)
NAMESPACES = {
    'elektronn2.neuromancer': ('node_basic', 'neural', 'various', 'loss', 'variables'),
    'elektronn2.utils': ('utils_basic', 'cnncalculator'),
    'elektronn2.data': ('cnndata', 'traindata'),
}
#: names the original's ``__all__`` left out of a star export (module bases and helpers)
NOT_EXPORTED = {'NeuralLayer', 'ModelContainer', 'choose_name', 'MetaNode', 'StereographicMap',
                'ScanN', 'scansplit'}
THRESHOLD = 0.98


@dataclass(frozen=True)
class Entry:
    module: str
    name: str
    params: tuple[ast.arg, ...]     # positional-or-keyword and keyword-only, in order
    positional: int                 # how many of them are positional
    defaults: dict                  # name -> literal default (only literals)

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


def _entries() -> list[Entry]:
    entries = []
    for line in API_FILE.read_text().splitlines():
        match = re.match(r'^([\w.]+):(\w+)\((.*)\)(?: \[class: .*\])?$', line.strip())
        if not match:
            continue
        module, name, signature = match.groups()
        if (module in TRACING_MODULES or name in TRACING_NAMES
                or name.lower().startswith('skel')):
            continue
        args = ast.parse(f"def f({signature}): pass").body[0].args
        positional = args.posonlyargs + args.args
        defaults = {}
        for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults):
            defaults[arg.arg] = default
        defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d})
        literal = {}
        for key, node in defaults.items():
            try:
                literal[key] = ast.literal_eval(node)
            except ValueError:
                pass
        entries.append(Entry(module, name, tuple(positional + args.kwonlyargs), len(positional),
                             literal))
    return entries


def _resolve(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _signature_problems(entry: Entry, obj) -> list[str]:
    """Why ``obj`` does not accept the original's parameters (empty: it does)."""
    if not callable(obj):
        return ['not callable']
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []   # builtins without a signature: nothing to compare
    params = list(sig.parameters.values())
    if params and params[0].name == 'self':
        params = params[1:]
    by_name = {p.name: p for p in params}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    takes_args = any(p.kind is p.VAR_POSITIONAL for p in params)
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    problems = []
    for i, arg in enumerate(entry.params):
        if arg.arg in by_name:
            if i < entry.positional and (i >= len(positional) or positional[i] != arg.arg) \
                    and not takes_args:
                problems.append(f"{arg.arg!r} is not positional argument {i + 1}")
            default = by_name[arg.arg].default
            if arg.arg in entry.defaults and default is not inspect.Parameter.empty:
                want = entry.defaults[arg.arg]
                if not _same_default(default, want):
                    problems.append(f"{arg.arg}={default!r}, original {want!r}")
        elif not takes_kwargs:
            problems.append(f"no parameter {arg.arg!r}")
    return problems


def _same_default(ours, original) -> bool:
    if isinstance(ours, (list, tuple)) and isinstance(original, (list, tuple)):
        return list(ours) == list(original)
    try:
        return bool(ours == original)
    except Exception:
        return False


ENTRIES = _entries() if API_FILE.is_file() else []


def _report():
    at_path, in_namespace, signature_ok, missing, bad_signatures = 0, 0, 0, [], []
    namespace_total, not_exported = 0, []
    for entry in ENTRIES:
        obj = _resolve(entry.module, entry.name)
        if obj is None:
            missing.append(entry.path)
            continue
        at_path += 1
        package, _, leaf = entry.module.rpartition('.')
        if leaf in NAMESPACES.get(package, ()) and entry.name not in NOT_EXPORTED:
            namespace_total += 1
            if _resolve(package, entry.name) is None:
                not_exported.append(f"{package}.{entry.name}")
            else:
                in_namespace += 1
        problems = _signature_problems(entry, obj)
        if problems:
            bad_signatures.append(f"{entry.path}: {'; '.join(problems)}")
        else:
            signature_ok += 1
    missing += [f"{name} (package namespace)" for name in not_exported]
    return at_path, in_namespace, namespace_total, signature_ok, missing, bad_signatures


@pytest.mark.skipif(not ENTRIES, reason=f"{API_FILE} not found (set ELEKTRONN2_REFERENCE)")
def test_original_api_resolves_and_accepts_the_original_parameters():
    at_path, in_namespace, namespace_total, signature_ok, missing, bad = _report()
    total = len(ENTRIES)
    summary = (f"ELEKTRONN2 API outside the tracing stack: {total} names; at the original "
               f"path {at_path} ({at_path / total:.1%}); in the package namespace "
               f"{in_namespace}/{namespace_total}; original parameters accepted "
               f"{signature_ok} ({signature_ok / total:.1%})")
    print(summary)
    details = '\n'.join(['missing: ' + ', '.join(missing)] + bad)
    assert at_path / total >= THRESHOLD, f"{summary}\n{details}"
    assert in_namespace == namespace_total, f"{summary}\n{details}"
    assert signature_ok / total >= THRESHOLD, f"{summary}\n{details}"
