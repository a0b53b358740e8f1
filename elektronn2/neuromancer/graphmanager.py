"""ELEKTRONN2's ``neuromancer.graphmanager``: how a node was built, by reference.

:class:`GraphManager` is :class:`~.container.Model` (the container of a graph). The
descriptor classes record a construction with nodes and parameters replaced by
pointers (names), and rebuild it in another model; a model file stores the same
information as JSON (:mod:`.modelfile`, :attr:`.Node.descriptor`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import GraphError
from .container import Model as GraphManager
from .node import Node
from .registry import model_manager


@dataclass(frozen=True)
class NodePointer:
    """A node by name (``target_id``)."""
    target_id: str

    def resolve(self, gm: GraphManager) -> Node:
        return gm[self.target_id]


@dataclass(frozen=True)
class ParamPointer:
    """Parameter ``param_name`` of the node ``target_id``."""
    target_id: str
    param_name: str

    def resolve(self, gm: GraphManager) -> torch.Tensor:
        node = gm[self.target_id]
        if self.param_name not in node.params:
            raise GraphError(f"Node {self.target_id!r} has no parameter {self.param_name!r}; "
                             f"it has {sorted(node.params)}")
        return node.params[self.param_name]


class SplitDescriptor:
    """A call ``func(node, *args, **kwargs)`` of a function making several nodes from the
    node ``node_id`` (e.g. :func:`.basic.split`)."""

    def __init__(self, node_id: str, func: Callable, args: tuple, kwargs: dict):
        self.node_id, self.func, self.args, self.kwargs = node_id, func, tuple(args), dict(kwargs)

    def restore(self, gm: GraphManager):
        with model_manager.building(gm):
            return self.func(gm[self.node_id], *self.args, **self.kwargs)


def _to_pointer(value, gm: GraphManager | None):
    if isinstance(value, Node):
        return NodePointer(value.name)
    if isinstance(value, torch.Tensor) and gm is not None:
        for name, node in gm.nodes.items():
            for key, param in node.params.items():
                if param is value:
                    return ParamPointer(name, key)
        return value
    if isinstance(value, (list, tuple)) and any(isinstance(v, Node) for v in value):
        return type(value)(_to_pointer(v, gm) for v in value)
    return value


def _from_pointer(value, gm: GraphManager):
    if isinstance(value, (NodePointer, ParamPointer)):
        return value.resolve(gm)
    if isinstance(value, (list, tuple)) and any(isinstance(v, NodePointer) for v in value):
        return type(value)(_from_pointer(v, gm) for v in value)
    return value


class NodeDescriptor:
    """How a node was built: class ``cls`` and its arguments, with nodes (and parameters of
    the nodes of ``gm``) replaced by :class:`NodePointer` (:class:`ParamPointer`)."""

    def __init__(self, args: tuple, kwargs: dict, cls: type, gm: GraphManager | None):
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise GraphError(f"NodeDescriptor: {cls!r} is not a node class")
        self.cls = cls
        self.args = [_to_pointer(a, gm) for a in args]
        self.kwargs = {k: _to_pointer(v, gm) for k, v in kwargs.items()}

    @classmethod
    def of(cls, node: Node) -> NodeDescriptor:
        """The descriptor of an existing node."""
        return cls((), node.descriptor['args'], type(node), node.model)

    def restore(self, param_values: dict | None, gm: GraphManager,
                override_mfp_to_active: bool = False, make_weights_constant: bool = False,
                unlock_weights: bool = False, replace_bn=False) -> Node:
        """Build the node in ``gm`` (pointers resolved there) and set ``param_values``.

        ``override_mfp_to_active`` switches max-fragment pooling on (Conv, Pool);
        ``make_weights_constant`` freezes the node's parameters. ``replace_bn`` is done
        by :func:`.loading.modelload` (``replace_bn=``) on whole models.
        """
        if replace_bn:
            raise GraphError("NodeDescriptor.restore(replace_bn=...): use "
                             "modelload(..., replace_bn=...) or rebuild_model, which edit "
                             "batch normalisation of a whole model")
        args = [_from_pointer(a, gm) for a in self.args]
        kwargs = {k: _from_pointer(v, gm) for k, v in self.kwargs.items()}
        if override_mfp_to_active and self.cls.__name__ in ('Conv', 'Pool'):
            kwargs['mfp'] = True
        with model_manager.building(gm):
            node = self.cls(*args, **kwargs)
        if param_values:
            node.set_param_values(param_values, skip_const=not unlock_weights)
        if make_weights_constant:
            for param in node.params.values():
                param.requires_grad_(False)
        return node

    def __repr__(self) -> str:
        return f"<NodeDescriptor {self.cls.__name__} {self.args} {self.kwargs}>"
