"""ELEKTRONN2's ``neuromancer.various``: its names mapped to their homes here.

Sampling and priors are in :mod:`.densities` (GaussianRV, GaussianAEVBPrior), recurrence in
:mod:`.recurrent` (Scan, scansplit; ``ScanN`` is :class:`.recurrent.Scan`), Reshape in
:mod:`.basic`, the skeleton-tracing nodes in :mod:`.tracing` (whose Theano-op names raise a
GraphError saying what to use instead).
"""
from __future__ import annotations

# re-exports (``name as name``); no ``__all__``, so that the API reference documents each
# name once, in the module that defines it
from .basic import Reshape as Reshape
from .densities import GaussianAEVBPrior as GaussianAEVBPrior
from .densities import GaussianRV as GaussianRV
from .recurrent import Scan as Scan
from .recurrent import Scan as ScanN  # noqa: F401  (ELEKTRONN2's name)
from .recurrent import scansplit as scansplit
from .tracing import SkelGetBatch as SkelGetBatch
from .tracing import SkelGetBatchN as SkelGetBatchN
from .tracing import SkelGetBatchOP as SkelGetBatchOP
from .tracing import SkelGridUpdate as SkelGridUpdate
from .tracing import SkelGridUpdateN as SkelGridUpdateN
from .tracing import SkelGridUpdateOP as SkelGridUpdateOP
from .tracing import SkelLoss as SkelLoss
from .tracing import SkelLossN as SkelLossN
from .tracing import SkelLossOP as SkelLossOP
from .tracing import SkelLossRec as SkelLossRec
from .tracing import SkelLossRecOP as SkelLossRecOP
from .tracing import SkelPrior as SkelPrior
from .tracing import StereographicMap as StereographicMap
from .tracing import skelgetbatch_split as skelgetbatch_split
from .tracing import skelgridupdate_split as skelgridupdate_split
