"""Prediction at volume scale: blockwise and distributed dense prediction, blending,
segmentation, metrics and model export.

Available here (imported on first use, :mod:`elektronn2.lazy`): geometry (boxes, block
grids), block predictors (tiling, MFP, blending), writers, executors and the entry points
:func:`predict_volume` / :func:`predict_to_file`.
Submodules imported on demand: :mod:`.segmentation` (watershed in memory),
:mod:`.blockwise_segmentation` (segmentation block by block, independent of the blocks:
:mod:`.basins`, :mod:`.region_graph`, :mod:`.landscape`), :mod:`.ome_zarr` (OME-NGFF
outputs), :mod:`.malis`, :mod:`.metrics` (VI, adapted Rand), :mod:`.isbi_metrics`
(the ISBI 2012 challenge's V_rand and V_info), :mod:`.export`
(torch.export, TorchScript, ONNX), :mod:`.cli` (``elektronn2-predict``,
``elektronn2-evaluate``), :mod:`.segment_cli` (``elektronn2-segment``).

Uses :mod:`elektronn2.neuromancer` and :mod:`elektronn2.data` (sources, labels) only.
"""
from ..lazy import lazy_attributes

__all__, __getattr__, __dir__ = lazy_attributes(__name__, {
    'blending': ('BlendingPredictor', 'WeightedMerge', 'WindowGrid', 'importance_map'),
    'blockwise_segmentation': ('run_segmentation', 'segment_to_file', 'segment_volume'),
    'blockwise': ('PredictionPlan', 'PredictionReport', 'plan_prediction', 'predict_to_file',
                  'predict_volume', 'read_mirrored', 'run_prediction'),
    'executors': ('DaskExecutor', 'SerialExecutor'),
    'geometry': ('Block', 'BlockGrid', 'Box'),
    'outputs': ('ArrayWriter', 'BlockWriter', 'HDF5BlockWriter', 'ZarrBlockWriter',
                'open_writer'),
    'predictors': ('PredictorSpec', 'TilingPredictor', 'resolve_spec'),
})
