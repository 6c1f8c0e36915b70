"""Per-edge weights ``w_e`` of the hierarchy penalty, estimated from label matrices.

For an edge parent → child, the paper's data-driven weight (its "penalty") is ``w = 1 − P̂(child = 1 | parent = 0)``:
edges that the training labels never violate get a weight near 1, edges that the data itself often violates get a
smaller one. Every estimator works from three counts per edge, all sums over rows (so chunked, streamed and
distributed inputs give the same answer):

* ``n``: rows where both the parent and the child are known;
* ``n_parent_neg``: rows where the parent is 0 (and the child known);
* ``n_violation``: rows where the parent is 0 and the child is 1.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from hierloss._validation import check_unique_columns
from hierloss.hierarchy import Hierarchy

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BetaWeight",
    "ConditionalWeight",
    "EdgeCounts",
    "EdgeWeights",
    "FixedWeight",
    "WeightEstimator",
    "count_edges",
]

UncertainPolicy = Literal["zeros", "ones", "ignore"]
_POLICIES = ("zeros", "ones", "ignore")
# Rows per counting block. Below 2**24, so float32 sums of 0/1 bytes are exact (and ~10x faster than int64 sums).
_CHUNK_ROWS = 1 << 18


@dataclass(frozen=True, eq=False)
class EdgeCounts:
    """Per-edge counts (int64 tensors of shape ``(E,)``, aligned with ``hierarchy.edges``)."""

    n: Tensor
    n_parent_neg: Tensor
    n_violation: Tensor

    def __add__(self, other: EdgeCounts) -> EdgeCounts:
        return EdgeCounts(self.n + other.n, self.n_parent_neg + other.n_parent_neg,
                          self.n_violation + other.n_violation)

    def all_reduce(self, process_group: Any) -> EdgeCounts:
        """Sum the counts over the ranks of ``process_group`` (``torch.distributed``; one collective call)."""
        import torch.distributed as dist

        stacked = torch.stack([self.n, self.n_parent_neg, self.n_violation])
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM, group=process_group)
        return EdgeCounts(stacked[0], stacked[1], stacked[2])


class EdgeWeights:
    """Immutable per-edge weights of a hierarchy, usable directly as ``HBCELoss(h, edge_weight=...)``.

    Args:
        hierarchy: the hierarchy whose edges the weights follow.
        values: ``(E,)`` weights in ``hierarchy.edges`` order.
        counts: the counts they were estimated from, if any.
        estimator: a description of the estimator, for the table and serialisation.
    """

    def __init__(self, hierarchy: Hierarchy, values: Tensor | Iterable[float], counts: EdgeCounts | None = None,
                 estimator: str = "") -> None:
        tensor = torch.as_tensor(values if isinstance(values, Tensor) else list(values), dtype=torch.float64)
        tensor = tensor.detach().to("cpu")
        if tensor.shape != (hierarchy.num_edges,):
            raise ValueError(f"Expected {hierarchy.num_edges} edge weights (one per edge), got shape "
                             f"{tuple(tensor.shape)}")
        if not bool(torch.isfinite(tensor).all()):
            bad = int(torch.nonzero(~torch.isfinite(tensor))[0])
            raise ValueError(f"weight of edge {hierarchy.edges[bad]!r} is {float(tensor[bad])!r}; edge weights "
                             "must be finite")
        self._hierarchy = hierarchy
        self._values = tensor
        self._counts = counts
        self._estimator = estimator

    @property
    def hierarchy(self) -> Hierarchy:
        """The hierarchy the weights belong to."""
        return self._hierarchy

    @property
    def values(self) -> Tensor:
        """``(E,)`` float32 tensor of weights, aligned with ``hierarchy.edges`` (a new tensor each call)."""
        return self._values.to(torch.float32)

    @property
    def counts(self) -> EdgeCounts | None:
        """The counts behind the weights (``None`` for a fixed weight)."""
        return self._counts

    @property
    def estimator(self) -> str:
        """Description of the estimator that produced the weights."""
        return self._estimator

    def __len__(self) -> int:
        return int(self._values.numel())

    def __repr__(self) -> str:
        return f"EdgeWeights(num_edges={len(self)}, estimator={self._estimator!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EdgeWeights):
            return NotImplemented
        return self._hierarchy == other._hierarchy and torch.equal(self._values, other._values)

    __hash__ = None  # type: ignore[assignment]

    def as_mapping(self) -> dict[tuple[str, str], float]:
        """``{(parent, child): weight}`` for every edge."""
        return dict(zip(self._hierarchy.edges, self._values.tolist()))

    def table(self) -> pd.DataFrame:
        """One row per edge: ``parent, child, n, n_parent_neg, n_violation, p_violation, weight``.

        ``p_violation`` is ``n_violation / n_parent_neg`` (NaN where the parent is never negative); counts are
        missing (``<NA>``) for weights that were not estimated from labels.
        """
        import pandas as pd

        edges = self._hierarchy.edges
        frame = pd.DataFrame({"parent": [p for p, _ in edges], "child": [c for _, c in edges]})
        if self._counts is not None:
            n_neg = self._counts.n_parent_neg.cpu().numpy()
            n_vio = self._counts.n_violation.cpu().numpy()
            frame["n"] = self._counts.n.cpu().numpy()
            frame["n_parent_neg"] = n_neg
            frame["n_violation"] = n_vio
            with np.errstate(invalid="ignore", divide="ignore"):
                frame["p_violation"] = np.where(n_neg > 0, n_vio / np.maximum(n_neg, 1), np.nan)
        else:
            for col in ("n", "n_parent_neg", "n_violation"):
                frame[col] = pd.array([pd.NA] * len(edges), dtype="Int64")
            frame["p_violation"] = np.nan
        frame["weight"] = self._values.numpy()
        result: pd.DataFrame = frame
        return result

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: hierarchy, estimator, weights and counts."""
        out: dict[str, Any] = {
            "hierarchy": {"labels": list(self._hierarchy.labels), "edges": [list(e) for e in self._hierarchy.edges]},
            "estimator": self._estimator,
            "weights": self._values.tolist(),
        }
        if self._counts is not None:
            out["counts"] = {k: getattr(self._counts, k).cpu().tolist() for k in ("n", "n_parent_neg", "n_violation")}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EdgeWeights:
        """Inverse of :meth:`to_dict`."""
        for key in ("hierarchy", "weights"):
            if key not in data:
                raise ValueError(f"EdgeWeights.from_dict: missing key {key!r}")
        h = data["hierarchy"]
        hierarchy = Hierarchy(h["labels"], [tuple(e) for e in h["edges"]])
        counts = None
        if data.get("counts") is not None:
            c = data["counts"]
            counts = EdgeCounts(*(torch.tensor(c[k], dtype=torch.long) for k in ("n", "n_parent_neg", "n_violation")))
        return cls(hierarchy, data["weights"], counts, str(data.get("estimator", "")))


