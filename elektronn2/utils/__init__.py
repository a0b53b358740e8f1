"""Utilities around models and data.

Each lives in its own module, imported on first use (``import elektronn2.utils`` loads
none of matplotlib, graphviz, napari or dask):

* :mod:`.graph_visualisation`: ``visualise_model`` (PNG, SVG, interactive HTML)
* :mod:`.viewer`: ``VolumeViewer``, ``view``, ``view_in_napari``
* :mod:`.introspection`: filter mosaics, activation maps, histograms
* :mod:`.timer`: ``Timer`` for profiling loops
* :mod:`.profiling`: a network's speed per patch size (``elektronn2-profile``)
* :mod:`.kdtree`: ``DynamicKDT``, nearest neighbours of a growing point set
* :mod:`.skeleton`, :mod:`.skeletonisation`, :mod:`.skeleton_patches`: skeletons, NML files,
  patches oriented along skeletons
* :mod:`.queue`: the ``elektronn2-queue`` job runner
* ELEKTRONN2's modules under their old names: :mod:`.utils_basic` (``h5load``, ``h5save``,
  ``Timer`` and ``DynamicKDT`` with both the old and the new methods, ...),
  :mod:`.cnncalculator`, :mod:`.plotting`, :mod:`.gpu`, :mod:`.locking`, :mod:`.d3viz`;
  the names ELEKTRONN2 exported here (those of ``utils_basic`` and ``cnncalculator``) are
  exported here too.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    'initgpu': 'gpu',
    'get_free_gpu': 'gpu',
    'visualise_model': 'graph_visualisation',
    'VolumeViewer': 'viewer',
    'view': 'viewer',
    'view_in_napari': 'viewer',
    'plot_filters': 'introspection',
    'plot_activations': 'introspection',
    'plot_param_histograms': 'introspection',
    'plot_activation_histograms': 'introspection',
    'plot_gradient_histograms': 'introspection',
    'Timer': 'utils_basic',         # timer.Timer plus ELEKTRONN2's check()/summary()
    'DynamicKDT': 'utils_basic',    # kdtree.DynamicKDT plus ELEKTRONN2's get_knn()
    'Skeleton': 'skeleton',
    'read_nml': 'skeleton',
    'write_nml': 'skeleton',
    'skeletonise': 'skeletonisation',
    'SkeletonPatchSampler': 'skeleton_patches',
    'TrainingQueue': 'queue',
    'MissingDependencyError': 'optional',
    # ELEKTRONN2's ``from elektronn2.utils import ...``
    'cnncalculator': 'cnncalculator',
    'get_valid_patch_sizes': 'cnncalculator',
    'get_cloesest_valid_patch_size': 'cnncalculator',
    **{name: 'utils_basic' for name in (
        'get_free_cpu_count', 'parallel_accum', 'DecoratorBase', 'timeit', 'cache', 'CircularBuffer',
        'AccumulationArray', 'KDT', 'import_variable_from_file', 'picklesave', 'pickleload', 'h5save',
        'h5load', 'pretty_string_ops', 'makeversiondir', 'pretty_string_time', 'unique_rows',
        'as_list')},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
