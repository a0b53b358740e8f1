"""Drawings of a model graph: PNG and SVG by Graphviz, and an interactive HTML page.

``visualise_model(model, 'net')`` writes ``net.png``, ``net.svg`` and ``net.html``. Each
node is drawn with its name, class, output shape and field of view; shapes and colours
tell its kind (input, layer, pooling, merge, output, loss). The HTML page is
self-contained (the SVG, script and style are inline): it zooms with the mouse wheel,
pans by dragging, and shows a node's descriptor, shape, parameters and cost on a click.

Needs the optional ``graphviz`` package (``pip install 'elektronn2[viz]'``) and the ``dot``
program (Debian/Ubuntu: ``apt-get install graphviz``).
"""
from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from string import Template
from typing import Iterable

import numpy as np
import torch

from ..errors import ConfigError
from ..neuromancer import classification, loss
from ..neuromancer.basic import Add, Concat, MultMerge
from ..neuromancer.classification import Softmax
from ..neuromancer.layer import NeuralLayer
from ..neuromancer.neural import Pool
from ..neuromancer.node import Node
from ..neuromancer.summary import pretty_ops
from .optional import import_optional, require_program

logger = logging.getLogger('elektronn2')

FORMATS = ('png', 'svg', 'html')

#: Graphviz node attributes per kind of node.
KIND_STYLES = {
    'input': {'shape': 'ellipse', 'fillcolor': '#b7e4c7'},
    'layer': {'shape': 'box', 'fillcolor': '#a9d6f5'},
    'pool': {'shape': 'box', 'fillcolor': '#d7c9f0'},
    'merge': {'shape': 'hexagon', 'fillcolor': '#fde29b'},
    'output': {'shape': 'doubleoctagon', 'fillcolor': '#f9c784'},
    'loss': {'shape': 'octagon', 'fillcolor': '#f4a6a6'},
    'other': {'shape': 'box', 'fillcolor': '#e2e2e2'},
}

_DESIGNATIONS = ('input_node', 'target_node', 'loss_node', 'prediction_node', 'error_node')


def node_kind(node: Node) -> str:
    """The kind of a node for drawing: one of the keys of :data:`KIND_STYLES`."""
    if node.is_input:
        return 'input'
    if node is node.model.prediction_node or isinstance(node, Softmax):
        return 'output'
    if type(node).__module__ in (loss.__name__, classification.__name__):
        return 'loss'
    if isinstance(node, NeuralLayer):
        return 'layer'
    if isinstance(node, Pool):
        return 'pool'
    if isinstance(node, (Concat, Add, MultMerge)) or type(node).__name__.endswith('Merge'):
        return 'merge'
    return 'other'


def _designations(node: Node) -> list[str]:
    model = node.model
    found = [d.removesuffix('_node') for d in _DESIGNATIONS if getattr(model, d) is node]
    return found + [d for d in ('prediction_ext', 'debug_outputs')
                    if any(n is node for n in getattr(model, d))]


def _shape_text(node: Node) -> str:
    sh = node.shape
    sizes = ', '.join('-' if s is None else str(s) for s in sh.shape)
    return f"({sizes}) {','.join(sh.tags)}"


def _label(node: Node) -> str:
    """A Graphviz HTML-like label: name, class, shape, fov and strides, designations."""
    sh = node.shape
    lines = [f"<B>{html.escape(node.name)}</B>",
             f'<FONT POINT-SIZE="10">{html.escape(type(node).__name__)}</FONT>',
             html.escape(_shape_text(node))]
    if sh.spatial_axes:
        lines.append(f"fov {'x'.join(map(str, sh.fov))}, strides {'x'.join(map(str, sh.strides))}")
    designations = _designations(node)
    if designations:
        lines.append(f"<I>{html.escape(', '.join(designations))}</I>")
    return '<' + '<BR/>'.join(lines) + '>'


def model_to_dot(model):
    """The model as a ``graphviz.Digraph``; node i gets the SVG id ``node<i>``."""
    graphviz = import_optional('graphviz', 'graphviz', 'viz', 'Drawing a model graph')
    dot = graphviz.Digraph(name=model.name or 'model')
    dot.attr(rankdir='TB', nodesep='0.3', ranksep='0.4', fontname='Helvetica',
             label=f"model {model.name}", labelloc='t')
    dot.attr('node', style='filled,rounded', fontname='Helvetica', fontsize='11', penwidth='1.2')
    dot.attr('edge', color='#555555', arrowsize='0.7')
    ids = {node: f"node{i}" for i, node in enumerate(model.nodes.values())}
    for node, node_id in ids.items():
        dot.node(node_id, _label(node), id=node_id, tooltip=node.name,
                 **KIND_STYLES[node_kind(node)])
    for node, node_id in ids.items():
        for parent in node.parents:
            dot.edge(ids[parent], node_id)
    return dot


