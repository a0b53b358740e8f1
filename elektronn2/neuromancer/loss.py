"""Losses: MultinoulliNLL, BlockedMultinoulliNLL, MalisNLL, BinaryNLL, SoftDiceLoss,
SquaredLoss, AbsLoss, EuclideanDistance, RampLoss, SobelizedLoss, AggregateLoss; GaussianNLL, BetaNLL,
GaussianRV (sampling) and GaussianAEVBPrior (:mod:`.densities`). Softmax,
Classification, Errors and OneHot live in :mod:`.classification` (ELEKTRONN2 kept them
here; this module re-exports them).

Element-wise losses keep the prediction's shape with 'f' reduced to 1 and are
normalised so that their *mean* is the average loss over labelled entries
(:class:`SoftDiceLoss` scores whole examples and is a scalar);
:class:`AggregateLoss` turns one or several of them into the scalar that is
optimised. Unlabelled entries: sparse labels < 0, or NaN regression targets.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError
from .classification import Classification as Classification
from .classification import Errors as Errors
from .classification import OneHot as OneHot
from .classification import Softmax as Softmax
from .classification import broadcast_along, check_class_target, class_structure, one_hot_labels
from .densities import EPS
from .densities import BetaNLL as BetaNLL
from .densities import GaussianAEVBPrior as GaussianAEVBPrior
from .densities import GaussianNLL as GaussianNLL
from .densities import GaussianRV as GaussianRV
from .malis import malis_pair_counts
from .neural import Conv
from .node import Node
from .shape import SCALAR, TaggedShape


class MultinoulliNLL(Node):
    """Negative log-likelihood of class probabilities (cross-entropy).

    Args:
        pred: class probabilities, normally a :class:`Softmax` (then log-probabilities
            are computed stably from its logits).
        target: sparse labels (b, n_indep, ...) with values in [0, n_class) and < 0 for
            unlabelled, or dense probabilities shaped like ``pred``.
        class_weights: weight per class (list/array, or a node): ``n_class`` values shared
            by the ``n_indep`` softmax groups, or ``n_class * n_indep`` (ELEKTRONN2's
            length, one per output feature).
        example_weights: node of shape (b, 1, ...) or (b, ...): weight per output position.
        mask_class_labeled: node (b, n_class): 0 where a class is present but not labelled
            in that example; such positions are ignored.
        mask_class_not_present: node (b, n_class): 1 where a class is known to be absent;
            its probability is pushed to 0 everywhere in that example.
        weakness: in [0, 1): labels are trusted only to this degree less, i.e. each
            labelled target row becomes ``(1 - weakness) * target + weakness / n_class``
            (label smoothing of weak labels); 0 is the plain NLL.
        label_prop_thresh: label propagation (ELEKTRONN v1): unlabelled positions
            (sparse label < 0) whose predicted probability for a class exceeds this
            threshold are trained as that class.

    Output: shape of ``pred`` with 'f' = 1, normalised so its mean is the NLL per
    labelled entry.
    """

    def __init__(self, pred: Node, target: Node, target_is_sparse: bool = False,
                 class_weights=None, example_weights: Node | None = None, weakness: float = 0,
                 mask_class_labeled: Node | None = None, mask_class_not_present: Node | None = None,
                 label_prop_thresh: float | None = None, name: str = 'nll', print_repr: bool = True):
        if label_prop_thresh is not None and not target_is_sparse:
            raise ConfigError(f"MultinoulliNLL {name!r}: label_prop_thresh needs sparse targets")
        if not 0 <= weakness < 1:
            raise ConfigError(f"{type(self).__name__} {name!r}: weakness={weakness} must be in [0, 1)")
        self.weakness = float(weakness)
        self.target_is_sparse = target_is_sparse
        self.label_prop_thresh = label_prop_thresh
        self.n_class, self.n_indep = class_structure(pred)
        self._class_weights_arg = class_weights
        slots = {'pred': pred, 'target': target}
        if isinstance(pred, Softmax):
            slots['logits'] = pred.parent
        optional = {'class_weights': class_weights, 'example_weights': example_weights,
                    'mask_class_labeled': mask_class_labeled,
                    'mask_class_not_present': mask_class_not_present}
        slots.update({k: v for k, v in optional.items() if isinstance(v, Node)})
        self._slots = list(slots)
        super().__init__(list(slots.values()), name, print_repr)

    def _infer_shape(self, pred: TaggedShape, target: TaggedShape, *others) -> TaggedShape:
        check_class_target(pred, target, self.target_is_sparse, self.n_indep)
        return pred.updateshape(pred.tag2index('f'), 1)

    def _make_params(self):
        """Constant class weights (all 1 unless given; a training config may set them)."""
        cw = self._class_weights_arg
        if isinstance(cw, Node):
            return {}
        cw = np.ones(self.n_class, np.float32) if cw is None else np.asarray(cw, np.float32).ravel()
        if cw.size not in (self.n_class, self.n_class * self.n_indep):
            raise ShapeError(f"MultinoulliNLL {self.name!r}: {cw.size} class_weights given for "
                             f"{self.n_class} classes in {self.n_indep} group(s): give "
                             f"{self.n_class} (shared by the groups) or "
                             f"{self.n_class * self.n_indep} (one per output feature)")
        return {'class_weights': self._new_param(cw, trainable=False)}

    @property
    def _f_axis(self) -> int:
        return self.parents[0].shape.tag2index('f')

    def _class_mask(self, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(b, n_class) or (b, n_class*n_indep) -> broadcastable to ``like`` (batch first)."""
        mask = mask.reshape(mask.shape[0], -1).to(like.dtype)
        if mask.shape[1] == self.n_class:
            mask = mask.repeat(1, self.n_indep)
        shape = [1] * like.ndim
        shape[0], shape[self._f_axis] = mask.shape
        return mask.reshape(shape)

    def _propagated_labels(self, labels: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Unlabelled positions take the confidently predicted class (label propagation)."""
        f = self._f_axis
        grouped = pred.detach().unflatten(f, (self.n_indep, self.n_class))
        confidence, predicted = grouped.max(dim=f + 1)
        confident = (labels < 0) & (confidence > self.label_prop_thresh)
        return torch.where(confident, predicted, labels)

    def _one_hot(self, target: torch.Tensor) -> torch.Tensor:
        return one_hot_labels(target, self.n_class, self._f_axis, self)

    def _log_probs(self, get: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, their log) of the prediction; stable from a Softmax's logits."""
        pred = get['pred'].float()
        softmax = self.parents[0]  # there are logits only if the prediction is a Softmax
        log_p = (softmax.log_probs(get['logits'].float())
                 if 'logits' in get and isinstance(softmax, Softmax)
                 else torch.log(pred.clamp(min=EPS)))
        return pred, log_p

    def _weakened(self, target: torch.Tensor) -> torch.Tensor:
        """Labelled rows mixed with the uniform distribution by ``weakness``."""
        f = self._f_axis
        grouped = target.unflatten(f, (self.n_indep, self.n_class))
        mass = grouped.sum(dim=f + 1, keepdim=True)
        mixed = (1 - self.weakness) * grouped + self.weakness * mass / self.n_class
        return mixed.flatten(f, f + 1)

    def forward(self, *inputs, training=False):
        get = dict(zip(self._slots, inputs))
        pred, log_p = self._log_probs(get)
        if self.target_is_sparse:
            labels = get['target'].long()
            if self.label_prop_thresh is not None:
                labels = self._propagated_labels(labels, pred)
            target = self._one_hot(labels)
        else:
            target = get['target'].float()
        if self.weakness:
            target = self._weakened(target)
        f = self._f_axis
        cw = get['class_weights'] if 'class_weights' in get else self.params['class_weights']
        cw = cw.float().reshape(-1)
        per_feature = cw if cw.numel() == self.n_class * self.n_indep else cw.repeat(self.n_indep)
        weights = broadcast_along(per_feature, pred.ndim, f)
        if 'example_weights' in get:
            ew = get['example_weights'].float()
            weights = weights * (ew if ew.ndim == pred.ndim else ew.unsqueeze(f))
        if 'mask_class_labeled' in get:
            target = target * self._class_mask(get['mask_class_labeled'], pred)
        nll = -(target * weights * log_p)
        n_labelled = target.sum()
        if 'mask_class_not_present' in get:
            absent = self._class_mask(get['mask_class_not_present'], pred).expand_as(pred)
            nll = nll - absent * weights * torch.log((1.0 - pred).clamp(min=EPS))
            n_labelled = n_labelled + absent.sum()
        scale = pred.numel() / (n_labelled + EPS) / (self.n_class * self.n_indep)
        return (nll * scale).sum(dim=f, keepdim=True)


class BlockedMultinoulliNLL(MultinoulliNLL):
    """:class:`MultinoulliNLL` where confusions among the foreground classes cost less.

    Within each group, the probability of every class but class 0 is raised to at
    least ``blocking_factor`` times the largest of them,
    ``p_k <- max(p_k, blocking_factor * max_{j >= 1} p_j)`` for ``k >= 1``, before the
    NLL is taken; a foreground example predicted as another foreground class is then
    penalised by at most ``-log(blocking_factor * p_max)``. ``blocking_factor`` is a
    constant parameter (``node.params['blocking_factor']``, changeable while training).
    Arguments otherwise as for :class:`MultinoulliNLL`; output (b, 1, ...) as there.
    """

    def __init__(self, pred: Node, target: Node, blocking_factor: float = 0.5,
                 target_is_sparse: bool = False, class_weights=None,
                 example_weights: Node | None = None, mask_class_labeled: Node | None = None,
                 mask_class_not_present: Node | None = None, name: str = 'nll',
                 print_repr: bool = True):
        self._blocking_factor = float(blocking_factor)
        super().__init__(pred, target, target_is_sparse=target_is_sparse,
                         class_weights=class_weights, example_weights=example_weights,
                         mask_class_labeled=mask_class_labeled,
                         mask_class_not_present=mask_class_not_present, name=name,
                         print_repr=print_repr)

    def _make_params(self):
        params = super()._make_params()
        params['blocking_factor'] = self._new_param([self._blocking_factor], trainable=False)
        return params

    def _log_probs(self, get: dict) -> tuple[torch.Tensor, torch.Tensor]:
        f = self._f_axis
        grouped = get['pred'].float().unflatten(f, (self.n_indep, self.n_class))
        foreground = grouped.narrow(f + 1, 1, self.n_class - 1)
        floor = self.params['blocking_factor'] * foreground.amax(dim=f + 1, keepdim=True)
        blocked = torch.cat([grouped.narrow(f + 1, 0, 1), torch.maximum(foreground, floor)],
                            dim=f + 1).flatten(f, f + 1)
        return blocked, torch.log(blocked.clamp(min=EPS))


class MalisNLL(Node):
    """MALIS loss of affinity predictions as a negative log-likelihood (Turaga et al. 2009).

    Args:
        pred: a :class:`Softmax` with 2 classes for each of the k edges (n_indep = k):
            'f' holds (disconnected, connected) of edge 0, then of edge 1, ...
        aff_gt: (b, k, *spatial) true affinities (1: connected).
        seg_gt: (b, 1, *spatial) true segment ids (0: unlabelled, in no pair).
        nhood: (k, n_spatial) edge offsets: edge i at voxel p joins p and p + nhood[i].
        unrestrict_neg: count negative pairs on the predicted affinities as they are;
            else on ``max(pred, aff_gt)`` (positive pairs always on ``min(pred, aff_gt)``).
        class_weights: 2 weights (disconnected, connected) for the pair counts.
        example_weights: node (b, 1 or k, *spatial) weighting each edge.

    Each edge gets the number of same-segment pairs (positive) and different-segment
    pairs (negative) whose maximin edge it is (:func:`.malis.malis_pair_counts`); the
    output (b, k, *spatial) is ``-(pos * log p_connected + neg * log p_disconnected)``,
    normalised so that its mean is the NLL per counted pair.
    """

    def __init__(self, pred: Node, aff_gt: Node, seg_gt: Node, nhood, unrestrict_neg: bool = True,
                 class_weights=None, example_weights: Node | None = None, name: str = 'nll',
                 print_repr: bool = True):
        if not isinstance(pred, Softmax) or pred.n_class != 2:
            raise ConfigError(f"MalisNLL {name!r}: pred must be a Softmax of 2 classes per "
                              f"edge (n_class=2, n_indep=number of edges)")
        self.nhood = np.asarray(nhood, dtype=np.int64)
        self._call_args['nhood'] = self.nhood.tolist()
        if self.nhood.ndim != 2 or len(self.nhood) != pred.n_indep:
            raise ShapeError(f"MalisNLL {name!r}: nhood {self.nhood.tolist()} must have one "
                             f"row of offsets per edge ({pred.n_indep} edges)")
        self.unrestrict_neg = bool(unrestrict_neg)
        self._class_weights_arg = class_weights
        slots = {'pred': pred, 'aff_gt': aff_gt, 'seg_gt': seg_gt}
        optional = {'class_weights': class_weights, 'example_weights': example_weights}
        slots.update({k: v for k, v in optional.items() if isinstance(v, Node)})
        self._slots = list(slots)
        super().__init__(list(slots.values()), name, print_repr)

    def _infer_shape(self, pred: TaggedShape, aff: TaggedShape, seg: TaggedShape,
                     *others) -> TaggedShape:
        n_edges = len(self.nhood)
        if self.nhood.shape[1] != len(pred.spatial_axes):
            raise ShapeError(f"nhood has {self.nhood.shape[1]} offsets per edge for "
                             f"{len(pred.spatial_axes)} spatial axes")
        for what, sh, n_f in (('aff_gt', aff, n_edges), ('seg_gt', seg, 1)):
            if sh.tags != pred.tags or sh['f'] != n_f or sh.spatial_shape != pred.spatial_shape:
                raise ShapeError(f"{what} {sh} must have the tags and spatial shape of the "
                                 f"prediction {pred} and 'f'={n_f}")
        return pred.updateshape('f', n_edges)

    def _make_params(self):
        cw = self._class_weights_arg
        if isinstance(cw, Node):
            return {}
        cw = np.ones(2, np.float32) if cw is None else np.asarray(cw, np.float32).ravel()
        if cw.size != 2:
            raise ShapeError(f"MalisNLL {self.name!r}: class_weights needs 2 values "
                             f"(disconnected, connected), got {cw.size}")
        return {'class_weights': self._new_param(cw, trainable=False)}

    def _counts(self, affinity: torch.Tensor, aff_gt: torch.Tensor, seg_gt: torch.Tensor):
        """(pos, neg) pair counts per edge, (b, k, *spatial), on the CPU."""
        aff = affinity.detach().float().cpu().numpy()
        gt = aff_gt.detach().float().cpu().numpy()
        seg = seg_gt.detach().cpu().numpy()
        f = self.shape.tag2index('f')
        aff, gt, seg = (np.moveaxis(a, f, 1) for a in (aff, gt, seg))
        pos, neg = np.zeros(aff.shape, np.int64), np.zeros(aff.shape, np.int64)
        for i in range(aff.shape[0]):
            pos[i] = malis_pair_counts(np.minimum(aff[i], gt[i]), seg[i, 0], self.nhood)[0]
            neg_on = aff[i] if self.unrestrict_neg else np.maximum(aff[i], gt[i])
            neg[i] = malis_pair_counts(neg_on, seg[i, 0], self.nhood)[1]
        return (torch.from_numpy(np.moveaxis(c, 1, f)).to(affinity.device, torch.float32)
                for c in (pos, neg))

    def forward(self, *inputs, training=False):
        get = dict(zip(self._slots, inputs))
        pred = get['pred'].float()
        f = self.shape.tag2index('f')
        connected, disconnected = pred[(slice(None),) * f + (slice(1, None, 2),)], \
            pred[(slice(None),) * f + (slice(0, None, 2),)]
        pos, neg = self._counts(connected, get['aff_gt'], get['seg_gt'])
        cw = (get['class_weights'] if 'class_weights' in get else self.params['class_weights'])
        cw = cw.float().reshape(-1)
        weight = get['example_weights'].float() if 'example_weights' in get else 1.0
        nll = -(pos * cw[1] * weight * torch.log(connected + EPS)
                + neg * cw[0] * weight * torch.log(disconnected + EPS))
        return nll * (nll.numel() / ((pos + neg).sum() + EPS))

    def _compute_cost(self) -> int:
        return 10 * self.shape.stripbatch_prod


class BinaryNLL(Node):
    """Element-wise binary cross-entropy of probabilities ``pred`` against ``target`` in [0, 1].

    NaN targets are unlabelled. With ``subtract_label_entropy`` the target's own
    entropy is subtracted (the loss becomes a KL divergence, 0 at a perfect fit).
    """

    masks_nan_target = True

    def __init__(self, pred: Node, target: Node, subtract_label_entropy: bool = False,
                 name: str = 'binary_nll', print_repr: bool = True):
        self.subtract_label_entropy = subtract_label_entropy
        super().__init__([pred, target], name, print_repr)

    def _infer_shape(self, pred: TaggedShape, target: TaggedShape) -> TaggedShape:
        if pred.shape != target.shape and pred.stripnone != target.stripnone:
            raise ShapeError(f"target shape {target.shape} differs from prediction {pred.shape}")
        return pred

    def forward(self, pred, target, training=False):
        pred, target = pred.float(), target.float()
        labelled = ~torch.isnan(target)
        t = torch.where(labelled, target, torch.zeros_like(target))

        def cross_entropy(q):
            return -(t * torch.log(q.clamp(min=EPS)) + (1 - t) * torch.log((1 - q).clamp(min=EPS)))
        loss = cross_entropy(pred)
        if self.subtract_label_entropy:
            loss = loss - cross_entropy(t)
        scale = pred.numel() / labelled.sum().clamp(min=1)
        return torch.where(labelled, loss, torch.zeros_like(loss)) * scale


class SoftDiceLoss(Node):
    """One minus the soft Dice coefficient (the F1 score of probabilities) of some classes.

    For each example, softmax group and class ``c`` of ``classes``:
    ``1 - (2 sum(p_c t_c) + smooth) / (sum(p_c) + sum(t_c) + smooth)``, the sums over the
    example's labelled positions (sparse labels < 0, or NaN in a dense target row, are
    left out); the output is the mean of these (scalar). It rewards the overlap of a
    class that is rare or thin (membranes, boundaries) rather than each position alike,
    and is usually mixed with an NLL in :class:`AggregateLoss`.

    Args:
        pred: class probabilities (b, n_indep * n_class, ...), e.g. a :class:`Softmax`.
        target: sparse labels (b, n_indep, ...) or dense probabilities shaped like ``pred``.
        classes: the classes scored, indices in [0, n_class) (default: class 1).
        smooth: added to numerator and denominator; keeps the loss defined (0) for an
            example without the class that predicts none of it.
    """

    masks_nan_target = True

    def __init__(self, pred: Node, target: Node, target_is_sparse: bool = False,
                 classes: Sequence[int] = (1,), smooth: float = 1.0, name: str = 'dice',
                 print_repr: bool = True):
        self.n_class, self.n_indep = class_structure(pred)
        self.classes = [int(c) for c in classes]
        if not self.classes or not all(0 <= c < self.n_class for c in self.classes):
            raise ConfigError(f"SoftDiceLoss {name!r}: classes={list(classes)}; valid: "
                              f"a non-empty list of classes in 0..{self.n_class - 1}")
        if smooth < 0:
            raise ConfigError(f"SoftDiceLoss {name!r}: smooth={smooth} must be >= 0")
        self.target_is_sparse = target_is_sparse
        self.smooth = float(smooth)
        super().__init__([pred, target], name, print_repr)

    def _infer_shape(self, pred: TaggedShape, target: TaggedShape) -> TaggedShape:
        check_class_target(pred, target, self.target_is_sparse, self.n_indep)
        return SCALAR

    def forward(self, pred, target, training=False):
        f = self.parents[0].shape.tag2index('f')
        groups = (self.n_indep, self.n_class)
        p = pred.float().unflatten(f, groups)
        if self.target_is_sparse:  # unlabelled: an all-zero one-hot row
            t = one_hot_labels(target, self.n_class, f, self).unflatten(f, groups)
            labelled = t.sum(dim=f + 1, keepdim=True) > 0
        else:
            t = target.float().unflatten(f, groups)
            labelled = ~torch.isnan(t).any(dim=f + 1, keepdim=True)
        p = torch.where(labelled, p, torch.zeros_like(p))
        t = torch.where(labelled, t, torch.zeros_like(t))
        chosen = torch.tensor(self.classes, device=p.device)
        p, t = p.index_select(f + 1, chosen), t.index_select(f + 1, chosen)
        positions = [d for d in range(p.ndim) if d not in (0, f, f + 1)]
        overlap = (p * t).sum(dim=positions)
        total = p.sum(dim=positions) + t.sum(dim=positions)
        return (1 - (2 * overlap + self.smooth) / (total + self.smooth)).mean()


class _RegressionLoss(Node):
    """Shared part of SquaredLoss and AbsLoss: masking, margin, normalisation."""
    masks_nan_target = True

    def __init__(self, pred: Node, target: Node, margin: float | None, scale_correction,
                 name: str, print_repr: bool):
        self.margin = margin
        self.scale_correction = scale_correction
        super().__init__([pred, target], name, print_repr)

    def _infer_shape(self, pred: TaggedShape, target: TaggedShape) -> TaggedShape:
        if pred.stripnone != target.stripnone or pred.ndim != target.ndim:
            raise ShapeError(f"target shape {target.shape} differs from prediction {pred.shape}")
        return pred.updateshape('f', 1) if 'f' in pred.tags else pred

    def _penalty(self, deviation: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _correction(self, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pred, target, training=False):
        pred, target = pred.float(), target.float()
        labelled = ~torch.isnan(target)
        t = torch.where(labelled, target, pred.detach())
        deviation = (t - pred).abs()
        if self.margin:
            deviation = F.relu(deviation - self.margin)
        loss = self._penalty(deviation)
        if self.scale_correction:
            loss = loss * self._correction(t)
        loss = torch.where(labelled, loss, torch.zeros_like(loss))
        loss = loss * (pred.numel() / labelled.sum().clamp(min=1))
        if 'f' in self.parents[0].shape.tags:
            loss = loss.mean(dim=self.parents[0].shape.tag2index('f'), keepdim=True)
        return loss


class SquaredLoss(_RegressionLoss):
    """``0.5 * max(|target - pred| - margin, 0)**2`` averaged over 'f'.

    ``scale_correction`` s down-weights large targets by ``s / (|target| + s)``.
    NaN targets are unlabelled.
    """

    def __init__(self, pred: Node, target: Node, margin: float | None = None,
                 scale_correction: float | None = None, name: str = 'se', print_repr: bool = True):
        super().__init__(pred, target, margin, scale_correction, name, print_repr)

    def _penalty(self, deviation):
        return 0.5 * deviation ** 2

    def _correction(self, target):
        return self.scale_correction / (target.abs() + self.scale_correction)


class AbsLoss(_RegressionLoss):
    """``max(|target - pred| - margin, 0)`` averaged over 'f'.

    ``scale_correction`` s up-weights large targets by ``1 + s * |target|``.
    NaN targets are unlabelled.
    """

    def __init__(self, pred: Node, target: Node, margin: float | None = None,
                 scale_correction: float | None = None, name: str = 'absloss', print_repr: bool = True):
        super().__init__(pred, target, margin, scale_correction, name, print_repr)

    def _penalty(self, deviation):
        return deviation

    def _correction(self, target):
        return 1.0 + self.scale_correction * target.abs()


class EuclideanDistance(Node):
    """Euclidean distance ``||target - pred||`` over the 'f' axis, shape of ``pred`` with
    'f' = 1; NaN distances (unlabelled) count 0."""

    def __init__(self, pred: Node, target: Node, name: str = 'se', print_repr: bool = True):
        super().__init__([pred, target], name, print_repr)

    def _infer_shape(self, pred: TaggedShape, target: TaggedShape) -> TaggedShape:
        if pred.stripnone != target.stripnone or pred.ndim != target.ndim:
            raise ShapeError(f"target shape {target.shape} differs from prediction {pred.shape}")
        return pred.updateshape('f', 1)

    def forward(self, pred, target, training=False):
        f = self.parents[0].shape.tag2index('f')
        dist = torch.linalg.vector_norm(target.float() - pred.float(), dim=f, keepdim=True)
        return torch.nan_to_num(dist, nan=0.0)


class RampLoss(Node):
    """Ramp (hinge) loss of two distances: ``max(d_low - d_big + margin, 0)``, averaged
    over 'f' (shape of ``d_low`` with 'f' = 1); pushes ``d_low`` below ``d_big`` by
    ``margin`` (a constant parameter, ``node.params['margin']``). NaN counts 0."""

    def __init__(self, d_low: Node, d_big: Node, name: str = 'se', print_repr: bool = True,
                 margin: float | None = None):
        self._margin = 0.0 if margin is None else float(margin)
        super().__init__([d_low, d_big], name, print_repr)

    def _infer_shape(self, low: TaggedShape, big: TaggedShape) -> TaggedShape:
        if low.stripnone != big.stripnone or low.ndim != big.ndim:
            raise ShapeError(f"d_big {big} must have the shape of d_low {low}")
        return low.updateshape('f', 1)

    def _make_params(self):
        return {'margin': self._new_param([self._margin], trainable=False)}

    def forward(self, low, big, training=False):
        f = self.parents[0].shape.tag2index('f')
        ramp = torch.nan_to_num(F.relu(low.float() - big.float() + self.params['margin']), nan=0.0)
        return ramp.mean(dim=f, keepdim=True)


def _sobel_filters(n_f: int, n_sp: int) -> np.ndarray:
    """Constant filters (n_f * n_sp, n_f, 3, ...): output channel ``k * n_f + i`` is the
    derivative (1, 0, -1) of input feature i along spatial axis k, smoothed by
    (0.3, 0.4, 0.3) along the other spatial axes."""
    derivative, smooth = np.array([1.0, 0.0, -1.0]), np.array([0.3, 0.4, 0.3])
    w = np.zeros((n_f * n_sp, n_f) + (3,) * n_sp, np.float32)
    for k in range(n_sp):
        kernel = np.ones((1,) * n_sp)
        for axis in range(n_sp):
            shape = [1] * n_sp
            shape[axis] = 3
            kernel = kernel * (derivative if axis == k else smooth).reshape(shape)
        for i in range(n_f):
            w[k * n_f + i, i] = kernel
    return w


def SobelizedLoss(pred: Node, target: Node, loss_type: str = 'abs',  # noqa: N802
                  loss_kwargs: dict | None = None) -> Node:
    """:class:`AbsLoss` between the Sobel gradients of ``pred`` and ``target``.

    Both pass through the same constant 'same' :class:`~.neural.Conv` (``pred_sobel``,
    ``target_sobel``) of :func:`_sobel_filters`: one smoothed derivative per spatial
    axis and feature. ``loss_kwargs`` go to AbsLoss; only ``loss_type='abs'`` exists.
    """
    if loss_type != 'abs':
        raise ConfigError(f"SobelizedLoss: loss_type={loss_type!r}; only 'abs' exists")
    n_f, n_sp = pred.shape['f'], len(pred.shape.spatial_axes)
    w = _sobel_filters(n_f, n_sp)
    b = np.zeros(n_f * n_sp, np.float32)

    def sobel(node: Node, name: str) -> Node:
        return Conv(node, n_f * n_sp, (3,) * n_sp, (1,) * n_sp, conv_mode='same',
                    activation_func='lin', w=[w, 'const'], b=[b, 'const'], name=name)
    return AbsLoss(sobel(pred, 'pred_sobel'), sobel(target, 'target_sobel'), **(loss_kwargs or {}))


class AggregateLoss(Node):
    """The scalar objective: mean over components of ``mixing_weight * mean(loss)``.

    ``mixing_weights`` (default all 1) is a constant parameter that can be changed
    during training (``model.mixing``-style via ``node.params['mixing_weights']``).
    """

    def __init__(self, parent_nodes: Node | Sequence[Node], mixing_weights=None,
                 name: str = 'total_loss', print_repr: bool = True):
        parents = [parent_nodes] if isinstance(parent_nodes, Node) else list(parent_nodes)
        weights = np.ones(len(parents)) if mixing_weights is None else np.asarray(mixing_weights)
        if weights.shape != (len(parents),):
            raise ShapeError(f"AggregateLoss {name!r}: {weights.size} mixing_weights for "
                             f"{len(parents)} losses")
        self._mixing_weights = weights.astype(np.float32)
        super().__init__(parents, name, print_repr)

    def _infer_shape(self, *shapes) -> TaggedShape:
        return SCALAR

    def _make_params(self):
        return {'mixing_weights': self._new_param(self._mixing_weights, trainable=False)}

    def _compute_cost(self) -> int:
        return sum(p.shape.stripbatch_prod for p in self.parents)

    def forward(self, *losses, training=False):
        means = torch.stack([loss.float().mean() for loss in losses])
        return (means * self.params['mixing_weights']).mean()
