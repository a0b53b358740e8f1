"""For ELEKTRONN v1 users: v1's declarative configs and its ``MixedConvNN`` builder.

* :mod:`.declarative`: ``elektronn2-train`` builds a plain CNN / MLP from v1's config
  keys (``filters``, ``pool``, ``nof_filters``, ``MLP_layers``, ...).
* :mod:`.mixedconvnn`: :class:`MixedConvNN`, v1's layer-by-layer network builder, as a
  thin layer over :mod:`elektronn2.neuromancer`.
* :mod:`.traindata`: :class:`MNISTData` with v1's interface (``getbatch``,
  ``valid_d``, ``test_l``, ...).
"""
from .declarative import V1_KEYS, from_v1_settings
from .mixedconvnn import MixedConvNN
from .traindata import MNISTData

__all__ = ['MNISTData', 'MixedConvNN', 'V1_KEYS', 'from_v1_settings']