# ---------------------------------------------------------------------------------------------- counting
def _columns_of(chunk: Any, hierarchy: Hierarchy) -> Tensor:
    """One chunk as a ``(C, n)`` column-major float tensor in hierarchy column order (device kept)."""
    if isinstance(chunk, Tensor):
        mat = chunk
    elif isinstance(chunk, np.ndarray):
        mat = torch.from_numpy(chunk)
    else:
        import pandas as pd

        if isinstance(chunk, pd.DataFrame):
            missing = [lab for lab in hierarchy.labels if lab not in chunk.columns]
            if missing:
                raise ValueError(f"label DataFrame is missing hierarchy columns {missing!r}")
            _refuse_repeated_columns(chunk, hierarchy)
            block = chunk.loc[:, list(hierarchy.labels)]
            dtypes = set(block.dtypes)
            try:
                only = next(iter(dtypes))
                if len(dtypes) == 1 and isinstance(only, np.dtype) and only.kind in "biuf":
                    values = block.to_numpy()  # a view of the frame's data where pandas can give one
                else:  # mixed or nullable (Int64, boolean, Float64) columns: <NA> becomes NaN, a missing value
                    values = block.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                for col in block.columns:
                    try:
                        block[col].to_numpy(dtype=np.float64, na_value=np.nan)
                    except (TypeError, ValueError):
                        bad = next(v for v in block[col] if not _is_number(v))
                        raise ValueError(f"column {col!r} holds the non-numeric value {bad!r}") from None
                raise
            if any(stride < 0 for stride in values.strides):  # columns picked in reverse order of the block
                values = values.copy(order="K")
            with warnings.catch_warnings():  # a read-only view of the frame's data; it is never written to
                warnings.simplefilter("ignore", UserWarning)
                mat = torch.from_numpy(values)
        else:
            raise TypeError(f"labels must be a numpy array, torch tensor, pandas DataFrame, scipy.sparse matrix, a "
                            f"list of rows or an iterable of those, got {type(chunk).__name__}")
    if mat.ndim != 2 or mat.shape[1] != hierarchy.num_labels:
        raise ValueError(f"Expected labels of shape (N, {hierarchy.num_labels}), got {tuple(mat.shape)}")
    if mat.dtype == torch.bool:
        mat = mat.to(torch.uint8)
    return mat.t()


