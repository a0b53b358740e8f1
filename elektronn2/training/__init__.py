"""Training: ``elektronn2-train CONFIG``, the Trainer, history, checkpoints and the shell."""
from .experiment import DEFAULTS, ExperimentConfig, build_data, build_model
from .schedules import Schedule
from .trainer import Trainer

__all__ = ['DEFAULTS', 'ExperimentConfig', 'Schedule', 'Trainer', 'build_data', 'build_model']
