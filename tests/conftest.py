"""Shared fixtures: a fresh model and fixed seeds per test, the real-data directory."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm


@pytest.fixture(autouse=True)
def fresh_model(request):
    """Every test builds into its own new, current model with fixed seeds."""
    torch.manual_seed(0)
    np.random.seed(0)
    return nm.model_manager.newmodel(request.node.name[:40])


@pytest.fixture(scope='session')
def data_dir() -> Path:
    """$ELEKTRONN2_DATA (../shared/data in CI); tests needing it skip when it is absent."""
    path = Path(os.environ.get('ELEKTRONN2_DATA',
                               Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))
    if not path.is_dir():
        pytest.skip(f"real data directory {path} not found (set ELEKTRONN2_DATA)")
    return path
