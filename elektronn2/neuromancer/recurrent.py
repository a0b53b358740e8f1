"""Recurrence: GRU and LSTM steps, and Scan, which iterates any sub-graph.

A recurrent model is built as one step: nodes computing the new state from the
state before (``in_memory``, e.g. an :class:`InitialState_like`) and one slice
of the input sequence (``in_iterate_0``, e.g. ``split(seq, 'r', index=1,
strip_singleton_dims=True)[0]``). :class:`Scan` then runs that step graph
``n_steps`` times, feeding ``out_memory`` back into ``in_memory`` and slice t of
``in_iterate`` into ``in_iterate_0``; the step nodes themselves compute the
first step.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError, GraphError, ShapeError
from .activations import parse_activation
from .graph_compile import GraphFunction
from .init import init_weights, orthogonal
from .node import Node
from .shape import TaggedShape
from .traversal import topological_order


class _RecurrentStep(Node):
    """Shared part of GRU and LSTM: gate weights w (f_in, g*n), u (n, g*n), bias b (g*n)."""
    n_gates = 1
    _memory: Node  # the memory-state parent; set by the subclass before _store_step_options

    def _refuse_extras(self, name: str, flatten, batch_normalisation, dropout_rate,
                       **initial_values) -> None:
        """ELEKTRONN2's GRU and LSTM took these arguments but supported none of them."""
        given = [k for k, v in initial_values.items() if v is not None]
        if flatten or batch_normalisation or dropout_rate or given:
            bad = given + [k for k, v in (('flatten', flatten), ('dropout_rate', dropout_rate),
                                          ('batch_normalisation', batch_normalisation)) if v]
            raise ConfigError(f"{type(self).__name__} {name!r}: {sorted(bad)} are not supported "
                              f"by recurrent steps (nor were they in ELEKTRONN2); flatten the "
                              f"input with Reshape, normalise or drop out before the step, and "
                              f"set weights with node.set_param_values")

    @property
    def w(self) -> torch.Tensor:
        """Input weights (f_in, gates * n_f)."""
        return self.params['w']

    @property
    def b(self) -> torch.Tensor:
        """Gate biases (gates * n_f,)."""
        return self.params['b']

    def _store_step_options(self, parent: Node, n_f: int, activation_func: str, name: str):
        for node, what in ((parent, 'input'), (self._memory, 'memory')):
            if node.shape.tags != ('b', 'f'):
                raise ShapeError(f"{type(self).__name__} {name!r}: the {what} {node.name!r} must "
                                 f"be tagged 'b,f', it is {node.shape}")
        self.n_f = int(n_f)
        self.activation_func = activation_func
        self.activation = parse_activation(activation_func, name)

    def _infer_shape(self, x: TaggedShape, memory: TaggedShape) -> TaggedShape:
        if memory['f'] != self._memory_size():
            raise ShapeError(f"memory {memory} needs 'f' = {self._memory_size()}")
        return TaggedShape((x.batch_size, self._memory_size()), 'b,f')

    def _memory_size(self) -> int:
        return self.n_f

    def _make_params(self):
        n_in, n, g = self.parents[0].shape['f'], self.n_f, self.n_gates
        w = init_weights((n_in, g * n), n_in, n, 'tanh', node_name=self.name)
        u = torch.cat([orthogonal((n, n), n, n) for _ in range(g)], dim=1)
        return {'w': self._new_param(w, regularise=True), 'u': self._new_param(u, regularise=True),
                'b': self._new_param(self._initial_bias())}

    def _initial_bias(self) -> torch.Tensor:
        return torch.zeros(self.n_gates * self.n_f)

    def _compute_cost(self) -> int:
        return (self.parents[0].shape['f'] + self.n_f) * self.n_gates * self.n_f

    def _repr_details(self) -> str:
        return f"{self.n_f} units, {self.activation_func}"


class GRU(_RecurrentStep):
    """One gated-recurrent-unit step: (x (b, f_in), h (b, n_f)) -> new h (b, n_f).

    ``reset_after``: the reset gate scales the memory's product with ``u`` (as cuDNN
    and torch do; default), or with False the memory before that product (as
    ELEKTRONN2 did; converted ELEKTRONN2 models use it).
    """
    n_gates = 3

    def __init__(self, parent: Node, memory_state: Node, n_f: int | None = None,
                 activation_func: str = 'tanh', flatten: bool = False, batch_normalisation=False,
                 dropout_rate: float = 0, name: str = 'gru', print_repr: bool = True, w=None,
                 b=None, gamma=None, mean=None, std=None, gradnet_mode=None,
                 reset_after: bool = True):
        self._refuse_extras(name, flatten, batch_normalisation, dropout_rate, w=w, b=b,
                            gamma=gamma, mean=mean, std=std)
        self.reset_after = bool(reset_after)
        self._memory = memory_state
        self._store_step_options(parent, n_f or memory_state.shape['f'], activation_func, name)
        super().__init__([parent, memory_state], name, print_repr)

    def forward(self, x, h, training=False):
        n = self.n_f
        gx = x @ self.params['w'] + self.params['b']
        gh = h @ self.params['u']
        reset = torch.sigmoid(gx[:, :n] + gh[:, :n])
        update = torch.sigmoid(gx[:, n:2 * n] + gh[:, n:2 * n])
        if self.reset_after:
            candidate = self.activation(gx[:, 2 * n:] + reset * gh[:, 2 * n:])
        else:
            candidate = self.activation(gx[:, 2 * n:] + (reset * h) @ self.params['u'][:, 2 * n:])
        return (1 - update) * candidate + update * h


