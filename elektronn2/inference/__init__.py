"""Prediction at volume scale: blockwise and distributed dense prediction, blending,
segmentation, metrics and model export.

Imported here: geometry (boxes, block grids), block predictors (tiling, MFP, blending),
writers, executors and the entry points :func:`predict_volume` / :func:`predict_to_file`.
Submodules imported on demand: :mod:`.segmentation` (watershed), :mod:`.malis`,
:mod:`.metrics` (VI, adapted Rand), :mod:`.export` (torch.export, TorchScript, ONNX),
:mod:`.cli` (``elektronn2-predict``, ``elektronn2-evaluate``).

Uses :mod:`elektronn2.neuromancer` and :mod:`elektronn2.data` (sources, labels) only.
"""
from .blending import BlendingPredictor, WeightedMerge, WindowGrid, importance_map
from .blockwise import (PredictionPlan, PredictionReport, plan_prediction, predict_to_file,
                        predict_volume, read_mirrored, run_prediction)
from .executors import DaskExecutor, SerialExecutor
from .geometry import Block, BlockGrid, Box, NetGeometry
from .outputs import ArrayWriter, BlockWriter, HDF5BlockWriter, ZarrBlockWriter, open_writer
from .predictors import PredictorSpec, TilingPredictor, resolve_spec

__all__ = ['ArrayWriter', 'BlendingPredictor', 'Block', 'BlockGrid', 'BlockWriter', 'Box',
           'DaskExecutor', 'HDF5BlockWriter', 'NetGeometry', 'PredictionPlan',
           'PredictionReport', 'PredictorSpec', 'SerialExecutor', 'TilingPredictor',
           'WeightedMerge', 'WindowGrid', 'ZarrBlockWriter', 'importance_map', 'open_writer',
           'plan_prediction', 'predict_to_file', 'predict_volume', 'read_mirrored',
           'resolve_spec', 'run_prediction']