def _jsonable(value):
    """Descriptor arguments for display: nodes by name, arrays by shape and dtype."""
    if isinstance(value, Node):
        return value.name
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"array(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def node_details(node: Node) -> dict:
    """What the HTML page shows for a node (JSON-serialisable)."""
    sh = node.shape
    return {
        'name': node.name,
        'class': type(node).__name__,
        'kind': node_kind(node),
        'shape': _shape_text(node),
        'shape_repr': repr(sh),
        'fov': list(sh.fov),
        'strides': list(sh.strides),
        'designations': _designations(node),
        'params': [{'name': key, 'shape': list(p.shape), 'count': p.numel(),
                    'trainable': bool(p.requires_grad)} for key, p in node.params.items()],
        'param_count': sum(p.numel() for p in node.params.values()),
        'cost': node.computational_cost,
        'cost_text': pretty_ops(node.computational_cost).strip() + 'MAC',
        'parents': [p.name for p in node.parents],
        'children': [c.name for c in node.children],
        'descriptor': _jsonable(node.descriptor),
    }


def model_html(model, svg: str) -> str:
    """A self-contained interactive page around the Graphviz ``svg`` of ``model``."""
    svg = svg[svg.index('<svg'):]
    data = {f"node{i}": node_details(node) for i, node in enumerate(model.nodes.values())}
    legend = ''.join(f'<span class="kind" style="background:{style["fillcolor"]}">{kind}</span>'
                     for kind, style in KIND_STYLES.items())
    return _PAGE.substitute(
        title=html.escape(f"elektronn2 model {model.name}"), svg=svg, legend=legend,
        data=json.dumps(data).replace('<', '\\u003c'), style=_STYLE, script=_SCRIPT)


