"""Class outputs: Softmax, the predicted class (Classification), the fraction of wrong
classes (Errors) and one-hot targets (OneHot), and how a prediction's features group
into classes."""
from __future__ import annotations

import functools

import torch

from ..errors import ConfigError, DataError, ShapeError
from .node import Node
from .shape import SCALAR, TaggedShape


def broadcast_along(vector: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """``vector`` reshaped to broadcast along ``axis`` of an ``ndim``-D tensor."""
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

    @property
    def class_count(self) -> int:
        return self.n_class

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
        # in float32 also under bf16/fp16 autocast (as CUDA's autocast does, CPU's does not):
        # probabilities then sum to 1 to float32 precision, not to 2**-8
        return self._group(x.float(), torch.softmax)

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """log of this node's output, computed stably from its input."""
        return self._group(logits, torch.log_softmax)

    def _compute_cost(self) -> int:
        return 3 * self.shape.stripbatch_prod


def class_structure(pred: Node) -> tuple[int, int]:
    """(n_class, n_indep) of a prediction: from a Softmax, else one group over 'f'."""
    if isinstance(pred, Softmax):
        return pred.n_class, pred.n_indep
    return pred.shape['f'], 1


def _classification_structure(pred: Node, n_class, n_indep) -> tuple[int, int, bool]:
    """(n_class, n_indep, binary) of a prediction: from a Softmax, a sigmoid output (one
    probability per feature: 2 classes, thresholded at 0.5) or the given numbers."""
    if isinstance(pred, Softmax):
        return pred.n_class, pred.n_indep, False
    if pred.activation_func in ('sigmoid', 'sig', 'logistic'):
        return 2, pred.shape['f'], True
    if n_class == 'auto':
        return pred.shape['f'], 1, False
    n_indep = 1 if n_indep == 'auto' else int(n_indep)
    return int(n_class), n_indep, n_indep == pred.shape['f']


def _classify(x: torch.Tensor, f: int, n_class: int, n_indep: int, binary: bool) -> torch.Tensor:
    """Class indices along axis ``f``: ``x > 0.5`` per feature, or the argmax per group."""
    if binary:
        return (x > 0.5).long()
    return x.unflatten(f, (n_indep, n_class)).argmax(dim=f + 1)


class Classification(Node):
    """The predicted class of each group: shape of ``pred`` with 'f' = n_indep (int64).

    For a :class:`Softmax` the argmax within each of its groups; for a sigmoid output
    (or ``n_indep`` equal to the number of features) ``pred > 0.5`` per feature; else
    ``n_class`` and ``n_indep`` say how the features group.
    """

    def __init__(self, pred: Node, n_class: int | str = 'auto', n_indep: int | str = 'auto',
                 name: str = 'cls', print_repr: bool = True):
        self.n_class, self.n_indep, self.binary = _classification_structure(pred, n_class, n_indep)
        super().__init__(pred, name, print_repr)

    def _infer_shape(self, sh: TaggedShape) -> TaggedShape:
        if not self.binary and self.n_class * self.n_indep != sh['f']:
            raise ShapeError(f"{self.n_indep} group(s) of {self.n_class} classes do not make "
                             f"{sh['f']} features")
        return sh.updateshape('f', self.n_indep)

    def forward(self, pred, training=False):
        f = self.parent.shape.tag2index('f')
        return _classify(pred, f, self.n_class, self.n_indep, self.binary)


class Errors(Node):
    """Fraction of wrongly classified entries (scalar).

    The class is taken as by :class:`Classification` (argmax within each Softmax group,
    ``pred > 0.5`` for a sigmoid prediction). Sparse labels < 0 and NaN targets (a group
    with any NaN for dense one-hot targets) are not counted.
    """
    is_error = True
    masks_nan_target = True

    def __init__(self, pred: Node, target: Node, target_is_sparse: bool = False,
                 n_class: int | str = 'auto', n_indep: int | str = 'auto',
                 name: str = 'errors', print_repr: bool = True):
        self.target_is_sparse = target_is_sparse
        if isinstance(pred, Classification):
            self.n_class, self.n_indep, self.binary = pred.n_class, pred.n_indep, pred.binary
            self._classified = True
        else:
            self.n_class, self.n_indep, self.binary = _classification_structure(pred, n_class,
                                                                                n_indep)
            self._classified = False
        super().__init__([pred, target], name, print_repr)

    def _infer_shape(self, pred: TaggedShape, target: TaggedShape) -> TaggedShape:
        if self._classified:
            dense_f = self.n_indep if self.binary else self.n_class * self.n_indep
            want_f = self.n_indep if self.target_is_sparse else dense_f
        else:
            groups = pred['f'] if self.binary else self.n_indep
            want_f = groups if self.target_is_sparse else pred['f']
        if target.ndim != pred.ndim or target['f'] != want_f:
            raise ShapeError(f"target shape {target.shape} does not fit prediction {pred.shape} "
                             f"(expected 'f'={want_f})")
        return SCALAR

    def forward(self, pred, target, training=False):
        f = self.parents[0].shape.tag2index('f')
        predicted = pred.long() if self._classified else _classify(
            pred, f, self.n_class, self.n_indep, self.binary)
        unlabelled = torch.isnan(target) if target.is_floating_point() else None
        if self.target_is_sparse:
            truth = target.long() if unlabelled is None else target.nan_to_num(-1).long()
        else:
            truth = _classify(target, f, self.n_class, self.n_indep, self.binary)
            if unlabelled is not None and not self.binary:
                unlabelled = unlabelled.unflatten(f, (self.n_indep, self.n_class)).any(dim=f + 1)
        if unlabelled is not None:
            truth = truth.masked_fill(unlabelled, -1)
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
        return (target.long() == broadcast_along(classes, target.ndim, axis)).float()


def check_class_target(pred: TaggedShape, target: TaggedShape, target_is_sparse: bool,
                       n_indep: int) -> None:
    """Refuse a target that does not fit class probabilities ``pred``: sparse labels have
    'f' = ``n_indep`` (one label per softmax group), dense targets the prediction's shape."""
    want_f = n_indep if target_is_sparse else pred['f']
    if target.ndim != pred.ndim or target['f'] != want_f:
        kind = 'sparse' if target_is_sparse else 'dense'
        raise ShapeError(f"{kind} target has shape {target.shape}; expected "
                         f"{len(pred.shape)} axes ({','.join(pred.tags)}) with "
                         f"'f'={want_f} for prediction {pred.shape}")
    if target.spatial_shape != pred.spatial_shape:
        raise ShapeError(f"target spatial shape {target.spatial_shape} differs from the "
                         f"prediction's {pred.spatial_shape}")


def one_hot_labels(target: torch.Tensor, n_class: int, f: int, node: Node) -> torch.Tensor:
    """Sparse labels (b, n_indep, ...) -> one-hot float (b, n_indep * n_class, ...) along
    axis ``f``; labels < 0 (unlabelled) give all-zero rows. ``node`` names the loss in the
    error for a label >= ``n_class``."""
    labels = target.long()
    if (labels >= n_class).any():
        raise DataError(f"{type(node).__name__} {node.name!r}: target has label "
                        f"{int(labels.max())}, but there are only {n_class} classes "
                        f"(valid 0..{n_class - 1}, or <0 for unlabelled)")
    classes = torch.arange(n_class, device=labels.device)
    hot = labels.unsqueeze(f + 1) == broadcast_along(classes, labels.ndim + 1, f + 1)
    return hot.flatten(f, f + 1).float()
