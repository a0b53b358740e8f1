"""Fixtures of the example tests: the real data directory as the examples see it."""
from pathlib import Path

import pytest

from elektronn2.config import config


@pytest.fixture
def real_data(data_dir, monkeypatch) -> Path:
    """The examples resolve their data through elektronn2.config.config.data_dir."""
    monkeypatch.setattr(config, 'data_dir', str(data_dir))
    return data_dir
