"""Nodes of ELEKTRONN2's skeleton-tracing networks: :class:`StereographicMap` and
:class:`SkelPrior`; and the names of its tracing ops, which do not exist here.

ELEKTRONN2 traced neurite skeletons with a recurrent network whose losses and batches
came from Theano ops calling a Python skeleton object (``SkelLossOP``, ``SkelGetBatchOP``,
...). That tracing machinery is not part of this package: those names raise a
:class:`~elektronn2.errors.GraphError` that says what to use instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GraphError, ShapeError
from .node import Node
from .shape import TaggedShape


def _xyz_vector(sh: TaggedShape, name: str) -> None:
    ok = (sh.tags == ('b', 'f') or sh.tags == ('f',)) and sh['f'] == 3
    if not ok:
        raise ShapeError(f"{name} needs a prediction (b, 3) tagged 'b,f' or (3,) tagged 'f', "
                         f"got {sh}")


class StereographicMap(Node):
    """Map predictions (R, Y, X) (b, 3) to a point of the sphere of radius softplus(R),
    by the inverse stereographic projection:
    ``(z, y, x) = r (1 - X^2 - Y^2, 2 Y, 2 X) / (1 + X^2 + Y^2)``; output (b, 3) 'b,f'."""

    def __init__(self, pred: Node, name: str = 'stereo_map', print_repr: bool = True):
        super().__init__(pred, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        _xyz_vector(sh, 'StereographicMap')
        return sh

    def forward(self, pred, training=False):
        r, y, x = F.softplus(pred[..., 0]), pred[..., 1], pred[..., 2]
        q = x ** 2 + y ** 2
        return torch.stack([r * (1 - q), r * 2 * y, r * 2 * x], dim=-1) / (1 + q).unsqueeze(-1)


class SkelPrior(Node):
    """Prior on a predicted tracing step ``p`` = (z, y, x) (b, 3) (or (3,)), per example:

    ``prior_n * max(|(2z, y, x)| - target_length| - 0.75, 0)`` (step length),
    ``+ prior_posz * softplus(-z)`` (backwards in z), ``+ prior_z * |target_length / 2 - z|``
    ``+ prior_xy * |(y, x)|``; output (b, 1) 'b,f' (or (1,) 'f'). The five numbers are
    constant parameters (``node.params``), changeable while training.
    """
    _PRIORS = ('target_length', 'prior_n', 'prior_posz', 'prior_z', 'prior_xy')

    def __init__(self, pred: Node, target_length: float = 5.0, prior_n: float = 0.0,
                 prior_posz: float = 0.0, prior_z: float = 0.0, prior_xy: float = 0.0,
                 name: str = 'skel_prior', print_repr: bool = True):
        self._values = (target_length, prior_n, prior_posz, prior_z, prior_xy)
        super().__init__(pred, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        _xyz_vector(sh, 'SkelPrior')
        return sh.updateshape('f', 1)

    def _make_params(self):
        return {k: self._new_param([float(v)], trainable=False)
                for k, v in zip(self._PRIORS, self._values)}

    def forward(self, pred, training=False):
        p = self.params
        aniso = torch.tensor([2.0, 1.0, 1.0], device=pred.device, dtype=pred.dtype)
        norm = torch.linalg.vector_norm(pred * aniso, dim=-1, keepdim=True)
        z, xy = pred[..., :1], pred[..., 1:]
        return (p['prior_n'] * F.relu((norm - p['target_length']).abs() - 0.75)
                + p['prior_posz'] * F.softplus(-z)
                + p['prior_z'] * (p['target_length'] / 2 - z).abs()
                + p['prior_xy'] * torch.linalg.vector_norm(xy, dim=-1, keepdim=True))


_INSTEAD = ("ELEKTRONN2's skeleton tracing (Theano ops calling a Python skeleton object for "
            "losses, gradients and batches) is not part of this PyTorch re-creation. Write "
            "the loss from nodes (e.g. SquaredLoss or EuclideanDistance against a target "
            "Input, plus SkelPrior), or a Node subclass whose forward calls your skeleton "
            "code; tracing batches come from a data class's getbatch")


def _unavailable(name: str, what: str):
    def refuse(*args, **kwargs):
        raise GraphError(f"{name} ({what}) does not exist here: {_INSTEAD}")
    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = f"Unavailable ({what}); calling it raises GraphError saying what to use."
    return refuse


def _unavailable_class(name: str, what: str) -> type:
    refuse = _unavailable(name, what)
    return type(name, (), {'__new__': lambda cls, *a, **k: refuse(),
                           '__doc__': refuse.__doc__, '__module__': __name__})


SkelLossOP = _unavailable_class('SkelLossOP', 'a Theano op')
SkelLossRecOP = _unavailable_class('SkelLossRecOP', 'a Theano op')
SkelGridUpdateOP = _unavailable_class('SkelGridUpdateOP', 'a Theano op')
SkelGetBatchOP = _unavailable_class('SkelGetBatchOP', 'a Theano op')
SkelLossN = _unavailable_class('SkelLossN', 'a node around SkelLossOP')
SkelLossRec = _unavailable_class('SkelLossRec', 'a node around SkelLossRecOP')
SkelGridUpdateN = _unavailable_class('SkelGridUpdateN', 'a node around SkelGridUpdateOP')
SkelGetBatchN = _unavailable_class('SkelGetBatchN', 'a node around SkelGetBatchOP')
SkelLoss = _unavailable('SkelLoss', 'a SkelLossN factory')
SkelGridUpdate = _unavailable('SkelGridUpdate', 'a SkelGridUpdateN factory')
SkelGetBatch = _unavailable('SkelGetBatch', 'a SkelGetBatchN factory')
skelgridupdate_split = _unavailable('skelgridupdate_split', 'splits SkelGridUpdateN')
skelgetbatch_split = _unavailable('skelgetbatch_split', 'splits SkelGetBatchN')

UNAVAILABLE = ('SkelLossOP', 'SkelLossRecOP', 'SkelGridUpdateOP', 'SkelGetBatchOP', 'SkelLossN',
               'SkelLossRec', 'SkelGridUpdateN', 'SkelGetBatchN', 'SkelLoss', 'SkelGridUpdate',
               'SkelGetBatch', 'skelgridupdate_split', 'skelgetbatch_split')