def _refuse_repeated_columns(frame: pd.DataFrame, hierarchy: Hierarchy) -> None:
    """Refuse a label column that ``frame`` holds more than once, naming it (other columns may repeat)."""
    check_unique_columns(frame.columns, hierarchy.labels, "label DataFrame", "edge weights need")


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (numbers.Number, np.generic, str, bytes))


def _matrix_from_rows(rows: list[Any] | tuple[Any, ...], hierarchy: Hierarchy) -> np.ndarray:
    """A list of rows (lists or tuples of numbers) as one float64 ``(N, C)`` array; ``None`` is missing (NaN)."""
    if all(_is_scalar(row) for row in rows):
        raise ValueError(f"Expected labels of shape (N, {hierarchy.num_labels}), got ({len(rows)},): a flat list is "
                         "one row; pass a list of rows")
    width = len(rows[0]) if isinstance(rows[0], (list, tuple)) else None
    for i, row in enumerate(rows):
        row_width = len(row) if isinstance(row, (list, tuple)) else None
        if row_width != width:
            raise ValueError(f"labels row {i} has {'no list of' if row_width is None else row_width} values, row 0 "
                             f"has {'no list of' if width is None else width}; nested lists must form an (N, C) "
                             "matrix")
    try:
        return np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                if value is not None and not _is_number(value):
                    column = repr(hierarchy.labels[j]) if j < hierarchy.num_labels else str(j)
                    raise ValueError(f"labels row {i}, column {column} holds the non-numeric value {value!r}") from None
        raise


def _chunks(labels: Any, hierarchy: Hierarchy) -> Iterator[Any]:
    """Yield dense chunks from any supported input (sparse matrices densified a block of rows at a time)."""
    if isinstance(labels, (Tensor, np.ndarray)):
        yield labels
        return
    if type(labels).__module__.startswith("pandas"):
        if isinstance(labels, Iterator):  # a reader of DataFrames, e.g. pd.read_csv(..., chunksize=)
            for chunk in labels:
                yield from _chunks(chunk, hierarchy)
            return
        yield labels  # a DataFrame; anything else (a Series) is refused by _columns_of, naming its type
        return
    if isinstance(labels, (list, tuple)) and labels and all(
            isinstance(row, (list, tuple)) or _is_scalar(row) for row in labels):
        yield _matrix_from_rows(labels, hierarchy)  # nested Python lists: one matrix, not chunks of rows
        return
    if type(labels).__module__.startswith("scipy.sparse"):
        csr = labels.tocsr()
        for start in range(0, csr.shape[0], _CHUNK_ROWS):
            yield csr[start:start + _CHUNK_ROWS].toarray()
        if csr.shape[0] == 0:
            yield csr.toarray()
        return
    if isinstance(labels, Iterable) and not isinstance(labels, (str, bytes, Mapping)):
        for chunk in labels:
            yield from _chunks(chunk, hierarchy)
        return
    raise TypeError(f"labels must be a numpy array, torch tensor, pandas DataFrame, scipy.sparse matrix, a list of "
                    f"rows or an iterable of those, got {type(labels).__name__}")


