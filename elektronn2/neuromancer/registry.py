"""The registry: node classes by name and the models of a session with the current one.

Every node class registers in :data:`NODE_CLASSES` (``Node.__init_subclass__``); every
node joins the current model of :data:`model_manager` when it is built.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ..errors import GraphError
from .container import Model

#: Node classes by name; filled by ``Node.__init_subclass__``. Model files may
#: only name these classes.
NODE_CLASSES: dict[str, type] = {}


class ModelManager:
    """Keeps the models of a session; new nodes go into :meth:`getmodel`.

    The current model belongs to the calling thread (a ``threading.local``; not a
    ``contextvars`` variable, which some Jupyter kernels lose between cells): a new thread
    starts without one. :meth:`building` makes a model current for a ``with`` block.
    :attr:`models` (name -> model) is shared by all threads.
    """

    def __init__(self) -> None:
        self.models: dict[str, Model] = {}
        self._thread = threading.local()    # .model: the thread's current model
        self._lock = threading.Lock()

    @property
    def current(self) -> Model | None:
        """The current model of the calling thread (None before the first)."""
        return getattr(self._thread, 'model', None)

    def create(self, name: str | None = None) -> Model:
        """A new model under a unique name (a taken name gets a suffix); not made current."""
        base = name or 'model'
        with self._lock:
            unique, i = base, 0
            while unique in self.models:
                i += 1
                unique = f"{base}{i}"
            model = Model(unique)
            self.models[unique] = model
        return model

    def newmodel(self, name: str | None = None) -> Model:
        """Create a model, make it current and return it (a taken name gets a suffix)."""
        model = self.create(name)
        self._thread.model = model
        return model

    def getmodel(self, name: str | None = None) -> Model:
        """The current model (created on first use), or the model called ``name``."""
        if name is not None:
            if name not in self.models:
                raise GraphError(f"No model {name!r}; models: {list(self.models)}")
            return self.models[name]
        current = self.current
        return self.newmodel() if current is None else current

    @contextlib.contextmanager
    def building(self, model: Model) -> Iterator[Model]:
        """Make ``model`` current for the ``with`` block; the previous current model
        comes back after it, also when the block raises."""
        self._adopt(model)
        previous, self._thread.model = self.current, model
        try:
            yield model
        finally:
            self._thread.model = previous

    def discard(self, model: Model) -> None:
        """Forget ``model`` (e.g. a failed build); if it is current, the current model
        becomes the last one left."""
        with self._lock:
            self.models.pop(model.name, None)
            last = next(reversed(self.models.values()), None)
        if self.current is model:
            self._thread.model = last

    def setmodel(self, model: Model) -> None:
        """Make ``model`` current (registering it if it is not)."""
        self._adopt(model)
        self._thread.model = model

    def _adopt(self, model: Model) -> None:
        with self._lock:
            self.models.setdefault(model.name, model)


model_manager = ModelManager()
