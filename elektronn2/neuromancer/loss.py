"""Outputs and losses: Softmax, MultinoulliNLL, BinaryNLL, SquaredLoss, AbsLoss,
AggregateLoss, Errors, OneHot, GaussianNLL and GaussianRV (sampling).

Element-wise losses keep the prediction's shape with 'f' reduced to 1 and are
normalised so that their *mean* is the average loss over labelled entries;
:class:`AggregateLoss` turns one or several of them into the scalar that is
optimised. Unlabelled entries: sparse labels < 0, or NaN regression targets.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError, ShapeError
from .node import Node
from .shape import TaggedShape

EPS = 1e-6
SCALAR = TaggedShape((), ())


def _broadcast_along(vector: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return vector.reshape(shape)


class Softmax(Node):
    """Softmax over the 'f' axis, in ``n_indep`` independent groups of ``n_class``."""

    def __init__(self, parent: Node, n_class: int | str = 'auto', n_indep: int = 1,
                 name: str = 'softmax', print_repr: bool = True):
        if parent.activation_func not in ('lin', 'linear'):
            raise ConfigError(f"Softmax {name!r}: its parent {parent.name!r} must have "
                              f"activation_func='lin', not {parent.activation_func!r}")
        self.n_class_arg, self.n_indep = n_class, int(n_indep)
        super().__init__(parent, name, print_repr)

    def _classes_of(self, n_f: int) -> int:
        """Classes per group for ``n_f`` input features."""
        return n_f // self.n_indep if self.n_class_arg == 'auto' else int(self.n_class_arg)

    @functools.cached_property
    def n_class(self) -> int:
        """Classes per softmax group."""
        return self._classes_of(self.shape['f'])

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        n_f = sh['f']
        n_class = self._classes_of(n_f)
        if n_class * self.n_indep != n_f or n_class < 2:
            raise ShapeError(f"cannot form {self.n_indep} softmax group(s) of {n_class} classes "
                             f"from {n_f} features")
        return sh

    def _group(self, x: torch.Tensor, fn) -> torch.Tensor:
        axis = self.shape.tag2index('f')
        grouped = x.unflatten(axis, (self.n_indep, self.n_class))
        return fn(grouped, dim=axis + 1).flatten(axis, axis + 1)

    def forward(self, x, training=False):
        return self._group(x, torch.softmax)

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """log of this node's output, computed stably from its input."""
        return self._group(logits, torch.log_softmax)

    def _compute_cost(self) -> int:
        return 3 * self.shape.stripbatch_prod


def _class_structure(pred: Node) -> tuple[int, int]:
    """(n_class, n_indep) of a prediction: from a Softmax, else one group over 'f'."""
    if isinstance(pred, Softmax):
        return pred.n_class, pred.n_indep
    return pred.shape['f'], 1