#: Rows per tile of :func:`_contiguous_rows`: a ``(C, tile)`` byte tile of a ``(N, C)`` frame stays in cache.
_TILE_ROWS = 16384


def _contiguous_rows(cols: Tensor) -> Tensor:
    """``cols.contiguous()`` for the ``(C, n)`` transposed view of a row-major ``(n, C)`` byte matrix.

    On the CPU the copy is done one tile of :data:`_TILE_ROWS` rows at a time: 2.6x faster than one
    ``.contiguous()`` at 2¹⁸ × 21 on one thread, whose element-by-element transpose leaves the cache.
    """
    if cols.is_contiguous() or cols.device.type != "cpu" or cols.stride(1) == 1:  # rows already contiguous
        return cols.contiguous()
    out = torch.empty(cols.shape, dtype=cols.dtype)
    for start in range(0, cols.shape[1], _TILE_ROWS):
        out[:, start:start + _TILE_ROWS].copy_(cols[:, start:start + _TILE_ROWS])
    return out


def _validate(cols: Tensor, hierarchy: Hierarchy, uncertain: str | None) -> tuple[Tensor, Tensor | None]:
    """Return ``(values, known)``: contiguous 0/1 uint8 columns and (for 'ignore') a bool mask of known entries."""
    if cols.dtype == torch.uint8:
        if cols.numel() == 0 or int(cols.max()) <= 1:
            return _contiguous_rows(cols), None
    else:
        positive = cols == 1
        binary = (cols == 0).logical_or_(positive)
        # all(): the minimum of the bytes, ~20x faster than a bool all() on the CPU
        if binary.numel() == 0 or int(binary.view(torch.uint8).min()):
            return _contiguous_rows(positive.view(torch.uint8)), None
    # Slow path: uncertain (-1) / missing (NaN) entries or invalid values somewhere.
    is_float = cols.is_floating_point()
    if not is_float:
        cols = cols.to(torch.int64)
    missing = torch.isnan(cols) if is_float else torch.zeros_like(cols, dtype=torch.bool)
    unsure = (cols == -1) | missing
    other = ~((cols == 0) | (cols == 1) | unsure)
    if bool(other.any()):
        col = int(torch.nonzero(other.any(dim=1))[0])
        row = int(torch.nonzero(other[col])[0])
        value = cols[col, row].item()
        raise ValueError(f"column {hierarchy.labels[col]!r} holds {value!r}; labels must be 0 or 1 (or -1 / NaN "
                         "for uncertain / missing, with an `uncertain` policy)")
    positive = cols == 1
    if uncertain is None:
        col = int(torch.nonzero(unsure.any(dim=1))[0])
        n_unc = int((cols[col] == -1).sum())
        n_nan = int(missing[col].sum())
        raise ValueError(f"column {hierarchy.labels[col]!r} holds {n_unc} uncertain (-1) and {n_nan} missing "
                         "(NaN) values; pass uncertain='zeros', 'ones' or 'ignore'")
    if uncertain == "zeros":
        return positive.to(torch.uint8).contiguous(), None
    if uncertain == "ones":
        return (positive | unsure).to(torch.uint8).contiguous(), None
    return positive.to(torch.uint8).contiguous(), (~unsure).contiguous()


def _row_count(flags: Tensor) -> Tensor:
    """Number of ones per row of a ``(E, n)`` 0/1 uint8 block with ``n < 2**24``, as int64."""
    return flags.sum(dim=1, dtype=torch.float32).to(torch.long)


