"""Fixtures for the execution-settings tests: elektronn2.config is restored after each test."""
from dataclasses import fields

import pytest

from elektronn2.config import config


@pytest.fixture(autouse=True)
def restore_config():
    saved = {f.name: getattr(config, f.name) for f in fields(config)}
    yield config
    for key, value in saved.items():
        setattr(config, key, value)
