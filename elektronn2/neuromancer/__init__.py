"""neuromancer: build neural networks as graphs of nodes (``import elektronn2.neuromancer as nm``).

Every node knows its output shape with axis tags, its field of view, strides,
parameters and cost at construction; calling a node on numpy arrays compiles
its graph on first use.
"""
from . import model
from .basic import Add, Concat, Input, Input_like
from .loss import (AbsLoss, AggregateLoss, BinaryNLL, Errors, MultinoulliNLL, Softmax,
                   SquaredLoss)
from .model import Model, model_manager, modelload
from .neural import Conv, Dot, Perceptron, Pool
from .node import Node
from .shape import AxisGeometry, TaggedShape

__all__ = ['AbsLoss', 'Add', 'AggregateLoss', 'AxisGeometry', 'BinaryNLL', 'Concat', 'Conv',
           'Dot', 'Errors', 'Input', 'Input_like', 'Model', 'MultinoulliNLL', 'Node',
           'Perceptron', 'Pool', 'Softmax', 'SquaredLoss', 'TaggedShape', 'model',
           'model_manager', 'modelload']