def count_edges(hierarchy: Hierarchy, labels: Any, uncertain: UncertainPolicy | None = None,
                process_group: Any = None) -> EdgeCounts:
    """Count, for every edge, the rows with the parent known, the parent negative, and violations.

    Args:
        hierarchy: the hierarchy.
        labels: ``(N, C)`` labels in ``hierarchy.labels`` column order (NumPy array, torch tensor — counted on its
            device —, scipy.sparse matrix, or a list of rows, each a list of numbers), a pandas DataFrame (columns
            matched by name in any order, each label column once, extra columns ignored, nullable ``Int64`` /
            ``boolean`` / ``Float64`` accepted with ``<NA>`` read as missing), or any iterable of such chunks (memory
            then depends on the chunk size only).
        uncertain: policy for ``-1`` (uncertain) and NaN / ``<NA>`` / ``None`` (missing) entries: ``None`` raises,
            ``'zeros'`` / ``'ones'`` map them, ``'ignore'`` leaves the row out of every edge touching that column.
        process_group: a ``torch.distributed`` process group (e.g. ``torch.distributed.group.WORLD``) over which
            the counts are summed, so that every rank gets the counts of the union of their rows. A rank may hold
            no rows at all (an empty array or frame, or no chunks). Every rank takes part in the one collective
            call even when its own labels are invalid, so no rank is left waiting: the rank with bad labels raises
            its own error, the others a ``ValueError`` naming that rank.

    Returns:
        The :class:`EdgeCounts` (int64, on the device of the last chunk, CPU for NumPy/pandas input).

    Raises:
        ValueError: on an empty label matrix (with a ``process_group``: no row on any rank), a wrong shape, missing
            DataFrame columns, a DataFrame label column present more than once (naming it), a value other than
            0/1/-1/NaN (naming column and value), or uncertain values without a policy (naming column and count).
    """
    if process_group is None:
        total, rows, _ = _count_local(hierarchy, labels, uncertain)
        if total is None or rows == 0:
            raise ValueError("the label matrix is empty (0 rows); edge weights need at least one row")
        return total
    return _count_distributed(hierarchy, labels, uncertain, process_group)


def _count_local(hierarchy: Hierarchy, labels: Any,
                 uncertain: str | None) -> tuple[EdgeCounts | None, int, torch.device | None]:
    """``(counts or None if no row, rows, device of the last chunk or None if there was none)`` of this process."""
    if uncertain is not None and uncertain not in _POLICIES:
        raise ValueError(f"uncertain must be None, 'zeros', 'ones' or 'ignore', got {uncertain!r}")
    edge_index = hierarchy.edge_index
    total: EdgeCounts | None = None
    rows = 0
    device: torch.device | None = None
    for chunk in _chunks(labels, hierarchy):
        cols_all = _columns_of(chunk, hierarchy)
        rows += int(cols_all.shape[1])
        device = cols_all.device
        parents = edge_index[0].to(cols_all.device)
        children = edge_index[1].to(cols_all.device)
        for start in range(0, cols_all.shape[1], _CHUNK_ROWS):
            cols = cols_all[:, start:start + _CHUNK_ROWS]
            values, known = _validate(cols, hierarchy, uncertain)
            parent_val = values.index_select(0, parents)
            child_val = values.index_select(0, children)
            parent_neg = 1 - parent_val
            if known is None:
                n = torch.full((len(parents),), cols.shape[1], dtype=torch.long, device=cols.device)
            else:
                both = (known.index_select(0, parents) & known.index_select(0, children)).to(torch.uint8)
                n = _row_count(both)
                parent_neg = parent_neg & both
            counts = EdgeCounts(n, _row_count(parent_neg), _row_count(parent_neg & child_val))
            total = counts if total is None else total + counts.__class__(
                *(t.to(total.n.device) for t in (counts.n, counts.n_parent_neg, counts.n_violation)))
    return total, rows, device


