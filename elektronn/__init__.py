"""ELEKTRONN v1's import paths (``from elektronn.net.convnet import MixedConvNN``), served by
:mod:`elektronn2.legacy` so that v1 scripts run unchanged (see docs/legacy.rst)."""
from elektronn2.legacy.v1paths import install

install(__name__)
