"""Graph traversal: the ancestors of nodes in an order that evaluates parents first.

Nodes are anything with a ``parents`` list (duck-typed, so that this module imports
nothing of the package and every other module can import it at the top).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .node import Node


def topological_order(nodes: Sequence[Node], stop_at: Sequence[Node] = ()) -> list[Node]:
    """The given nodes and all their ancestors, parents before children.

    Nodes in ``stop_at`` are included but their ancestors are not followed.
    """
    order, done, stops = [], set(), set(stop_at)
    for root in nodes:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in done:
                continue
            if expanded:
                done.add(node)
                order.append(node)
            else:
                stack.append((node, True))
                if node not in stops:
                    stack.extend((p, False) for p in reversed(node.parents) if p not in done)
    return order


def release_schedule(order: Sequence[Node], keep: Sequence[Node]) -> list[list[Node]]:
    """For each node of ``order`` (a parents-first evaluation order), the nodes whose
    value is needed no more once it is computed: their last consumer in ``order`` is
    that node, and they are not in ``keep`` (the results). A forward without gradients
    that drops them holds only the values still to be consumed (about two layers of a
    chain, plus the skip connections of a U-Net)."""
    last_use: dict = {}
    for i, node in enumerate(order):
        for parent in node.parents:
            last_use[parent] = i
    kept = set(keep)
    schedule: list[list[Node]] = [[] for _ in order]
    for node, i in last_use.items():
        if node not in kept:
            schedule[i].append(node)
    return schedule
