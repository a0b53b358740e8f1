"""Export a model's prediction for deployment without elektronn2.

:class:`PredictionModule` is a ``torch.nn.Module`` evaluating the nodes of a Model's
graph function for its prediction node (inference mode); :func:`export_model` writes it
as TorchScript (``torch.jit.trace``; load with ``torch.jit.load``), as a
``torch.export`` program (``.pt2``; load with ``torch.export.load(path).module()``) or
as ONNX (needs the optional packages onnx and onnxscript: ``pip install
'elektronn2[export]'``; run with onnxruntime). The exported function takes
``(b, c, *spatial)`` float32 in the network's axis order (uint8 data scaled to [0, 1])
and returns the prediction node's output.

Traced and exported graphs are specialised to the example's spatial size; ONNX and
torch.export keep the batch size dynamic where the graph allows.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, GraphError
from ..utils.optional import import_optional

logger = logging.getLogger('elektronn2')

FORMATS = ('torchscript', 'export', 'onnx')
#: the batch axis stays dynamic where the graph allows (MFP graphs fix it)
_DYNAMIC_BATCH = ({0: torch.export.Dim.AUTO},)


class PredictionModule(torch.nn.Module):
    """``forward(x) -> prediction``: the nodes of ``model.function([node])`` in order.

    The nodes' parameters are registered (names ``<node>__<param>``), so the module's
    ``state_dict`` and exports carry them.
    """

    def __init__(self, model, node=None):
        super().__init__()
        node = node or model.prediction_node
        if node is None:
            raise GraphError(f"Model {model.name!r} has no prediction_node to export")
        function = model.function([node], training=False)
        if len(function.inputs) != 1:
            raise GraphError(f"Export needs a prediction with one input; {node.name!r} "
                             f"depends on {[n.name for n in function.inputs]}")
        self.input_node, self.output_node = function.inputs[0], node
        self.order = function.order
        self.weights = torch.nn.ParameterDict({key.replace('.', '__'): p for key, p in
                                               node.all_params.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_node: x}
        for node in self.order:
            values[node] = node.forward(*(values[p] for p in node.parents), training=False)
        return values[self.output_node]

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A random input of the model's input shape."""
        return torch.as_tensor(self.input_node.random_value(batch_size))


def export_model(model, path: str | os.PathLike, fmt: str = 'export',
                 example: np.ndarray | torch.Tensor | None = None) -> Path:
    """Write ``model``'s prediction function to ``path``.

    Args:
        model: a neuromancer Model (e.g. from ``modelload``).
        fmt: 'export' (torch.export, .pt2), 'torchscript' (torch.jit.trace; deprecated by
            torch 2.9+, but loadable by older runtimes and C++ libtorch) or 'onnx'.
        example: input used for tracing (default: random, the input node's shape with batch
            2: a batch of 1 would be specialised to 1).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r}; valid: {FORMATS}")
    module = PredictionModule(model).eval()
    example = module.example_input(2) if example is None else torch.as_tensor(np.asarray(example))
    path = Path(path)
    with torch.no_grad():
        if fmt == 'torchscript':
            torch.jit.save(torch.jit.trace(module, example), str(path))
        elif fmt == 'export':
            program = torch.export.export(module, (example,), dynamic_shapes=_DYNAMIC_BATCH)
            torch.export.save(program, str(path))
        else:
            import_optional('onnx', 'onnx', extra='export', purpose='ONNX export')
            import_optional('onnxscript', 'onnxscript', extra='export', purpose='ONNX export')
            torch.onnx.export(module, (example,), str(path), input_names=['input'],
                              output_names=['prediction'], dynamo=True, verbose=False,
                              dynamic_shapes=_DYNAMIC_BATCH)
    logger.info("Exported %r as %s to %s", model.name, fmt, path)
    return path