class MultinoulliNLL(Node):
    """Negative log-likelihood of class probabilities (cross-entropy).

    Args:
        pred: class probabilities, normally a :class:`Softmax` (then log-probabilities
            are computed stably from its logits).
        target: sparse labels (b, n_indep, ...) with values in [0, n_class) and < 0 for
            unlabelled, or dense probabilities shaped like ``pred``.
        class_weights: weight per class (list/array, or a node).
        example_weights: node of shape (b, 1, ...) or (b, ...): weight per output position.
        mask_class_labeled: node (b, n_class): 0 where a class is present but not labelled
            in that example; such positions are ignored.
        mask_class_not_present: node (b, n_class): 1 where a class is known to be absent;
            its probability is pushed to 0 everywhere in that example.
        label_prop_thresh: label propagation (ELEKTRONN v1): unlabelled positions
            (sparse label < 0) whose predicted probability for a class exceeds this
            threshold are trained as that class.

    Output: shape of ``pred`` with 'f' = 1, normalised so its mean is the NLL per
    labelled entry.
    """

    def __init__(self, pred: Node, target: Node, target_is_sparse: bool = False,
                 class_weights=None, example_weights: Node | None = None,
                 mask_class_labeled: Node | None = None, mask_class_not_present: Node | None = None,
                 label_prop_thresh: float | None = None, name: str = 'nll', print_repr: bool = True):
        if label_prop_thresh is not None and not target_is_sparse:
            raise ConfigError(f"MultinoulliNLL {name!r}: label_prop_thresh needs sparse targets")
        self.target_is_sparse = target_is_sparse
        self.label_prop_thresh = label_prop_thresh
        self.n_class, self.n_indep = _class_structure(pred)
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
        f = pred.tag2index('f')
        want_f = self.n_indep if self.target_is_sparse else pred['f']
        if target.ndim != pred.ndim or target['f'] != want_f:
            kind = 'sparse' if self.target_is_sparse else 'dense'
            raise ShapeError(f"{kind} target has shape {target.shape}; expected {pred.ndim} axes "
                             f"with 'f'={want_f} for prediction {pred.shape}")
        if target.spatial_shape != pred.spatial_shape:
            raise ShapeError(f"target spatial shape {target.spatial_shape} differs from the "
                             f"prediction's {pred.spatial_shape}")
        return pred.updateshape(f, 1)

    def _make_params(self):
        """Constant class weights (all 1 unless given; a training config may set them)."""
        cw = self._class_weights_arg
        if isinstance(cw, Node):
            return {}
        cw = np.ones(self.n_class, np.float32) if cw is None else np.asarray(cw, np.float32).ravel()
        if cw.size != self.n_class:
            raise ShapeError(f"MultinoulliNLL {self.name!r}: {cw.size} class_weights given for "
                             f"{self.n_class} classes")
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
        labels = target.long()
        if (labels >= self.n_class).any():
            raise DataError(f"MultinoulliNLL {self.name!r}: target has label "
                            f"{int(labels.max())}, but there are only {self.n_class} classes "
                            f"(valid 0..{self.n_class - 1}, or <0 for unlabelled)")
        f = self._f_axis
        classes = torch.arange(self.n_class, device=labels.device)
        hot = labels.unsqueeze(f + 1) == _broadcast_along(classes, labels.ndim + 1, f + 1)
        return hot.flatten(f, f + 1).float()

    def forward(self, *inputs, training=False):
        get = dict(zip(self._slots, inputs))
        pred = get['pred'].float()
        log_p = (self.parents[0].log_probs(get['logits'].float()) if 'logits' in get
                 else torch.log(pred.clamp(min=EPS)))
        if self.target_is_sparse:
            labels = get['target'].long()
            if self.label_prop_thresh is not None:
                labels = self._propagated_labels(labels, pred)
            target = self._one_hot(labels)
        else:
            target = get['target'].float()
        f = self._f_axis
        cw = get['class_weights'] if 'class_weights' in get else self.params['class_weights']
        weights = _broadcast_along(cw.float().reshape(-1).repeat(self.n_indep), pred.ndim, f)
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


class BinaryNLL(Node):
    """Element-wise binary cross-entropy of probabilities ``pred`` against ``target`` in [0, 1].

    NaN targets are unlabelled. With ``subtract_label_entropy`` the target's own
    entropy is subtracted (the loss becomes a KL divergence, 0 at a perfect fit).
    """

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


class _RegressionLoss(Node):
    """Shared part of SquaredLoss and AbsLoss: masking, margin, normalisation."""

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


