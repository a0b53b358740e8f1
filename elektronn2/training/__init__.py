"""Training: ``elektronn2-train CONFIG``, the Trainer, history, checkpoints and the shell.

The names below are imported from their submodules on first use (:mod:`elektronn2.lazy`).
"""
from ..lazy import lazy_attributes

__all__, __getattr__, __dir__ = lazy_attributes(__name__, {
    'experiment': ('DEFAULTS', 'ExperimentConfig', 'build_data', 'build_model'),
    'schedules': ('Schedule',),
    'trainer': ('Trainer',),
})
