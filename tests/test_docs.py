"""The Sphinx documentation builds without warnings (as CI builds it)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip('sphinx', reason='sphinx is in the dev extra')
    result = subprocess.run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-E', '-q',
                             '-b', 'html', str(ROOT / 'docs'), str(tmp_path / 'html')],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    pages = {p.name for p in (tmp_path / 'html').glob('*.html')}
    assert {'index.html', 'graph_api.html', 'results.html', 'api.html', 'legacy.html'} <= pages
    api = (tmp_path / 'html' / 'api.html').read_text()
    assert 'elektronn2.legacy.mixedconvnn.MixedConvNN' in api
