"""A synthetic hierarchical multi-label dataset with a known random hierarchy (tree or DAG).

For tests and for ``hierloss demo``'s default: no download, any size, the same data for the same seed.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from hierloss.datasets.hmc import HMCData
from hierloss.hierarchy import Hierarchy

__all__ = ["make_hierarchical_classification"]


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def make_hierarchical_classification(
    n_samples: int = 1000,
    n_features: int = 20,
    *,
    depth: int = 3,
    branching: int = 3,
    n_roots: int | None = None,
    dag: bool = False,
    extra_parent_prob: float = 0.3,
    n_informative: int | None = None,
    noise: float = 0.5,
    root_rate: float = 0.4,
    child_rate: float = 0.5,
    random_state: int | np.random.Generator | None = None,
) -> HMCData:
    """Generate a learnable hierarchical multi-label problem with ancestor-closed labels.

    **Hierarchy.** ``n_roots`` root labels, each with ``branching`` children, down to ``depth`` levels: a tree of
    ``n_roots · (1 + branching + … + branching^(depth-1))`` labels named by their path (``"0"``, ``"0/2"``,
    ``"0/2/1"``). With ``dag=True`` every label below the top level gets, with probability ``extra_parent_prob``,
    a second parent drawn from the other labels of the level above (at least one label always does), so the
    hierarchy is a DAG with multi-parent nodes; a label keeps the name of its first parent's path.

    **Data.** Each sample has a latent ``z ~ N(0, I_k)`` (``k = n_informative``); its features are
    ``X = z A + noise · ε`` with a random ``(k, n_features)`` mixing matrix ``A`` and ``ε ~ N(0, 1)``. Each label
    ``l`` has a random direction ``w_l`` and is on when **all** its parents are on and ``z · w_l`` exceeds a
    threshold that a root passes with probability ``root_rate`` and any other label with probability
    ``child_rate``. Labels are therefore ancestor-closed by construction (the true-path rule, also on DAGs), and
    ``P(label | x)`` is a learnable, non-linear function of the features.

    Args:
        n_samples: number of rows ``N``.
        n_features: number of features ``F``.
        depth: number of levels (1 = only roots, no edges).
        branching: children per label.
        n_roots: labels on the top level (default ``branching``).
        dag: add second parents (see above).
        extra_parent_prob: probability that a label below the top level gets a second parent, with ``dag=True``.
        n_informative: latent dimension ``k`` (default ``max(1, n_features // 2)``); at most ``n_features``.
        noise: standard deviation of the feature noise.
        root_rate: marginal rate of each root label, in ``(0, 1)``.
        child_rate: probability that a label passes its own test, in ``(0, 1)``.
        random_state: a seed or a ``numpy.random.Generator``; the same seed gives the same data and hierarchy.

    Returns:
        :class:`~hierloss.datasets.HMCData`: ``X`` float32 ``(N, F)``, ``Y`` uint8 ``(N, C)`` ancestor-closed in
        ``hierarchy.labels`` order, ``hierarchy``, ``feature_names`` ``("x0", "x1", …)``.

    Raises:
        TypeError: if a count is not an int.
        ValueError: on a count below its minimum, a rate outside ``(0, 1)``, a negative ``noise``,
            ``n_informative > n_features``, or ``dag=True`` on a hierarchy where no label can have two parents
            (``depth < 2``, or a single label on every level but the last).

    Example:
        >>> from hierloss.datasets import make_hierarchical_classification
        >>> data = make_hierarchical_classification(200, 10, depth=3, branching=2, dag=True, random_state=0)
        >>> data.X.shape, data.Y.shape, data.hierarchy.num_labels
        ((200, 10), (200, 14), 14)
        >>> bool((data.hierarchy.propagate(data.Y) == data.Y).all())
        True
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_features = _check_int(n_features, "n_features", 1)
    depth = _check_int(depth, "depth", 1)
    branching = _check_int(branching, "branching", 1)
    n_roots = branching if n_roots is None else _check_int(n_roots, "n_roots", 1)
    k = max(1, n_features // 2) if n_informative is None else _check_int(n_informative, "n_informative", 1)
    if k > n_features:
        raise ValueError(f"`n_informative` must be <= n_features ({n_features}), got {k}")
    for name, rate in (("root_rate", root_rate), ("child_rate", child_rate)):
        if not 0.0 < rate < 1.0:
            raise ValueError(f"`{name}` must be in (0, 1), got {rate!r}")
    if not 0.0 <= extra_parent_prob <= 1.0:
        raise ValueError(f"`extra_parent_prob` must be in [0, 1], got {extra_parent_prob!r}")
    if noise < 0:
        raise ValueError(f"`noise` must be >= 0, got {noise!r}")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)

    # Hierarchy, level by level; `parents[i]` lists label indices.
    levels: list[list[int]] = [list(range(n_roots))]
    names = [str(r) for r in range(n_roots)]
    parents: list[list[int]] = [[] for _ in range(n_roots)]
    for _ in range(1, depth):
        level = []
        for p in levels[-1]:
            for b in range(branching):
                parents.append([p])
                names.append(f"{names[p]}/{b}")
                level.append(len(names) - 1)
        levels.append(level)
    if dag:
        candidates = [(i, [q for q in levels[d - 1] if q != parents[i][0]]) for d in range(1, depth)
                      for i in levels[d]]
        candidates = [(i, others) for i, others in candidates if others]
        if not candidates:
            raise ValueError(f"dag=True needs a level below the top whose level above holds two or more labels; got "
                             f"depth={depth}, n_roots={n_roots}, branching={branching}")
        draws = rng.random(len(candidates)) < extra_parent_prob
        if not draws.any():
            draws[int(rng.integers(len(candidates)))] = True
        for (i, others), draw in zip(candidates, draws):
            if draw:
                parents[i].append(int(others[int(rng.integers(len(others)))]))
    n_labels = len(names)
    hierarchy = Hierarchy(names, [(names[p], names[i]) for i in range(n_labels) for p in parents[i]])

    # Data: latent factors, mixed features, thresholded label scores gated by the parents.
    z = rng.standard_normal((n_samples, k))
    mixing = rng.standard_normal((k, n_features)) / np.sqrt(k)
    X = z @ mixing + noise * rng.standard_normal((n_samples, n_features))
    directions = rng.standard_normal((k, n_labels))
    scores = z @ directions
    rates = np.where([not p for p in parents], root_rate, child_rate)
    thresholds = np.array([NormalDist().inv_cdf(1.0 - r) for r in rates]) * np.linalg.norm(directions, axis=0)
    passes = scores > thresholds
    Y = np.zeros((n_samples, n_labels), dtype=bool)
    for level in levels:  # parents are always on the level above, so they are final here
        for i in level:
            on = passes[:, i]
            for p in parents[i]:
                on = on & Y[:, p]
            Y[:, i] = on
    return HMCData(X=X.astype(np.float32), Y=Y.astype(np.uint8), hierarchy=hierarchy,
                   feature_names=tuple(f"x{j}" for j in range(n_features)))
