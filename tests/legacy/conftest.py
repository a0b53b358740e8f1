"""Fixtures of the v1 compatibility tests: v1 config files and the real MNIST data."""
import textwrap
from pathlib import Path

import pytest

from elektronn2.config import config


@pytest.fixture
def mnist_data(data_dir, monkeypatch) -> Path:
    """MNIST from the real data directory, as elektronn2.config.config.data_dir."""
    monkeypatch.setattr(config, 'data_dir', str(data_dir))
    return data_dir / 'mnist'


@pytest.fixture
def v1_config(tmp_path):
    """v1_config(text) -> path of a config file holding the dedented ``text``."""
    def write(text: str, name: str = 'v1_config.py') -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write