def _count_distributed(hierarchy: Hierarchy, labels: Any, uncertain: str | None, process_group: Any) -> EdgeCounts:
    """Count this rank's labels and sum over ``process_group`` in one all-reduce that every rank joins.

    The all-reduced vector holds the three ``(E,)`` counts, the number of rows, and one failure flag per rank, so
    that an empty rank contributes zeros and a rank whose labels are invalid still joins before raising.
    """
    import torch.distributed as dist

    edges = hierarchy.num_edges
    world, me = dist.get_world_size(process_group), dist.get_rank(process_group)
    error: Exception | None = None
    total: EdgeCounts | None = None
    rows = 0
    device: torch.device | None = None
    try:
        total, rows, device = _count_local(hierarchy, labels, uncertain)
    except (TypeError, ValueError) as err:
        error = err
    if device is None:  # no chunk at all: the backend's device (NCCL reduces CUDA tensors only)
        backend = dist.get_backend(process_group)
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    vector = torch.zeros(3 * edges + 1 + world, dtype=torch.long, device=device)
    if total is not None and error is None:
        vector[:3 * edges] = torch.cat([total.n, total.n_parent_neg, total.n_violation]).to(device)
    vector[3 * edges] = rows if error is None else 0
    vector[3 * edges + 1 + me] = error is not None
    dist.all_reduce(vector, op=dist.ReduceOp.SUM, group=process_group)
    if error is not None:
        try:
            raise error
        finally:  # drop the frame -> exception -> traceback -> frame cycle, which would keep the group alive
            error = None
    failed = torch.nonzero(vector[3 * edges + 1:]).flatten().tolist()
    if failed:
        who = f"rank {failed[0]}" if len(failed) == 1 else f"ranks {failed}"
        raise ValueError(f"{who} of the process group could not count its labels (see the error raised there); "
                         "no rank estimated edge weights")
    if int(vector[3 * edges]) == 0:
        raise ValueError("the label matrix is empty (0 rows on every rank); edge weights need at least one row")
    return EdgeCounts(vector[:edges], vector[edges:2 * edges], vector[2 * edges:3 * edges])


# ---------------------------------------------------------------------------------------------- estimators
def _check_number(name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is a real number (Python or NumPy); booleans are not numbers here."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")


class WeightEstimator:
    """Base class: ``fit(hierarchy, labels, uncertain=None, process_group=None) -> EdgeWeights``."""

    def fit(self, hierarchy: Hierarchy, labels: Any, uncertain: UncertainPolicy | None = None,
            process_group: Any = None) -> EdgeWeights:
        """Estimate per-edge weights from ``labels`` (see :func:`count_edges` for the accepted inputs)."""
        counts = count_edges(hierarchy, labels, uncertain=uncertain, process_group=process_group)
        values = self.weights_from_counts(counts)
        return EdgeWeights(hierarchy, values, counts=counts, estimator=repr(self))

    def weights_from_counts(self, counts: EdgeCounts) -> Tensor:
        """Map counts to float64 weights of shape ``(E,)``."""
        raise NotImplementedError


class ConditionalWeight(WeightEstimator):
    """The paper's data-driven weight, ``w = 1 − (n_violation + ε) / (n_parent_neg + 2ε)``.

    Numerically identical to the reference (float64 arithmetic, ``ε = smoothing``). Edge cases, never NaN: an
    edge whose parent is never negative (or whose rows are all ignored) gets ``1 − ε / 2ε = 0.5``; an edge never
    violated gets ``1 − ε / (n_parent_neg + 2ε) ≈ 1``.

    Args:
        smoothing: ``ε > 0``, a number (booleans are refused, not read as 1.0).

    Example:
        >>> import numpy as np
        >>> from hierloss import Hierarchy
        >>> h = Hierarchy.from_edges([("a", "b")])
        >>> y = np.array([[0, 0], [0, 1], [1, 1], [0, 0]])
        >>> ConditionalWeight().fit(h, y).values  # 1 violation among 3 rows with a = 0
        tensor([0.6667])
    """

    def __init__(self, smoothing: float = 1e-6) -> None:
        _check_number("smoothing", smoothing)
        if not (smoothing > 0 and math.isfinite(smoothing)):
            raise ValueError(f"smoothing must be a positive finite number, got {smoothing!r}")
        self.smoothing = float(smoothing)

    def __repr__(self) -> str:
        return f"ConditionalWeight(smoothing={self.smoothing!r})"

    def weights_from_counts(self, counts: EdgeCounts) -> Tensor:
        """``1 − (n_violation + ε) / (n_parent_neg + 2ε)`` in float64."""
        eps = self.smoothing
        n_vio = counts.n_violation.to(torch.float64).cpu()
        n_neg = counts.n_parent_neg.to(torch.float64).cpu()
        return 1.0 - (n_vio + eps) / (n_neg + 2.0 * eps)


