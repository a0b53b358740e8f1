"""Ready-made networks: :func:`simple_cnn` (ELEKTRONN2's plain classification CNN)."""
from __future__ import annotations

from typing import Sequence

from ..errors import ShapeError
from .classification import Errors, Softmax
from .container import Model
from .inputs import Input, Input_like
from .loss import AggregateLoss, MultinoulliNLL
from .mfp import FragmentsToDense
from .neural import Conv
from .node import Node
from .registry import model_manager
from .shape import AxisGeometry, as_tuple, nearest_valid_sizes

_SPATIAL_TAGS = {1: 'x', 2: 'x,y', 3: 'z,x,y'}


def _valid_size(size: int, filters: list, pools: list, mfp: bool, k: int) -> bool:
    """Whether ``size`` passes all layers on spatial axis k (pooling divides exactly)."""
    geom = AxisGeometry(size)
    try:
        for f, p in zip(filters, pools):
            geom = geom.conv_pool(f[k], p[k], mfp=mfp)
    except ShapeError:
        return False
    return True


def simple_cnn(batch_size: int | None, n_ch: int, n_lab: int, desired_input: Sequence[int],
               filters, nof_filters: Sequence[int], activation_func, pools, mfp: bool = False,
               tags: str | None = None, name: str | None = None) -> Model:
    """A new (current) model: Conv layers ``nof_filters`` x ``filters`` with max pooling
    ``pools``, a linear 1x1 Conv to ``n_lab`` classes, Softmax, sparse-label NLL.

    The input (batch_size, n_ch, *size) takes the valid size nearest to ``desired_input``
    per axis (the smaller one on a tie). ``activation_func``: one name or one per
    layer. With ``mfp`` every pooling is max-fragment pooling and a FragmentsToDense
    node makes the output dense. Nodes: 'input', 'conv'..., 'class_probabilities',
    'labels' (int16), 'nll' (the loss), 'errors'.
    """
    ndim = len(desired_input)
    n_layers = len(nof_filters)
    filters = [as_tuple(f, ndim, 'filters') for f in filters]
    pools = [as_tuple(p, ndim, 'pools') for p in pools]
    acts = [activation_func] * n_layers if isinstance(activation_func, str) else list(activation_func)
    if not len(filters) == len(pools) == len(acts) == n_layers:
        raise ShapeError(f"simple_cnn: {n_layers} layers (nof_filters) need as many filters, "
                         f"pools and activations; got {len(filters)}, {len(pools)}, {len(acts)}")
    size = []
    for k, want in enumerate(desired_input):
        def valid(n, k=k):
            return _valid_size(n, filters, pools, mfp, k)
        candidates = ([want] if valid(want) else []) + nearest_valid_sizes(valid, want)
        if not candidates:
            raise ShapeError(f"simple_cnn: no valid input size near {want} on axis {k}")
        size.append(min(candidates, key=lambda n: (abs(n - want), n)))
    model = model_manager.newmodel(name)
    inp = Input((batch_size, n_ch, *size), tags or f"b,f,{_SPATIAL_TAGS[ndim]}", name='input')
    out: Node = inp
    for n, f, p, act in zip(nof_filters, filters, pools, acts):
        out = Conv(out, n, f, p, mfp=mfp, activation_func=act)
    out = Conv(out, n_lab, (1,) * ndim, (1,) * ndim, activation_func='lin')
    if mfp:
        out = FragmentsToDense(out)
    probs = Softmax(out, n_class=n_lab, name='class_probabilities')
    labels = Input_like(probs, dtype='int16', override_f=1, name='labels')
    loss = AggregateLoss(MultinoulliNLL(probs, labels, target_is_sparse=True), name='nll')
    errors = Errors(probs, labels, target_is_sparse=True)
    model.designate_nodes(input_node=inp, target_node=labels, loss_node=loss,
                          prediction_node=probs, error_node=errors,
                          prediction_ext=[loss, errors, probs])
    return model
