"""For ELEKTRONN v1 users: v1's declarative configs, its ``MixedConvNN`` builder and helpers.

* :mod:`.declarative`: ``elektronn2-train`` builds a plain CNN / MLP from v1's config
  keys (``filters``, ``pool``, ``nof_filters``, ``MLP_layers``, ...).
* :mod:`.mixedconvnn`: :class:`MixedConvNN`, v1's layer-by-layer network builder, as a
  thin layer over :mod:`elektronn2.neuromancer`.
* :mod:`.traindata`: :class:`MNISTData` with v1's interface (``getbatch``,
  ``valid_d``, ``test_l``, ...).
* :mod:`.netutils`: ``createNetfromParams``, ``CNNCalculator``, ``makeGabor``.
* :mod:`.introspection`: v1's plotting names (``embedMatricesInGray``, ``plotFilters``,
  ...) over :mod:`elektronn2.utils.introspection`.
* :mod:`.v1paths`: where each v1 import path (``elektronn.net.convnet``, ...) lives here.
"""
from .declarative import V1_KEYS, from_v1_settings
from .introspection import (
                            embedMatricesInGray,
                            plotFilters,
                            showActivations,
                            showActivityHistogram,
                            showParamHistogram,
)
from .mixedconvnn import MixedConvNN
from .netutils import CNNCalculator, createNetfromParams, makeGabor
from .traindata import MNISTData
from .v1paths import V1_MODULES

__all__ = ['CNNCalculator', 'MNISTData', 'MixedConvNN', 'V1_KEYS', 'V1_MODULES',
           'createNetfromParams', 'embedMatricesInGray', 'from_v1_settings', 'makeGabor',
           'plotFilters', 'showActivations', 'showActivityHistogram', 'showParamHistogram']