class BetaWeight(WeightEstimator):
    """Shrunken data-driven weight: ``w = 1 − (n_violation + α·m) / (n_parent_neg + α)``.

    The posterior mean of ``P(child = 1 | parent = 0)`` under a ``Beta(α·m, α·(1 − m))`` prior. The conditional
    estimator trusts every count fully: a parent that is negative in only three rows, none with the child
    positive, gets a weight of ≈ 1 — as confident as an edge backed by a million rows. Here ``α`` acts as
    ``α`` pseudo-rows at the prior rate ``m``, so sparsely observed edges are pulled toward ``1 − m`` while
    well-observed edges keep their data-driven value. By default ``m`` is the pooled violation rate of the whole
    hierarchy, ``Σ n_violation / Σ n_parent_neg`` (empirical Bayes); ``prior_mean=0.5, strength=2`` is Laplace
    smoothing. An edge with no evidence (its parent never 0) gets ``1 − m``. If no parent of any edge is ever 0
    (``Σ n_parent_neg = 0``), the pooled rate is undefined and ``m`` falls back to 0.5, so every edge gets 0.5;
    pass ``prior_mean`` to choose that value yourself.

    Args:
        strength: prior strength ``α > 0`` (in rows).
        prior_mean: prior violation rate ``m`` in ``[0, 1]``, or ``None`` for the pooled rate.
    """

    def __init__(self, strength: float = 10.0, prior_mean: float | None = None) -> None:
        _check_number("strength", strength)
        if not (strength > 0 and math.isfinite(strength)):
            raise ValueError(f"strength must be a positive finite number, got {strength!r}")
        if prior_mean is not None:
            _check_number("prior_mean", prior_mean)
        if prior_mean is not None and not (0.0 <= prior_mean <= 1.0):
            raise ValueError(f"prior_mean must be in [0, 1] or None, got {prior_mean!r}")
        self.strength = float(strength)
        self.prior_mean = None if prior_mean is None else float(prior_mean)

    def __repr__(self) -> str:
        return f"BetaWeight(strength={self.strength!r}, prior_mean={self.prior_mean!r})"

    def weights_from_counts(self, counts: EdgeCounts) -> Tensor:
        """``1 − (n_violation + α·m) / (n_parent_neg + α)`` in float64."""
        n_vio = counts.n_violation.to(torch.float64).cpu()
        n_neg = counts.n_parent_neg.to(torch.float64).cpu()
        if self.prior_mean is None:
            total_neg = float(n_neg.sum())
            m = float(n_vio.sum()) / total_neg if total_neg > 0 else 0.5
        else:
            m = self.prior_mean
        return 1.0 - (n_vio + self.strength * m) / (n_neg + self.strength)


class FixedWeight(WeightEstimator):
    """One constant weight ``β`` for every edge; ``fit`` ignores the labels.

    Args:
        value: the weight ``β`` (finite, ≥ 0).
    """

    def __init__(self, value: float = 1.0) -> None:
        _check_number("value", value)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"value must be a finite number >= 0, got {value!r}")
        self.value = float(value)

    def __repr__(self) -> str:
        return f"FixedWeight(value={self.value!r})"

    def fit(self, hierarchy: Hierarchy, labels: Any = None, uncertain: UncertainPolicy | None = None,
            process_group: Any = None) -> EdgeWeights:
        """Return ``β`` for every edge of ``hierarchy``; ``labels`` are not read."""
        return EdgeWeights(hierarchy, torch.full((hierarchy.num_edges,), self.value, dtype=torch.float64),
                             estimator=repr(self))

    def weights_from_counts(self, counts: EdgeCounts) -> Tensor:
        """``β`` for every edge."""
        return torch.full(counts.n.shape, self.value, dtype=torch.float64)
