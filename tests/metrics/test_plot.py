"""Tests for hierloss.metrics.plot: the figures hold what they claim."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from hierloss import Hierarchy  # noqa: E402
from hierloss.metrics import plot_edge_violations, plot_hierarchy  # noqa: E402


def test_edge_violation_bars() -> None:
    """One pair of bars per edge, labelled 'parent → child', lengths equal to the rates."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    p = torch.tensor([[0.4, 0.6, 0.1], [0.9, 0.95, 0.2], [0.6, 0.1, 0.7]])
    ax = plot_edge_violations(p, h)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["a → b", "a → c"]
    widths = sorted(round(bar.get_width(), 4) for bar in ax.patches)
    assert widths == sorted([round(2 / 3, 4), round(1 / 3, 4), round(1 / 3, 4), 0.0])
    plt.close("all")


def test_hierarchy_drawing_highlights_violated_edges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Violated edges are drawn red, others grey; the figure saves as PNG."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    p = torch.tensor([[0.4, 0.6, 0.1]])
    ax = plot_hierarchy(h, p)
    edge_colors = [tuple(c.get_edgecolor()[:3]) for c in ax.patches]
    red = matplotlib.colors.to_rgb("tab:red")
    grey = matplotlib.colors.to_rgb("lightgrey")
    assert sorted(edge_colors) == sorted([red, grey])
    out = tmp_path / "h.png"
    ax.figure.savefig(out)
    assert out.stat().st_size > 1000
    plt.close("all")
