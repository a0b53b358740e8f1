"""Reading ELEKTRONN2's and ELEKTRONN v1's pickled files without running code from them.

ELEKTRONN2 saved models (``Model.save``) and ELEKTRONN v1 saved parameters
(``MixedConvNN.saveParameters``) as Python pickles (protocol 2, written by Python 2 or
3, optionally gzip-compressed). :func:`read_pickles` reads them with
:mod:`elektronn2.utils.safe_pickle` (numpy arrays checked before they are allocated,
plain containers, nothing called), allowing besides only inert :class:`Record` objects
standing for the descriptor classes and node classes of ELEKTRONN2 named in
:data:`RECORD_NAMES` (never imported: a record only stores the arguments and state the
file gives it). Every other global the file names (``os.system``, ``builtins.eval``,
``subprocess``, any unknown name) is refused with a
:class:`~elektronn2.errors.ModelFileError` naming it, before anything is called, so a
``__reduce__`` payload never runs.
"""
from __future__ import annotations

import os

from ..errors import ModelFileError
from ..utils.safe_pickle import Inert, Policy, inert_class, load_all

_NEURO = 'elektronn2.neuromancer'

#: (module, name) of ELEKTRONN2's classes and functions an old model file may name; they
#: become inert records. The node classes are those of ELEKTRONN2's neuromancer modules.
RECORD_NAMES = frozenset(
    [(f'{_NEURO}.graphmanager', n) for n in ('NodeDescriptor', 'SplitDescriptor', 'NodePointer',
                                              'ParamPointer')]
    + [(f'{_NEURO}.graphutils', 'TaggedShape'), ('future.types.newint', 'newint')]
    + [(f'{_NEURO}.node_basic', n) for n in (
        'Input', 'Input_like', 'GenericInput', 'FromTensor', 'Concat', 'Add', 'MultMerge',
        'ApplyFunc', 'ValueNode', 'InitialState_like', 'split', 'FlipNode', 'AdvMerge',
        'AdvTarget')]
    + [(f'{_NEURO}.neural', n) for n in (
        'Perceptron', 'Dot', 'Conv', 'UpConv', 'Crop', 'Pad', 'FragmentsToDense', 'Pool',
        'FaithlessMerge', 'GRU', 'LSTM', 'LRN', 'AutoMerge', 'UpConvMerge')]
    + [(f'{_NEURO}.loss', n) for n in (
        'Softmax', 'OneHot', 'MultinoulliNLL', 'BlockedMultinoulliNLL', 'MalisNLL', 'BinaryNLL',
        'GaussianNLL', 'BetaNLL', 'SquaredLoss', 'AbsLoss', 'EuclideanDistance', 'RampLoss',
        'AggregateLoss', 'Errors', 'SobelizedLoss')]
    + [(f'{_NEURO}.various', n) for n in (
        'GaussianRV', 'GaussianAEVBPrior', 'Reshape', 'Scan', 'Classification', 'ScanN')]
)


class Record(Inert):
    """An inert stand-in for an object of an ELEKTRONN2 class (its class is a subclass
    made per name in :data:`RECORD_NAMES`): ``args``, ``kwargs`` of its creation and
    its attribute dict ``state``, nothing else."""


#: What an old model file may hold: plain data and records of ELEKTRONN2's classes.
_POLICY = Policy(ModelFileError, "an old model file may name only numpy arrays, OrderedDict "
                                 "and ELEKTRONN2's classes",
                 {key: inert_class(*key, base=Record) for key in RECORD_NAMES})


def read_pickles(path: str | os.PathLike) -> list:
    """All pickles stored one after another in ``path`` (gzip-compressed or not): numpy
    arrays, plain containers and, for ELEKTRONN2's objects, :class:`Record`. Refusals are
    ModelFileErrors naming the file."""
    return load_all(path, _POLICY)
