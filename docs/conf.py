"""Sphinx configuration of the elektronn2 documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import elektronn2  # noqa: E402  (after the path is set)

project = 'elektronn2'
author = 'elektronn2 developers'
copyright = '2024, elektronn2 developers (GPL-3.0-or-later)'
release = elektronn2.__version__
version = release

extensions = ['sphinx.ext.autodoc', 'sphinx.ext.napoleon']
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'show-inheritance': True}
autodoc_typehints = 'description'
autodoc_typehints_format = 'short'
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
nitpicky = False

exclude_patterns = ['_build']
html_theme = 'alabaster'
html_theme_options = {'description': 'Neural networks for connectomics on PyTorch',
                      'fixed_sidebar': True}
html_static_path = []

# --- API reference: one section per sub-package, an automodule for every module ---------
#: modules left out of the reference (with the reason), e.g. docstrings that break -W
AUTODOC_EXCLUDE = {
    'elektronn2.demo_config': 'a training config, shown in the training chapter',
    'elektronn2.config': "the Config docstring's indented list is not valid reST",
    'elektronn2.training.trainutils': "ELEKTRONN2's names ExperimentConfig and Schedule would "
                                      "make references to training's own classes ambiguous",
}


def _module_names() -> list[str]:
    import pkgutil
    names = ['elektronn2']
    for info in pkgutil.walk_packages(elektronn2.__path__, 'elektronn2.'):
        names.append(info.name)
    return sorted(n for n in names if n not in AUTODOC_EXCLUDE)


def _api_sections() -> str:
    import importlib
    groups: dict[str, list[str]] = {}
    for name in _module_names():
        parts = name.split('.')
        package = '.'.join(parts[:2]) if len(parts) > 1 and importlib.util.find_spec(
            '.'.join(parts[:2])).submodule_search_locations else 'elektronn2'
        groups.setdefault(package, []).append(name)
    text = []
    for package, names in groups.items():
        text += ['', package, '-' * len(package), '']
        for name in names:
            is_package = importlib.util.find_spec(name).submodule_search_locations is not None
            text += [f".. automodule:: {name}"] + (['   :no-members:'] if is_package else []) + ['']
    return '\n'.join(text)


def _add_api_sections(app, docname: str, source: list) -> None:
    if docname == 'api':
        source[0] += '\n' + _api_sections()


# --- docstrings: prose uses Python's star notation, e.g. "(ch, *spatial)", and |x| -----------
_LONE_STAR = re.compile(r'(?<![\w*\\`])\*(?=[A-Za-z_]\w*(?![\w*]))')


def _escape_prose_markup(app, what, name, obj, options, lines: list) -> None:
    """Escape a lone ``*name`` and ``|`` outside inline literals: plain text, not reST markup."""
    for i, line in enumerate(lines):
        parts = line.split('``')
        for k in range(0, len(parts), 2):
            parts[k] = _LONE_STAR.sub(r'\*', parts[k]).replace('|', r'\|')
        lines[i] = '``'.join(parts)


def setup(app):
    app.connect('source-read', _add_api_sections)
    app.connect('autodoc-process-docstring', _escape_prose_markup)
