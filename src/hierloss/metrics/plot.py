"""Plots of hierarchy violations (``pip install hierloss[plot]``)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from hierloss.hierarchy import Hierarchy
from hierloss.metrics.consistency import consistency_report

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_edge_violations", "plot_hierarchy"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError("plotting needs matplotlib: pip install 'hierloss[plot]'") from err
    return plt


def plot_edge_violations(preds: Any, hierarchy: Hierarchy, threshold: float = 0.5, from_logits: bool = False,
                         top: int | None = 30, ax: Axes | None = None) -> Axes:
    """Horizontal bars of the per-edge violation rates, at ``threshold`` and at any threshold.

    Args:
        preds: ``(N, C)`` scores.
        hierarchy: the label hierarchy.
        threshold: decision threshold of the first rate.
        from_logits: apply a sigmoid first.
        top: show the ``top`` edges with the highest any-threshold rate (``None``: all).
        ax: axes to draw on (a new figure otherwise).
    """
    plt = _pyplot()
    report = consistency_report(preds, hierarchy, threshold, from_logits).sort_values("rate_any", ascending=False)
    if top is not None:
        report = report.head(top)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, min(0.3 * len(report) + 1.5, 60.0)))
    names = [f"{p} → {c}" for p, c in zip(report["parent"], report["child"])]
    pos = range(len(report))
    ax.barh([y + 0.2 for y in pos], report["rate_any"], height=0.4, label="child > parent (any threshold)")
    ax.barh([y - 0.2 for y in pos], report["rate"], height=0.4, label=f"violated at {threshold}")
    ax.set_yticks(list(pos), names)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of samples")
    ax.legend(loc="lower right")
    return ax


def plot_hierarchy(hierarchy: Hierarchy, preds: Any = None, threshold: float | None = 0.5,
                   from_logits: bool = False, ax: Axes | None = None) -> Axes:
    """Draw the hierarchy top-down (roots at the top, one row per depth) with violated edges highlighted.

    Edges violated by at least one sample are red, the others light grey; line width grows with the edge's
    violation rate (``1 + 6·rate`` points). Meant for hierarchies of up to a few hundred labels; for larger
    ones :func:`plot_edge_violations` is the readable view.

    Args:
        hierarchy: the label hierarchy.
        preds: optional ``(N, C)`` scores; without them every edge is drawn grey.
        threshold: threshold of the violation test, or ``None`` for any threshold.
        from_logits: apply a sigmoid first.
        ax: axes to draw on (a new figure otherwise).
    """
    import networkx as nx

    from hierloss.metrics.consistency import edge_violations

    plt = _pyplot()
    graph = hierarchy.to_networkx()
    depth = dict(zip(hierarchy.labels, hierarchy.depths))
    for node in graph.nodes:
        graph.nodes[node]["layer"] = depth[node]
    pos = nx.multipartite_layout(graph, subset_key="layer", align="horizontal")
    pos = {k: (x, -y) for k, (x, y) in pos.items()}
    if ax is None:  # width follows the widest layer, capped so that large hierarchies stay drawable
        widest = max(Counter(hierarchy.depths).values(), default=1)
        layers = max(hierarchy.depths, default=0) + 1
        _, ax = plt.subplots(figsize=(min(max(6.0, 0.6 * widest), 40.0), min(max(4.0, 1.2 * layers), 20.0)))
    rates = [0.0] * hierarchy.num_edges
    if preds is not None:
        rates = edge_violations(preds, hierarchy, threshold, from_logits).float().mean(0).tolist()
    colors = ["tab:red" if r > 0 else "lightgrey" for r in rates]
    widths = [1 + 6 * r for r in rates]
    nx.draw_networkx_edges(graph, pos, edgelist=list(hierarchy.edges), edge_color=colors, width=widths, ax=ax,
                           arrows=True)
    nx.draw_networkx_nodes(graph, pos, node_color="white", edgecolors="black", node_size=300, ax=ax)
    nx.draw_networkx_labels(graph, pos, font_size=7, ax=ax)
    ax.set_axis_off()
    return ax