class LSTM(_RecurrentStep):
    """One long-short-term-memory step.

    ``memory_states`` (b, 2 n_f) holds [h, c]; the output (b, 2 n_f) is the new [h, c]
    (use ``split(node, 'f', n_out=2)`` to get h). The forget gate's bias starts at 1.
    """
    n_gates = 4

    def __init__(self, parent: Node, memory_states: Node, n_f: int | None = None,
                 activation_func: str = 'tanh', flatten: bool = False, batch_normalisation=False,
                 dropout_rate: float = 0, name: str = 'lstm', print_repr: bool = True, w=None,
                 b=None, gamma=None, mean=None, std=None, gradnet_mode=None):
        self._refuse_extras(name, flatten, batch_normalisation, dropout_rate, w=w, b=b,
                            gamma=gamma, mean=mean, std=std)
        self._memory = memory_states
        if n_f is None and memory_states.shape['f'] % 2:
            raise ShapeError(f"LSTM {name!r}: memory_states needs 2*n_f features, got "
                             f"{memory_states.shape['f']}")
        self._store_step_options(parent, n_f or memory_states.shape['f'] // 2, activation_func, name)
        super().__init__([parent, memory_states], name, print_repr)

    def _memory_size(self) -> int:
        return 2 * self.n_f

    def _initial_bias(self) -> torch.Tensor:
        bias = torch.zeros(4 * self.n_f)
        bias[self.n_f:2 * self.n_f] = 1.0
        return bias

    def forward(self, x, states, training=False):
        n = self.n_f
        h, c = states[:, :n], states[:, n:]
        gates = x @ self.params['w'] + h @ self.params['u'] + self.params['b']
        inp, forget, out = (torch.sigmoid(gates[:, k * n:(k + 1) * n]) for k in (0, 1, 3))
        c = forget * c + inp * self.activation(gates[:, 2 * n:3 * n])
        return torch.cat([out * self.activation(c), c], dim=1)


def _as_list(nodes) -> list[Node]:
    if nodes is None:
        return []
    return [nodes] if isinstance(nodes, Node) else list(nodes)


class Scan(Node):
    """Iterate a step sub-graph; outputs ``step_result`` of every step along a new 'r' axis.

    Args:
        step_result: node computed in each step (its values are the Scan's output). A
            list of several nodes gives a tuple of Scan nodes, one per result, of the
            same recurrence (as ELEKTRONN2's Scan returned one node per result).
        in_memory: node(s) holding the state before a step; their own value is the
            initial state.
        out_memory: node(s) whose value becomes ``in_memory`` for the next step
            (default: ``step_result``, for several results all of them in order).
        in_iterate: node(s) with an 'r' axis iterated over (e.g. (b, r, ...)).
        in_iterate_0: the node(s) standing for one slice of each ``in_iterate`` in the
            step graph.
        n_steps: number of steps (default: the 'r' size of ``in_iterate``).
        unroll_scan: accepted for ELEKTRONN2 scripts; the loop always runs step by step.
        last_only: output only the last step's result (no 'r' axis).
    """

    def __new__(cls, step_result, in_memory, out_memory=None, in_iterate=None,
                in_iterate_0=None, n_steps: int | None = None, unroll_scan: bool = True,
                last_only: bool = False, name: str = 'scan', print_repr: bool = True):
        results = _as_list(step_result)
        if len(results) > 1:
            feed_back = out_memory if out_memory is not None else results
            return tuple(cls(r, in_memory, feed_back, in_iterate, in_iterate_0, n_steps,
                             unroll_scan, last_only, name, print_repr) for r in results)
        return super().__new__(cls, step_result, in_memory, out_memory, in_iterate, in_iterate_0,
                               n_steps, unroll_scan, last_only, name, print_repr)

    def __init__(self, step_result: Node, in_memory, out_memory=None, in_iterate=None,
                 in_iterate_0=None, n_steps: int | None = None, unroll_scan: bool = True,
                 last_only: bool = False, name: str = 'scan', print_repr: bool = True):
        self.step_result = step_result = _as_list(step_result)[0]
        self.in_memory = _as_list(in_memory)
        self.out_memory = _as_list(out_memory) or [step_result] * len(self.in_memory)
        if len(self.out_memory) != len(self.in_memory):
            raise GraphError(f"Scan {name!r}: {len(self.in_memory)} in_memory but "
                             f"{len(self.out_memory)} out_memory nodes")
        for a, b in zip(self.in_memory, self.out_memory):
            if a.shape.stripnone != b.shape.stripnone:
                raise ShapeError(f"Scan {name!r}: out_memory {b.name!r} {b.shape} cannot feed "
                                 f"in_memory {a.name!r} {a.shape}")
        self.in_iterate, self.in_iterate_0 = _as_list(in_iterate), _as_list(in_iterate_0)
        if len(self.in_iterate) != len(self.in_iterate_0):
            raise GraphError(f"Scan {name!r}: give in_iterate and in_iterate_0 together, one "
                             f"slice node per iterated node")
        for it in self.in_iterate:
            r = it.shape['r']
            n_steps = r if n_steps is None else n_steps
            if r is not None and n_steps > r:
                raise ShapeError(f"Scan {name!r}: n_steps={n_steps} exceeds the 'r' size {r} "
                                 f"of {it.name!r}")
        if not n_steps or n_steps < 1:
            raise GraphError(f"Scan {name!r}: give n_steps >= 1 (or in_iterate)")
        self.n_steps, self.last_only, self.unroll_scan = int(n_steps), last_only, unroll_scan
        self._fed = self.in_memory + self.in_iterate_0
        self._step_nodes = self._find_step_nodes()
        step_set = set(self._step_nodes)
        static = {p for n in self._step_nodes for p in n.parents if p not in step_set}
        boundary = [n for n in topological_order([*static, *self.in_memory]) if n in static
                    or n in self.in_memory]
        boundary += [it for it in self.in_iterate if it not in boundary]
        super().__init__([n for n in boundary if n not in self.in_iterate_0], name, print_repr)

    def _find_step_nodes(self) -> list[Node]:
        """Nodes recomputed in each step: those depending on the fed nodes."""
        order = topological_order([self.step_result, *self.out_memory], stop_at=self._fed)
        dependent: set = set(self._fed)
        steps = []
        for node in order:
            if node not in self._fed and any(p in dependent for p in node.parents):
                dependent.add(node)
                steps.append(node)
        if self.step_result not in dependent:
            raise GraphError(f"Scan: step_result {self.step_result.name!r} does not depend on "
                             f"in_memory or in_iterate_0")
        return steps

    @property
    def inner_nodes(self) -> tuple[Node, ...]:
        """The step nodes, recomputed in every step (their parameters are trained)."""
        return tuple(self._step_nodes)

    def _infer_shape(self, *shapes) -> TaggedShape:
        sh = self.step_result.shape
        if self.last_only:
            return sh
        index = 1 if sh.hasbatch else 0
        return sh.addaxis(index, self.n_steps, 'r')

    def _compute_cost(self) -> int:
        return self.n_steps * sum(n.computational_cost for n in self._step_nodes)

    def forward(self, *inputs, training=False):
        start = dict(zip(self.parents, inputs))
        memory = [start[m] for m in self.in_memory]
        r_axes = [it.shape.tag2index('r') for it in self.in_iterate]
        results = []
        for t in range(self.n_steps):
            values = dict(start)
            values.update(zip(self.in_memory, memory))
            for it, it0, r_axis in zip(self.in_iterate, self.in_iterate_0, r_axes):
                values[it0] = start[it].select(r_axis, t)
            for node in self._step_nodes:
                values[node] = node.forward(*(values[p] for p in node.parents), training=training)
            results.append(values[self.step_result])
            memory = [values[m] for m in self.out_memory]
        if self.last_only:
            return results[-1]
        return torch.stack(results, dim=1 if self.step_result.shape.hasbatch else 0)

    def step_function(self) -> GraphFunction:
        """One step as a function: (slices of in_iterate, *in_memory values, other Inputs)
        -> (step_result, *out_memory), for feeding predictions back one step at a time."""
        outputs = [self.step_result, *self.out_memory]
        fed = self.in_iterate_0 + self.in_memory
        others = [n for n in self.model.ordered_inputs(outputs) if n not in fed
                  and n in topological_order(outputs, stop_at=fed)]
        return GraphFunction(outputs, fed + others, training=False)

    def _repr_details(self) -> str:
        return f"{self.n_steps} steps over {[n.name for n in self._step_nodes]}"



def scansplit(scan: Scan | list[Scan] | tuple[Scan, ...], name: str = 'scan_split') -> list[Scan]:
    """The output nodes of a Scan as a list (ELEKTRONN2 split its multi-output scan node
    here; :class:`Scan` of several step results already gives one node per result)."""
    return list(scan) if isinstance(scan, (list, tuple)) else [scan]
