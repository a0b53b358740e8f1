"""ELEKTRONN v1's import paths, mapped to the names of :mod:`elektronn2.legacy`.

v1 scripts import ``from elektronn.net.convnet import MixedConvNN``;
:data:`V1_MODULES` says where each v1 name lives here. :func:`install` makes those
module paths importable under a package name (a top-level ``elektronn`` package
calling ``install(__name__)`` lets v1 imports run unchanged).
"""
from __future__ import annotations

import sys
import types

from . import introspection, mixedconvnn, netutils, traindata

#: v1 module path (without the package name) -> (module here, v1 names it provides)
V1_MODULES: dict[str, tuple[types.ModuleType, tuple[str, ...]]] = {
    'net.convnet': (mixedconvnn, ('MixedConvNN',)),
    'net.netcreation': (netutils, ('createNetfromParams',)),
    'net.netutils': (netutils, ('CNNCalculator',)),
    'net.gaborfilters': (netutils, ('makeGabor',)),
    'net.introspection': (introspection, ('embedMatricesInGray', 'plotFilters',
                                          'showActivations', 'showParamHistogram',
                                          'showActivityHistogram')),
    'training.traindata': (traindata, ('MNISTData',)),
}


def install(package: str = 'elektronn') -> None:
    """Make ``package.net.convnet`` etc. importable (registered in ``sys.modules``), each
    holding its v1 names; ``package`` itself is created unless it is imported already."""
    if package not in sys.modules:
        sys.modules[package] = types.ModuleType(package, "ELEKTRONN v1's import paths")
    for path, (home, names) in V1_MODULES.items():
        parent = package
        for part in path.split('.'):
            full = f"{parent}.{part}"
            if full not in sys.modules:
                sys.modules[full] = types.ModuleType(full, f"v1 names from {home.__name__}")
                setattr(sys.modules[parent], part, sys.modules[full])
            parent = full
        for name in names:
            setattr(sys.modules[parent], name, getattr(home, name))
