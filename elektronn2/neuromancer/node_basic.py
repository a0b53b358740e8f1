"""ELEKTRONN2's ``neuromancer.node_basic``: the names of the node base and the basic nodes,
mapped to their homes here (:mod:`.node`, :mod:`.basic`, :mod:`.registry`;
``ModelContainer`` is :class:`.registry.ModelManager`).

``MetaNode``, ELEKTRONN2's metaclass that registered nodes by wrapping every constructor,
does not exist: a :class:`~.node.Node` subclass registers itself (``__init_subclass__``)
and joins the current model when built; using ``MetaNode`` raises a GraphError saying so.
"""
from __future__ import annotations

# re-exports (``name as name``); no ``__all__``, so that the API reference documents each
# name once, in the module that defines it
from ..errors import GraphError
from .basic import Add as Add
from .basic import ApplyFunc as ApplyFunc
from .basic import Concat as Concat
from .basic import FromTensor as FromTensor
from .basic import MultMerge as MultMerge
from .basic import choose_name as choose_name
from .basic import split as split
from .inputs import GenericInput as GenericInput
from .inputs import InitialState_like as InitialState_like
from .inputs import Input as Input
from .inputs import Input_like as Input_like
from .inputs import ValueNode as ValueNode
from .node import Node as Node
from .registry import ModelManager as ModelContainer  # noqa: F401  (ELEKTRONN2's name)
from .registry import model_manager as model_manager


class MetaNode(type):
    """Unavailable: subclass :class:`~.node.Node` directly (it registers itself)."""

    def __new__(mcs, name, bases, namespace, **kwargs):
        raise GraphError(f"MetaNode (ELEKTRONN2's metaclass wrapping node constructors) does "
                         f"not exist here: make {name!r} a plain subclass of "
                         f"elektronn2.neuromancer.Node; it is registered by "
                         f"Node.__init_subclass__ and joins the current model when built")
