"""Utilities around models and data.

Each lives in its own module, imported on first use (``import elektronn2.utils`` loads
none of matplotlib, graphviz, napari or dask):

* :mod:`.graph_visualisation`: ``visualise_model`` (PNG, SVG, interactive HTML)
* :mod:`.viewer`: ``VolumeViewer``, ``view``, ``view_in_napari``
* :mod:`.introspection`: filter mosaics, activation maps, histograms
* :mod:`.timer`: ``Timer`` for profiling loops
* :mod:`.kdtree`: ``DynamicKDT``, nearest neighbours of a growing point set
* :mod:`.skeleton`, :mod:`.skeletonisation`, :mod:`.skeleton_patches`: skeletons, NML files,
  patches oriented along skeletons
* :mod:`.queue`: the ``elektronn2-queue`` job runner
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    'visualise_model': 'graph_visualisation',
    'VolumeViewer': 'viewer',
    'view': 'viewer',
    'view_in_napari': 'viewer',
    'plot_filters': 'introspection',
    'plot_activations': 'introspection',
    'plot_param_histograms': 'introspection',
    'plot_activation_histograms': 'introspection',
    'plot_gradient_histograms': 'introspection',
    'Timer': 'timer',
    'DynamicKDT': 'kdtree',
    'Skeleton': 'skeleton',
    'read_nml': 'skeleton',
    'write_nml': 'skeleton',
    'skeletonise': 'skeletonisation',
    'SkeletonPatchSampler': 'skeleton_patches',
    'TrainingQueue': 'queue',
    'MissingDependencyError': 'optional',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
