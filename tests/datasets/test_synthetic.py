"""Tests for hierloss.datasets.make_hierarchical_classification."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from hierloss.datasets import make_hierarchical_classification


@pytest.mark.parametrize("dag", [False, True])
def test_shapes_names_and_ancestor_closed_labels(dag: bool) -> None:
    data = make_hierarchical_classification(500, 12, depth=3, branching=3, dag=dag, random_state=0)
    h = data.hierarchy
    assert h.num_labels == 3 * (1 + 3 + 9)
    assert data.X.shape == (500, 12) and data.X.dtype == np.float32
    assert data.Y.shape == (500, h.num_labels)
    assert set(np.unique(data.Y)) <= {0, 1}
    np.testing.assert_array_equal(h.propagate(data.Y), data.Y)  # the true-path rule already holds
    assert data.feature_names == tuple(f"x{i}" for i in range(12))
    multi = [label for label in h.labels if len(h.parents(label)) > 1]
    assert bool(multi) == dag  # a tree has no multi-parent node; a DAG has at least one
    for label in h.labels:  # names are paths of the first parent
        parents = h.parents(label)
        if parents:
            assert any(label.rsplit("/", 1)[0] == p for p in parents)


def test_same_seed_same_data_and_different_seed_different_data() -> None:
    a = make_hierarchical_classification(200, 8, dag=True, random_state=3)
    b = make_hierarchical_classification(200, 8, dag=True, random_state=3)
    c = make_hierarchical_classification(200, 8, dag=True, random_state=4)
    assert a.hierarchy == b.hierarchy
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Y, b.Y)
    assert not np.array_equal(a.X, c.X)


def test_every_label_occurs_and_roots_are_learnable() -> None:
    """The features carry the labels: a linear model beats chance clearly on each root (held-out AUROC)."""
    data = make_hierarchical_classification(3000, 16, depth=2, branching=3, random_state=1)
    h = data.hierarchy
    assert (data.Y.sum(0) > 0).all()
    train, test = slice(0, 2000), slice(2000, None)
    for root in h.roots:
        j = h.index(root)
        clf = LogisticRegression(max_iter=1000).fit(data.X[train], data.Y[train, j])
        auc = roc_auc_score(data.Y[test, j], clf.predict_proba(data.X[test])[:, 1])
        assert auc > 0.75, (root, auc)
    shuffled = np.random.default_rng(0).permutation(data.Y[:, h.index(h.roots[0])])  # the chance level for contrast
    clf = LogisticRegression(max_iter=1000).fit(data.X[train], shuffled[train])
    assert abs(roc_auc_score(shuffled[test], clf.predict_proba(data.X[test])[:, 1]) - 0.5) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"n_samples": 2.5}, TypeError, "n_samples"),
        ({"depth": 0}, ValueError, "depth"),
        ({"root_rate": 1.0}, ValueError, "root_rate"),
        ({"noise": -1.0}, ValueError, "noise"),
        ({"n_informative": 50}, ValueError, "n_informative"),
        ({"depth": 1, "dag": True}, ValueError, "dag"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    args: dict[str, object] = {"n_samples": 100, "n_features": 10, **kwargs}
    with pytest.raises(error, match=match):
        make_hierarchical_classification(**args)  # type: ignore[arg-type]
