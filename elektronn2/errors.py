"""Error types of elektronn2.

Every error is a subclass of :class:`Error`; its message names the culprit
(node, axis, file, key, config entry) and, where possible, what would be valid.
"""
from __future__ import annotations


class Error(Exception):
    """Base class of all elektronn2 errors."""


class ShapeError(Error, ValueError):
    """A shape, axis tag or size that does not fit (e.g. a non-dividing pooling).

    ``axis`` is the tag of the spatial axis at fault, when there is one; nodes use
    it to suggest the nearest valid input sizes of the whole network, attached as
    ``suggestion`` (a :class:`elektronn2.neuromancer.node.SizeSuggestion`).
    """

    def __init__(self, message: str, axis: str | None = None, suggestion=None):
        super().__init__(message)
        self.axis = axis
        self.suggestion = suggestion


class GraphError(Error, ValueError):
    """A graph that cannot be built or run: unknown parent, wrong model, missing input."""


class NodeError(GraphError):
    """A node's computation failed at run time; the message names the node, its class
    and its inputs, and the torch error is chained as ``__cause__``."""


class ConfigError(Error, ValueError):
    """An invalid option: unknown activation, optimiser, config key or value."""


class DataError(Error, ValueError):
    """Missing, corrupt or inconsistent data files."""


class ModelFileError(Error, ValueError):
    """A model file that is missing, corrupt, truncated, foreign or unsafe."""


class TrainingError(Error, RuntimeError):
    """A training run that cannot go on, e.g. a loss that stays non-finite."""
