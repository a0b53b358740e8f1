"""The layering of docs/architecture.rst, read from the source: every import of an
elektronn2 module (top-level or inside a function) points downward, and the top-level
imports between modules form no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'elektronn2'
BASE = {'errors', 'config', 'console', 'lazy', 'utils.optional', 'utils.safe_pickle', '(package)'}
ALLOWED = {     # layer -> the layers it may import besides the base and itself
    'base': set(),
    'neuromancer': set(),
    'data': {'neuromancer'},
    'inference': {'neuromancer', 'data'},
    'legacy': {'neuromancer', 'data', 'utils'},
    'training': {'neuromancer', 'data', 'inference', 'legacy', 'utils'},
    'utils': {'neuromancer', 'data', 'inference'},
    'malis': {'neuromancer', 'data', 'inference'},
    'demo': {'neuromancer', 'data', 'inference', 'legacy', 'training', 'utils'},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def _layer(module: str) -> str:
    parts = module.split('.')[1:]
    if not parts:
        return 'base'
    if parts[0] in BASE or '.'.join(parts[:2]) in BASE:
        return 'base'
    return 'demo' if parts[0] in ('demo', 'demo_config') else parts[0]


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """The elektronn2 modules ``path`` imports (``from x import name`` counts as x.name
    when that is a module, else x)."""
    tree = ast.parse(path.read_text())
    return _imported(tree.body if top_level_only else ast.walk(tree), path, module)


def _imported(statements, path: Path, module: str) -> set[str]:
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    found = set()
    for node in statements:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base
                         for a in node.names)
    return {name for name in found if name.split('.')[0] == 'elektronn2'}


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split('.'))
    return path.with_suffix('.py').is_file() or (path / '__init__.py').is_file()


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


@pytest.mark.parametrize('module', sorted(MODULES))
def test_imports_point_downward(module):
    layer = _layer(module)
    allowed = ALLOWED[layer] | {layer, 'base'}
    wrong = sorted(name for name in _imports(MODULES[module], module, top_level_only=False)
                   if _layer(name) not in allowed)
    assert not wrong, (f"{module} (layer {layer!r}) imports {wrong}; layer {layer!r} may "
                       f"import {sorted(allowed)} (docs/architecture.rst)")


def test_no_cycle_among_top_level_imports():
    graph = {m: {i for i in _imports(p, m, top_level_only=True) if i in MODULES and i != m}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


#: modules that import parts of the package inside functions, and why (docs/architecture.rst)
LAZY_IMPORTS = {
    'elektronn2.training.cli': "a command: --help and argument errors answer before torch loads",
    'elektronn2.training.profile_cli': "a command (elektronn2-profile): --help answers before "
                                       "torch loads",
    'elektronn2.inference.cli': "a command: --help and argument errors answer before torch loads",
    'elektronn2.inference.segment_cli': "a command (elektronn2-segment): --help answers before "
                                        "zarr, scipy and dask load",
    'elektronn2.training.convert_cli': "a command (elektronn2-convert): --help answers before "
                                       "torch loads",
    'elektronn2.demo': "a command: --help answers before torch loads",
    'elektronn2.utils.viewer': "a command (elektronn2-view): --help answers before torch loads",
    'elektronn2.utils.segmentation_view': "part of elektronn2-view: zarr, the data sources and "
                                          "neuroglancer load when a segmentation is shown",
    'elektronn2.demo_config': "a training config: create_model() imports what it builds",
}


def _function_local_imports(path: Path, module: str) -> set[str]:
    """elektronn2 modules imported inside functions or classes (TYPE_CHECKING blocks and
    other module-level statements excluded)."""
    tree = ast.parse(path.read_text())
    nested = [n for top in tree.body
              if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
              for n in ast.walk(top)]
    return _imported(nested, path, module)


@pytest.mark.parametrize('module', sorted(MODULES))
def test_intra_package_imports_are_top_level(module):
    """Imports inside functions hide cycles and types; only the documented modules may."""
    local = _function_local_imports(MODULES[module], module)
    if module in LAZY_IMPORTS:
        return
    assert not local, (f"{module} imports {sorted(local)} inside functions; import at the top "
                       f"(or add the module to LAZY_IMPORTS with the reason)")
