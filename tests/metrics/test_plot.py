"""Tests for hierloss.metrics.plot: the figures hold what they claim and render to PNG with Agg."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from hierloss import Hierarchy
from hierloss.metrics import plot_edge_violations, plot_hierarchy

RED, GREY = matplotlib.colors.to_rgb("tab:red"), matplotlib.colors.to_rgb("lightgrey")


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _png_ok(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_edge_violation_bars(tmp_path: Path) -> None:
    """One pair of bars per edge, labelled 'parent → child', lengths equal to the two rates; saves as PNG."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    p = torch.tensor([[0.4, 0.6, 0.1], [0.9, 0.95, 0.2], [0.6, 0.1, 0.7]])
    ax = plot_edge_violations(p, h)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a → b", "a → c"]
    widths = sorted(round(bar.get_width(), 4) for bar in ax.patches)
    assert widths == sorted([round(2 / 3, 4), round(1 / 3, 4), round(1 / 3, 4), 0.0])  # any-t: 2/3, 1/3; at 0.5: 1/3, 0
    ax.figure.savefig(tmp_path / "bars.png")
    _png_ok(tmp_path / "bars.png")


def test_edge_violation_bars_top() -> None:
    """top=1 keeps only the edge with the highest any-threshold rate, on given axes."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    p = torch.tensor([[0.4, 0.6, 0.1], [0.9, 0.95, 0.2], [0.6, 0.1, 0.7]])
    _, ax = plt.subplots()
    assert plot_edge_violations(p, h, top=1, ax=ax) is ax
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a → b"]


def test_hierarchy_drawing_highlights_violated_edges(tmp_path: Path) -> None:
    """Violated edges are drawn red and wider, others grey; without preds all are grey; the figure saves as PNG."""
    h = Hierarchy.from_dict({"a": ["b", "c"]})
    ax = plot_hierarchy(h, torch.tensor([[0.4, 0.6, 0.1]]))
    drawn = sorted((tuple(c.get_edgecolor()[:3]), c.get_linewidth()) for c in ax.patches)
    assert drawn == sorted([(RED, 7.0), (GREY, 1.0)])
    assert {t.get_text() for t in ax.texts} == {"a", "b", "c"}
    ax.figure.savefig(tmp_path / "h.png")
    _png_ok(tmp_path / "h.png")
    plain = plot_hierarchy(h)
    assert [tuple(c.get_edgecolor()[:3]) for c in plain.patches] == [GREY, GREY]


def test_hierarchy_drawing_any_threshold() -> None:
    """threshold=None highlights edges whose child merely outscores its parent."""
    h = Hierarchy.from_dict({"a": ["b"]})
    p = torch.tensor([[0.1, 0.2]])
    assert [tuple(c.get_edgecolor()[:3]) for c in plot_hierarchy(h, p).patches] == [GREY]
    assert [tuple(c.get_edgecolor()[:3]) for c in plot_hierarchy(h, p, threshold=None).patches] == [RED]