def visualise_model(model, path: str | os.PathLike,
                    formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    """Draw ``model`` to ``<path>.png``, ``.svg`` and ``.html`` (or the chosen ``formats``).

    A suffix of ``path`` that names a format is dropped. Returns format -> written file.
    """
    formats = tuple(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ConfigError(f"visualise_model: unknown formats {unknown}; choose from {FORMATS}")
    require_program('dot', 'graphviz', 'Drawing a model graph')
    base = Path(path)
    if base.suffix.lstrip('.') in FORMATS:
        base = base.with_suffix('')
    base.parent.mkdir(parents=True, exist_ok=True)
    dot = model_to_dot(model)
    written = {}
    if 'png' in formats:
        written['png'] = base.with_suffix('.png')
        written['png'].write_bytes(dot.pipe(format='png'))
    if 'svg' in formats or 'html' in formats:
        svg = dot.pipe(format='svg', encoding='utf-8')
        if 'svg' in formats:
            written['svg'] = base.with_suffix('.svg')
            written['svg'].write_text(svg, encoding='utf-8')
        if 'html' in formats:
            written['html'] = base.with_suffix('.html')
            written['html'].write_text(model_html(model, svg), encoding='utf-8')
    logger.info("Drew model %r to %s", model.name, ', '.join(map(str, written.values())))
    return written


_PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<style>$style</style></head>
<body>
<header><h1>$title</h1><div id="legend">$legend</div>
<div id="controls"><button id="zoom-in" title="zoom in (+)">+</button>
<button id="zoom-out" title="zoom out (-)">&minus;</button>
<button id="zoom-fit" title="fit (0)">fit</button></div></header>
<main><div id="canvas">$svg</div>
<aside id="details"><p class="hint">Click a node to see its descriptor, shape,
parameters and cost. Wheel: zoom; drag: pan.</p></aside></main>
<script type="application/json" id="model-data">$data</script>
<script>$script</script>
</body></html>
""")

_STYLE = """
body { margin: 0; font-family: Helvetica, Arial, sans-serif; display: flex;
       flex-direction: column; height: 100vh; }
header { display: flex; align-items: center; gap: 1em; padding: 0.3em 1em;
         border-bottom: 1px solid #ccc; }
h1 { font-size: 1.1em; margin: 0; }
.kind { padding: 0.1em 0.5em; margin-right: 0.3em; border-radius: 0.3em; font-size: 0.85em; }
main { flex: 1; display: flex; min-height: 0; }
#canvas { flex: 1; overflow: hidden; cursor: grab; background: #fafafa; }
#canvas svg { width: 100%; height: 100%; user-select: none; }
#canvas.panning { cursor: grabbing; }
g.node { cursor: pointer; }
g.node.selected polygon, g.node.selected ellipse, g.node.selected path {
  stroke: #d62728; stroke-width: 3; }
aside { width: 26em; overflow: auto; padding: 0.5em 1em; border-left: 1px solid #ccc;
        font-size: 0.9em; }
aside table { border-collapse: collapse; }
aside td, aside th { border: 1px solid #ddd; padding: 0.1em 0.4em; text-align: left; }
.hint { color: #777; }
a.node-link { color: #1f77b4; cursor: pointer; margin-right: 0.4em; }
"""

_SCRIPT = r"""
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('model-data').textContent);
  const canvas = document.getElementById('canvas');
  const svg = canvas.querySelector('svg');
  const details = document.getElementById('details');
  svg.removeAttribute('width');
  svg.removeAttribute('height');
  const initial = svg.viewBox.baseVal;
  const home = {x: initial.x, y: initial.y, w: initial.width, h: initial.height};
  let view = Object.assign({}, home);

  function apply() {
    svg.setAttribute('viewBox', [view.x, view.y, view.w, view.h].join(' '));
  }
  function toSvg(clientX, clientY) {
    const point = svg.createSVGPoint();
    point.x = clientX; point.y = clientY;
    return point.matrixTransform(svg.getScreenCTM().inverse());
  }
  function zoom(factor, clientX, clientY) {
    const rect = svg.getBoundingClientRect();
    const centre = toSvg(clientX === undefined ? rect.left + rect.width / 2 : clientX,
                         clientY === undefined ? rect.top + rect.height / 2 : clientY);
    view.x = centre.x - (centre.x - view.x) * factor;
    view.y = centre.y - (centre.y - view.y) * factor;
    view.w *= factor; view.h *= factor;
    apply();
  }
  canvas.addEventListener('wheel', function (event) {
    event.preventDefault();
    zoom(Math.exp(event.deltaY * 0.002), event.clientX, event.clientY);
  }, {passive: false});

  let drag = null;
  canvas.addEventListener('pointerdown', function (event) {
    drag = {x: event.clientX, y: event.clientY, view: Object.assign({}, view), moved: false};
  });
  window.addEventListener('pointermove', function (event) {
    if (!drag) return;
    const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add('panning'); }
    const scale = view.w / svg.getBoundingClientRect().width;
    view.x = drag.view.x - dx * scale;
    view.y = drag.view.y - dy * scale;
    apply();
  });
  window.addEventListener('pointerup', function () {
    canvas.classList.remove('panning');
    setTimeout(function () { drag = null; }, 0);
  });

  function element(tag, text, className) {
    const el = document.createElement(tag);
    if (text !== undefined) el.textContent = text;
    if (className) el.className = className;
    return el;
  }
  function row(table, cells, header) {
    const tr = table.insertRow();
    cells.forEach(function (cell) { tr.appendChild(element(header ? 'th' : 'td', String(cell))); });
  }
  function links(names) {
    const span = element('span');
    names.forEach(function (name) {
      const id = Object.keys(data).find(function (key) { return data[key].name === name; });
      const a = element('a', name, 'node-link');
      a.addEventListener('click', function () { select(id); });
      span.appendChild(a);
    });
    return span;
  }
  function select(id) {
    const node = data[id];
    svg.querySelectorAll('g.node.selected').forEach(function (g) {
      g.classList.remove('selected');
    });
    document.getElementById(id).classList.add('selected');
    details.replaceChildren();
    details.appendChild(element('h2', node.name));
    const facts = element('table');
    facts.id = 'facts';
    row(facts, ['class', node['class']]);
    row(facts, ['kind', node.kind]);
    row(facts, ['shape', node.shape_repr]);
    if (node.fov.length) {
      row(facts, ['fov', node.fov.join(' x ')]);
      row(facts, ['strides', node.strides.join(' x ')]);
    }
    row(facts, ['parameters', node.param_count.toLocaleString('en')]);
    row(facts, ['cost', node.cost_text + ' (' + node.cost.toLocaleString('en') + ')']);
    if (node.designations.length) row(facts, ['designated', node.designations.join(', ')]);
    details.appendChild(facts);
    details.appendChild(element('h3', 'parents')).after(links(node.parents));
    details.appendChild(element('h3', 'children')).after(links(node.children));
    if (node.params.length) {
      details.appendChild(element('h3', 'parameters'));
      const params = element('table');
      params.id = 'params';
      row(params, ['name', 'shape', 'values', 'trainable'], true);
      node.params.forEach(function (p) {
        row(params, [p.name, '(' + p.shape.join(', ') + ')', p.count.toLocaleString('en'),
                     p.trainable ? 'yes' : 'no']);
      });
      details.appendChild(params);
    }
    details.appendChild(element('h3', 'descriptor: ' + node.descriptor['class']));
    const descriptor = element('table');
    descriptor.id = 'descriptor';
    Object.entries(node.descriptor.args).forEach(function (arg) {
      row(descriptor, [arg[0], JSON.stringify(arg[1])]);
    });
    details.appendChild(descriptor);
  }
  svg.querySelectorAll('g.node').forEach(function (g) {
    g.addEventListener('click', function () { if (!(drag && drag.moved)) select(g.id); });
  });
  document.getElementById('zoom-in').addEventListener('click', function () { zoom(0.8); });
  document.getElementById('zoom-out').addEventListener('click', function () { zoom(1.25); });
  document.getElementById('zoom-fit').addEventListener('click', function () {
    view = Object.assign({}, home); apply();
  });
  window.addEventListener('keydown', function (event) {
    if (event.key === '+') zoom(0.8);
    else if (event.key === '-') zoom(1.25);
    else if (event.key === '0') { view = Object.assign({}, home); apply(); }
  });
})();
"""
