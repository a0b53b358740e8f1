"""A readable table of a model: per node output shape, fov, parameters and cost."""
from __future__ import annotations


def pretty_ops(n: float) -> str:
    """``1.5e9 -> '1.50 G'`` for operation and parameter counts."""
    for unit, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} "


def model_summary(model) -> str:
    """One row per node, then totals (trainable parameters, MACs per example)."""
    rows = [('node', 'class', 'output shape', 'tags', 'fov', 'params', 'MAC')]
    for name, node in model.nodes.items():
        sh = node.shape
        rows.append((name, type(node).__name__,
                     '(' + ', '.join('-' if s is None else str(s) for s in sh.shape) + ')',
                     ','.join(sh.tags), 'x'.join(map(str, sh.fov)) if sh.spatial_axes else '',
                     f"{sum(p.numel() for p in node.params.values()):,}",
                     pretty_ops(node.computational_cost).strip()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    n_train = sum(p.numel() for p in model.all_params().values() if p.requires_grad)
    n_all = sum(p.numel() for p in model.all_params().values())
    cost = sum(n.computational_cost for n in model.nodes.values())
    lines.append('')
    lines.append(f"Model {model.name!r}: {len(model.nodes)} nodes, {n_train:,} trainable "
                 f"parameters ({n_all:,} in all), {pretty_ops(cost)}MAC per example")
    if model.prediction_node is not None:
        sh = model.prediction_node.shape
        if sh.spatial_axes:
            lines.append(f"Prediction {model.prediction_node.name!r}: {sh.spatial_shape} "
                         f"outputs per patch, strides {sh.strides}, fov {sh.fov}, "
                         f"{pretty_ops(cost / sh.spatial_size)}MAC per output position")
    return '\n'.join(lines)