class Errors(Node):
    """Fraction of wrongly classified entries (scalar).

    For a Softmax prediction the class is the argmax within each group; for a
    sigmoid prediction (one probability per feature) it is ``pred > 0.5``.
    Sparse labels < 0 are not counted.
    """
    is_error = True

    def __init__(self, pred: Node, target: Node, target_is_sparse: bool = False,
                 n_class: int | str = 'auto', n_indep: int | str = 'auto',
                 name: str = 'errors', print_repr: bool = True):
        self.target_is_sparse = target_is_sparse
        self.binary = (not isinstance(pred, Softmax)
                       and pred.activation_func in ('sigmoid', 'sig', 'logistic'))
        if isinstance(pred, Softmax) or self.binary or n_class == 'auto':
            self.n_class, self.n_indep = _class_structure(pred)
        else:
            self.n_indep = 1 if n_indep == 'auto' else int(n_indep)
            self.n_class = int(n_class)
        super().__init__([pred, target], name, print_repr)

    def _infer_shape(self, pred: TaggedShape, target: TaggedShape) -> TaggedShape:
        groups = pred['f'] if self.binary else self.n_indep
        want_f = groups if self.target_is_sparse else pred['f']
        if target.ndim != pred.ndim or target['f'] != want_f:
            raise ShapeError(f"target shape {target.shape} does not fit prediction {pred.shape} "
                             f"(expected 'f'={want_f})")
        return SCALAR

    def _classes(self, x: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return (x > 0.5).long()
        f = self.parents[0].shape.tag2index('f')
        return x.unflatten(f, (self.n_indep, self.n_class)).argmax(dim=f + 1)

    def forward(self, pred, target, training=False):
        predicted = self._classes(pred)
        truth = target.long() if self.target_is_sparse else self._classes(target)
        counted = truth >= 0
        wrong = (predicted != truth) & counted
        return wrong.sum().float() / counted.sum().clamp(min=1).float()


class OneHot(Node):
    """Sparse labels (b, 1, ...) -> one-hot float (b, n_class, ...) along 'f'.

    Labels < 0 (unlabelled) become all-zero rows.
    """

    def __init__(self, target: Node, n_class: int, axis: str = 'f', name: str = 'onehot',
                 print_repr: bool = True):
        self.n_class, self.axis = int(n_class), axis
        super().__init__(target, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        if sh[self.axis] != 1:
            raise ShapeError(f"OneHot needs axis {self.axis!r} of size 1, got {sh}")
        return sh.updateshape(self.axis, self.n_class)

    def forward(self, target, training=False):
        axis = self.parent.shape.index(self.axis)
        classes = torch.arange(self.n_class, device=target.device)
        return (target.long() == _broadcast_along(classes, target.ndim, axis)).float()


class GaussianNLL(Node):
    """Element-wise Gaussian negative log-likelihood of ``target`` under N(mu, sig**2).

    ``0.5 * log(2 pi) + log(sig) + 0.5 * ((target - mu) / sig)**2``; with
    ``sig_is_log`` the node ``sig`` holds log(sig). If ``mu`` has a samples axis 's'
    (from GaussianRV), the target is broadcast along it.
    """

    def __init__(self, mu: Node, sig: Node, target: Node, sig_is_log: bool = False,
                 name: str = 'g_nll', print_repr: bool = True):
        self.sig_is_log = sig_is_log
        super().__init__([mu, sig, target], name, print_repr)

    def _infer_shape(self, mu: TaggedShape, sig: TaggedShape, target: TaggedShape) -> TaggedShape:
        if mu.shape != sig.shape:
            raise ShapeError(f"mu {mu} and sig {sig} must have equal shapes")
        stripped = mu.delaxis('s') if 's' in mu.tags else mu
        if stripped.stripnone != target.stripnone or stripped.ndim != target.ndim:
            raise ShapeError(f"target {target} does not match mu {mu}")
        return mu

    def forward(self, mu, sig, target, training=False):
        if 's' in self.parents[0].shape.tags:
            target = target.unsqueeze(self.parents[0].shape.tag2index('s'))
        log_sig = sig if self.sig_is_log else torch.log(sig.clamp(min=EPS))
        sig = torch.exp(sig) if self.sig_is_log else sig
        return 0.5 * np.log(2 * np.pi) + log_sig + 0.5 * ((target - mu) / sig) ** 2


class GaussianRV(Node):
    """Reparameterised Gaussian sample ``mu + exp(log_sig) * eps`` (variational auto-encoders).

    With ``n_samples > 0`` a samples axis 's' of that size is inserted after 'b'.
    In inference mode the mean ``mu`` is returned (broadcast along 's').
    """

    def __init__(self, mu: Node, log_sig: Node, n_samples: int = 0, name: str = 'gauss_rv',
                 print_repr: bool = True):
        self.n_samples = int(n_samples)
        super().__init__([mu, log_sig], name, print_repr)

    def _infer_shape(self, mu: TaggedShape, log_sig: TaggedShape) -> TaggedShape:
        if mu.shape != log_sig.shape:
            raise ShapeError(f"mu {mu} and log_sig {log_sig} must have equal shapes")
        return mu.addaxis(1, self.n_samples, 's') if self.n_samples else mu

    def forward(self, mu, log_sig, training=False):
        if self.n_samples:
            mu, log_sig = mu.unsqueeze(1), log_sig.unsqueeze(1)
            shape = list(mu.shape)
            shape[1] = self.n_samples
            mu, log_sig = mu.expand(shape), log_sig.expand(shape)
        if not training:
            return mu.clone() if self.n_samples else mu
        return mu + torch.exp(log_sig) * torch.randn_like(mu)
