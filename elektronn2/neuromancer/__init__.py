"""neuromancer: build neural networks as graphs of nodes (``import elektronn2.neuromancer as nm``).

Every node knows its output shape with axis tags, its field of view, strides,
parameters and cost at construction; calling a node on numpy arrays compiles
its graph on first use.

ELEKTRONN2's module paths exist too (``nm.node_basic``, ``nm.neural``, ``nm.various``,
``nm.loss``, ``nm.variables``, ``nm.optimiser``, ``nm.model``, ``nm.computations``,
``nm.graphutils``, ``nm.graphmanager``); they map each name to its one home here.
"""
from . import (
               computations,
               graphmanager,
               graphutils,
               loss,
               model,
               neural,
               node_basic,
               optimiser,
               variables,
               various,
)
from .basic import (
               Add,
               ApplyFunc,
               Concat,
               Crop,
               FromTensor,
               MultMerge,
               Pad,
               Reshape,
               Split,
               split,
)
from .classification import Classification, Errors, OneHot, Softmax
from .container import Model
from .inputs import GenericInput, InitialState_like, Input, Input_like, ValueNode
from .loading import modelload, rebuild_model
from .loss import (
               AbsLoss,
               AggregateLoss,
               BetaNLL,
               BinaryNLL,
               BlockedMultinoulliNLL,
               EuclideanDistance,
               GaussianAEVBPrior,
               GaussianNLL,
               GaussianRV,
               MalisNLL,
               MultinoulliNLL,
               RampLoss,
               SobelizedLoss,
               SoftDiceLoss,
               SquaredLoss,
)
from .mfp import FragmentsToDense
from .neural import LRN, AutoMerge, Conv, Dot, FaithlessMerge, Perceptron, Pool, UpConv, UpConvMerge
from .node import Node
from .recurrent import GRU, LSTM, Scan
from .registry import model_manager
from .shape import AxisGeometry, TaggedShape
from .tracing import SkelGetBatch, SkelGridUpdate, SkelLoss, SkelLossRec, SkelPrior
from .variables import ConstantParam, VariableParam, VariableWeight, initweights

__all__ = ['AbsLoss', 'Add', 'AggregateLoss', 'ApplyFunc', 'AutoMerge', 'AxisGeometry', 'BetaNLL',
           'BinaryNLL', 'BlockedMultinoulliNLL', 'Classification', 'Concat', 'ConstantParam',
           'Conv', 'Crop', 'Dot', 'Errors', 'EuclideanDistance', 'FaithlessMerge',
           'FragmentsToDense', 'FromTensor', 'GRU', 'GaussianAEVBPrior', 'GaussianNLL',
           'GaussianRV', 'GenericInput', 'InitialState_like', 'Input', 'Input_like', 'LRN',
           'LSTM', 'MalisNLL', 'Model', 'MultMerge', 'MultinoulliNLL', 'Node', 'OneHot', 'Pad',
           'Perceptron', 'Pool', 'RampLoss', 'Reshape', 'Scan', 'SkelGetBatch', 'SkelGridUpdate',
           'SkelLoss', 'SkelLossRec', 'SkelPrior', 'SobelizedLoss', 'SoftDiceLoss', 'Softmax', 'Split',
           'SquaredLoss', 'TaggedShape', 'UpConv', 'UpConvMerge', 'ValueNode', 'VariableParam',
           'VariableWeight', 'computations', 'graphmanager', 'graphutils', 'initweights', 'loss',
           'model', 'model_manager', 'modelload', 'neural', 'node_basic', 'optimiser',
           'rebuild_model', 'split', 'variables', 'various']


#: names ELEKTRONN2's example configs use that its released neuromancer never had
UNRELEASED = {'advmerge': "nm.advmerge (used by ELEKTRONN2's examples/adversarial.py) is not part of "
                          "ELEKTRONN2's released neuromancer, so it has no counterpart here; build "
                          "the adversary's input from nodes (e.g. nm.Concat of prediction and "
                          "nm.OneHot target)"}


def __getattr__(name: str):
    if name in UNRELEASED:
        raise AttributeError(UNRELEASED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
