"""ELEKTRONN2's ``elektronn2.malis``: affinity-graph helpers under their old names.

The implementations live in :mod:`elektronn2.inference.malis` (MALIS pair counts,
affinity components, seeded watershed), :mod:`elektronn2.data.labels` and
:mod:`elektronn2.inference.metrics`; :mod:`.malis_utils` maps the old names onto them.
"""
from __future__ import annotations

from ..lazy import lazy_attributes

__all__, __getattr__, __dir__ = lazy_attributes(__name__, {
    'malis_utils': ('compute_V_rand_N2', 'mknhood2d', 'mknhood3d', 'mknhood3d_aniso',
                    'bmap_to_affgraph', 'seg_to_affgraph', 'affgraph_to_seg', 'malis_weights',
                    'watershed_from_affgraph', 'bmappred_to_affgraph'),
})
