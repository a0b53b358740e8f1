"""neuromancer: build neural networks as graphs of nodes (``import elektronn2.neuromancer as nm``).

Every node knows its output shape with axis tags, its field of view, strides,
parameters and cost at construction; calling a node on numpy arrays compiles
its graph on first use.
"""
from . import model
from .basic import (Add, ApplyFunc, Concat, Crop, InitialState_like, Input, Input_like,
                    MultMerge, Pad, Reshape, Split, ValueNode, split)
from .container import Model
from .loading import modelload, rebuild_model
from .loss import (AbsLoss, AggregateLoss, BinaryNLL, Errors, GaussianNLL, GaussianRV,
                   MultinoulliNLL, OneHot, Softmax, SquaredLoss)
from .mfp import FragmentsToDense
from .neural import LRN, AutoMerge, Conv, Dot, Perceptron, Pool, UpConv, UpConvMerge
from .node import Node
from .recurrent import GRU, LSTM, Scan
from .registry import model_manager
from .shape import AxisGeometry, TaggedShape

__all__ = ['AbsLoss', 'Add', 'AggregateLoss', 'ApplyFunc', 'AutoMerge', 'AxisGeometry',
           'BinaryNLL', 'Concat', 'Conv', 'Crop', 'Dot', 'Errors', 'FragmentsToDense', 'GRU',
           'GaussianNLL', 'GaussianRV', 'InitialState_like', 'Input', 'Input_like', 'LRN', 'LSTM',
           'Model', 'MultMerge', 'MultinoulliNLL', 'Node', 'OneHot', 'Pad', 'Perceptron', 'Pool',
           'Reshape', 'Scan', 'Softmax', 'Split', 'SquaredLoss', 'TaggedShape', 'UpConv',
           'UpConvMerge', 'ValueNode', 'model', 'model_manager', 'modelload', 'rebuild_model',
           'split']
