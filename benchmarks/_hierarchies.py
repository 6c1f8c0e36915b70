"""The hierarchies the benchmark suite runs on: CheXpert, cellcycle_GO (or a synthetic DAG of its size), and
synthetic DAGs with a chosen number of labels and edges for the scaling curves."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_penalties import GO_HEADER, go_hierarchy
from hierloss import Hierarchy
from hierloss.datasets import chexpert_hierarchy

__all__ = ["GO_DEPTH", "GO_EDGES", "GO_LABELS", "GO_ROOTS", "benchmark_hierarchy", "synthetic_dag"]

# Shape of the cellcycle_GO DAG (measured from its ARFF header): labels, edges, roots, longest root-to-leaf path.
GO_LABELS, GO_EDGES, GO_ROOTS, GO_DEPTH = 4125, 5824, 3, 13


def synthetic_dag(num_labels: int, num_edges: int, *, depth: int = GO_DEPTH, roots: int = GO_ROOTS,
                  seed: int = 0) -> Hierarchy:
    """A random DAG with exactly ``num_labels`` labels and ``num_edges`` edges, layered into ``depth + 1`` levels.

    Labels ``0 .. roots-1`` are roots (level 0); every other label gets a level in ``1 .. depth`` and, while edges
    last, one parent on the level just above (so the longest path has ``depth`` edges). Edges beyond
    ``num_labels - roots`` join random pairs from a shallower to a deeper level, giving labels several parents as
    in the Gene Ontology. With fewer edges than ``num_labels - roots`` the labels left without a parent become
    extra roots.
    """
    if not 1 <= roots <= num_labels:
        raise ValueError(f"roots must be in [1, num_labels={num_labels}], got {roots}")
    rng = np.random.default_rng(seed)
    others = num_labels - roots
    level = np.zeros(num_labels, dtype=np.int64)
    if others:
        spine = np.arange(others) % depth + 1  # every level is non-empty when others >= depth
        level[roots:] = np.sort(rng.permutation(spine))
    max_edges = int(sum(int((level < lv).sum()) * int((level == lv).sum()) for lv in range(1, depth + 1)))
    if not 0 <= num_edges <= max_edges:
        raise ValueError(f"num_edges must be in [0, {max_edges}] for {num_labels} labels in {depth} levels, got "
                         f"{num_edges}")
    by_level = [np.flatnonzero(level == lv) for lv in range(depth + 1)]
    edges: set[tuple[int, int]] = set()
    for child in range(roots, min(num_labels, roots + num_edges)):
        above = by_level[level[child] - 1]
        edges.add((int(rng.choice(above)), child))
    while len(edges) < num_edges:
        child = int(rng.integers(roots, num_labels))
        shallower = np.flatnonzero(level < level[child])
        edges.add((int(rng.choice(shallower)), child))
    names = [f"n{i}" for i in range(num_labels)]
    return Hierarchy(names, sorted((names[p], names[c]) for p, c in edges))


@functools.cache
def benchmark_hierarchy(name: str) -> tuple[Hierarchy, str]:
    """``('chexpert' | 'go')`` → (hierarchy, label for tables).

    ``'go'`` is the cellcycle_GO DAG read from ``../shared/data/hmc`` (the same hierarchy
    ``hierloss.datasets.load_hmc_arff`` returns, read from the header only), or, where that folder is absent, a
    :func:`synthetic_dag` of the same size, labelled ``'GO-size synthetic'``.
    """
    if name == "chexpert":
        return chexpert_hierarchy(), "CheXpert"
    if name == "go":
        if GO_HEADER.exists():
            return go_hierarchy(), "cellcycle_GO"
        return synthetic_dag(GO_LABELS, GO_EDGES), "GO-size synthetic"
    raise ValueError(f"hierarchy must be 'chexpert' or 'go', got {name!r}")
