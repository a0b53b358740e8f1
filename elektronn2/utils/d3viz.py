"""ELEKTRONN2's ``elektronn2.utils.d3viz``: ``visualise_model`` drawing a model graph.

Drawn by :func:`elektronn2.utils.graph_visualisation.visualise_model`: ``<outfile>.png``
(or the ``image_format``) and the interactive, self-contained ``<outfile>.html``.
"""
from __future__ import annotations

import os

from ..errors import ConfigError
from .graph_visualisation import visualise_model as _visualise_model

__all__ = ['visualise_model']


def visualise_model(model, outfile: str | os.PathLike, copy_deps: bool = True,
                    select_outputs=None, image_format: str = 'png', *args, **kwargs) -> None:
    """Write ``<outfile>.<image_format>`` ('png' or 'svg') and ``<outfile>.html``.

    ``copy_deps`` is accepted and ignored: the HTML page carries its script and style.
    ``select_outputs`` (drawing part of a graph) was never implemented by ELEKTRONN2.
    """
    if select_outputs:
        raise ConfigError("visualise_model: select_outputs is not supported (neither was it by "
                          "ELEKTRONN2); draw the whole model")
    if args or kwargs:
        raise ConfigError(f"visualise_model: unexpected extra arguments {args or ''}"
                          f"{sorted(kwargs) or ''}")
    _visualise_model(model, os.path.expanduser(os.fspath(outfile)), formats=(image_format, 'html'))
