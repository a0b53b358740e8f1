"""The model API in one place (``elektronn2.neuromancer.model``, as in ELEKTRONN2).

It re-exports the names of four modules, one concept each:

* :mod:`.container`: :class:`~.container.Model`, the graph with its designated nodes,
  statistics and saving;
* :mod:`.training_step`: the optimiser step (fp16 loss scaling, data-parallel wrapper);
* :mod:`.registry`: :data:`~.registry.model_manager` (the current model),
  :class:`~.registry.ModelManager` and :data:`~.registry.NODE_CLASSES`;
* :mod:`.loading`: :func:`~.loading.modelload`, :func:`~.loading.rebuild_model` and the
  limits on what a model file may build; ELEKTRONN2's :func:`~.loading.rebuild_rnn`,
  :func:`~.loading.rebuild_decoder` and :func:`~.loading.params_from_model_file`;
* :mod:`.surgery`: ELEKTRONN2's graph edits :func:`~.surgery.inject_source`,
  :func:`~.surgery.inject_source_split`, :func:`~.surgery.kernel_lists_from_node_descr`
  (on the ``graph`` of :meth:`.Model.serialise`);
* :mod:`.builders`: :func:`~.builders.simple_cnn`.
"""
from __future__ import annotations

# re-exports (``name as name``); no ``__all__``, so that the API reference documents each
# name once, in the module that defines it
from .builders import simple_cnn as simple_cnn
from .container import DESIGNATIONS as DESIGNATIONS
from .container import Model as Model
from .loading import MAX_AXIS_SIZE as MAX_AXIS_SIZE
from .loading import MAX_NODE_VALUES as MAX_NODE_VALUES
from .loading import modelload as modelload
from .loading import params_from_model_file as params_from_model_file
from .loading import rebuild_decoder as rebuild_decoder
from .loading import rebuild_model as rebuild_model
from .loading import rebuild_rnn as rebuild_rnn
from .registry import NODE_CLASSES as NODE_CLASSES
from .registry import ModelManager as ModelManager
from .registry import model_manager as model_manager
from .surgery import inject_source as inject_source
from .surgery import inject_source_split as inject_source_split
from .surgery import kernel_lists_from_node_descr as kernel_lists_from_node_descr
