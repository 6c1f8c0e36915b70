"""Loader for the hierarchical multi-label classification (HMC) benchmarks in Clus ARFF format.

These are the FunCat / Gene Ontology yeast datasets and the enron, imclef07a and diatoms trees of Vens et al.
(2008), as redistributed with C-HMCNN. A file holds ``@ATTRIBUTE`` lines (numeric or nominal ``{a,b}``), one
``@ATTRIBUTE class hierarchical ...`` line, then ``@DATA`` rows whose last field lists the row's labels joined
by ``@``. A nominal value may be quoted, ``'x y'`` or ``"x y"``, in its declaration and in the data alike (a
quoted value cannot hold a comma). A file may be gzip-compressed (``.arff.gz``); text must be UTF-8 (ASCII is
UTF-8), with or without a byte-order mark.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hierloss.hierarchy import Hierarchy

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HMCData", "HMCSplits", "load_hmc", "load_hmc_arff"]

_ROOT = "root"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SUFFIXES = (".arff", ".arff.gz")
_QUOTES = ("'", '"')


@dataclass(frozen=True, eq=False, repr=False)
class HMCData:
    """One split of an HMC dataset.

    Attributes:
        X: ``(N, F)`` float32 features; missing values are NaN (before :func:`load_hmc`'s imputation).
        Y: ``(N, C)`` uint8 0/1 labels in ``hierarchy.labels`` order, ancestor-closed.
        hierarchy: the label hierarchy (the artificial ``root`` is not a label).
        feature_names: ``F`` names; a nominal attribute ``a`` with values ``{u, v}`` becomes ``a=u``, ``a=v``.
    """

    X: np.ndarray
    Y: np.ndarray
    hierarchy: Hierarchy
    feature_names: tuple[str, ...]

    def _arrays(self) -> str:
        return f"X={_describe(self.X)}, Y={_describe(self.Y)}"

    def __repr__(self) -> str:
        """A summary (shapes, dtypes, the hierarchy's size), not the arrays."""
        return f"HMCData({self._arrays()}, hierarchy={self.hierarchy!r})"


@dataclass(frozen=True, eq=False, repr=False)
class HMCSplits:
    """Train / valid / test splits sharing one hierarchy; ``valid`` is ``None`` when the dataset has none."""

    train: HMCData
    valid: HMCData | None
    test: HMCData
    hierarchy: Hierarchy

    def __repr__(self) -> str:
        """A summary: the hierarchy's size and each split's shapes, one per line."""
        splits = [f"{name}={'None' if data is None else f'HMCData({data._arrays()})'}"
                  for name, data in (("train", self.train), ("valid", self.valid), ("test", self.test))]
        return f"HMCSplits(hierarchy={self.hierarchy!r},\n          " + ",\n          ".join(splits) + ")"


def _describe(array: np.ndarray) -> str:
    return f"{array.dtype} {tuple(array.shape)}"


def _error(path: Path, line: int, message: str) -> ValueError:
    return ValueError(f"{path}: line {line}: {message}")


def _read_text(path: Path) -> str:
    """The file's text, gunzipped when it starts with gzip's magic bytes; a byte-order mark dropped and newlines
    normalised to ``\\n``."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: not a valid gzip file ({err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        raise _error(path, line, f"byte {data[err.start]:#04x} is not valid UTF-8; the file must be UTF-8 or "
                                 "ASCII (re-encode it, e.g. `iconv -f latin1 -t utf-8`)") from None
    text = text.removeprefix("\ufeff")  # the UTF-8 byte-order mark some editors write
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unquote(value: str) -> str | None:
    """``value`` without surrounding whitespace and one pair of enclosing quotes (``'...'`` or ``"..."``);
    ``None`` for an unbalanced quote at either end."""
    value = value.strip()
    first, last = value[:1], value[-1:]
    if first in _QUOTES and len(value) >= 2 and last == first:
        return value[1:-1]
    if first in _QUOTES or last in _QUOTES:
        return None
    return value


def _parse_hierarchy(path: Path, line: int, spec: str) -> Hierarchy:
    entries = [e.strip() for e in spec.split(",") if e.strip()]
    if not entries:
        raise _error(path, line, "the hierarchical class attribute lists no labels")
    go_style = any(e.split("/", 1)[0] == _ROOT for e in entries)  # GO: parent/child pairs; FunCat: full paths
    seen: set[str] = set()
    for e in entries:
        if e in seen:
            kind = "pair" if go_style else "label"
            raise _error(path, line, f"the {kind} {e!r} is listed twice in the hierarchical class attribute")
        seen.add(e)
    labels: list[str]
    edges: list[tuple[str, str]] = []
    if go_style:
        nodes: dict[str, None] = {}
        for e in entries:
            parts = e.split("/")
            if len(parts) != 2 or not all(parts):
                raise _error(path, line, f"expected a 'parent/child' pair in the GO hierarchy, got {e!r}")
            parent, child = parts
            if child == _ROOT:
                raise _error(path, line, f"{_ROOT!r} cannot be a child, got the pair {e!r}")
            for name in (parent, child):
                if name != _ROOT:
                    nodes.setdefault(name, None)
            if parent != _ROOT:
                edges.append((parent, child))
        labels = list(nodes)
    else:  # node identity is the full path
        labels = entries
        for e in entries:
            if "/" in e:
                parent = e.rsplit("/", 1)[0]
                if parent not in seen:
                    raise _error(path, line, f"label {e!r} has no parent {parent!r} in the hierarchy")
                edges.append((parent, e))
    try:
        return Hierarchy(labels, edges)
    except ValueError as err:  # a cycle or a self-loop, named by Hierarchy
        raise _error(path, line, str(err)) from None


def load_hmc_arff(path: str | Path) -> HMCData:
    """Read one Clus HMC ARFF file.

    Args:
        path: the ``.arff`` file, or a gzip-compressed ``.arff.gz`` (recognised by its content). UTF-8 text.

    Returns:
        :class:`HMCData` with raw features (NaN for ``?``) and ancestor-closed labels.

    Raises:
        ValueError: naming the file, the 1-based line number and what is wrong: a byte that is not UTF-8, a
            missing ``@DATA`` or class attribute, a cycle, self-loop or repeated entry in the hierarchy, a wrong
            field count, an unbalanced quote, an unknown label, an unparseable number or nominal value, a value that
            is not finite (``inf``, ``nan``: write ``?`` for a missing value) or beyond float32's range. Also a
            corrupt gzip file (naming the file). A file with no data rows is read as ``(0, F)`` features.
    """
    path = Path(path)
    lines = _read_text(path).split("\n")
    names: list[str] = []
    kinds: list[list[str] | None] = []  # None = numeric, else the nominal values
    hierarchy: Hierarchy | None = None
    data_start = None
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("%"):
            continue
        lower = text.lower()
        if lower.startswith("@data"):
            data_start = number
            break
        if not lower.startswith("@attribute"):
            continue
        match = re.match(r"@attribute\s+('[^']*'|\"[^\"]*\"|\S+)\s+(.*)$", text, flags=re.IGNORECASE)
        if match is None:
            raise _error(path, number, f"malformed @ATTRIBUTE line {text[:80]!r}")
        name, kind = match.group(1).strip("'\""), match.group(2).strip()
        if kind.lower().startswith("hierarchical"):
            hierarchy = _parse_hierarchy(path, number, kind[len("hierarchical"):].strip())
            continue
        if hierarchy is not None:
            raise _error(path, number, "attributes after the hierarchical class attribute are not supported")
        names.append(name)
        if kind.lower() in ("numeric", "real", "integer"):
            kinds.append(None)
        elif kind.startswith("{") and kind.endswith("}"):
            values: list[str] = []
            for piece in kind[1:-1].split(","):
                value = _unquote(piece)
                if value is None:
                    raise _error(path, number, f"attribute {name!r}: unbalanced quote in the nominal value "
                                               f"{piece.strip()!r} (a comma inside quotes is not supported)")
                values.append(value)
            kinds.append(values)
        else:
            raise _error(path, number, f"unsupported attribute type {kind[:40]!r} for {name!r}")
    if hierarchy is None:
        raise ValueError(f"{path}: no '@ATTRIBUTE class hierarchical' line before @DATA")
    if data_start is None:
        raise ValueError(f"{path}: no @DATA line")
    rows: list[str] = []
    row_lines: list[int] = []
    for number in range(data_start + 1, len(lines) + 1):
        text = lines[number - 1].strip()
        if text and not text.startswith("%"):
            rows.append(text)
            row_lines.append(number)
    expected = len(names) + 1
    feature_text, label_text = [], []
    for text, number in zip(rows, row_lines):
        fields = text.count(",") + 1
        if fields != expected:
            raise _error(path, number, f"expected {expected} comma-separated fields, got {fields}")
        head, _, tail = text.rpartition(",")
        feature_text.append(head)
        label_text.append(tail)
    X, feature_names = _parse_features(path, feature_text, row_lines, names, kinds)
    Y = np.zeros((len(rows), hierarchy.num_labels), dtype=np.uint8)
    for r, (labels, number) in enumerate(zip(label_text, row_lines)):
        for label in labels.strip().split("@"):
            label = label.strip()
            if not label:
                continue
            if label not in hierarchy:
                raise _error(path, number, f"unknown label {label!r}")
            Y[r, hierarchy.index(label)] = 1
    return HMCData(X=X, Y=hierarchy.propagate(Y), hierarchy=hierarchy, feature_names=feature_names)


def _parse_features(path: Path, feature_text: list[str], row_lines: list[int], names: list[str],
                    kinds: list[list[str] | None]) -> tuple[np.ndarray, tuple[str, ...]]:
    import pandas as pd

    n_rows = len(feature_text)
    if not names:
        return np.zeros((n_rows, 0), dtype=np.float32), ()
    if n_rows:
        frame = pd.read_csv(io.StringIO("\n".join(feature_text)), header=None, dtype=str, keep_default_na=False,
                            na_filter=False, quoting=csv.QUOTE_NONE)  # quotes: removed below, per field
    else:
        frame = pd.DataFrame(columns=range(len(names)), dtype=str)
    blocks: list[np.ndarray] = []
    feature_names: list[str] = []
    quoted_text = any("'" in text or '"' in text for text in feature_text)
    for j, (name, kind) in enumerate(zip(names, kinds)):
        col = frame.iloc[:, j].str.strip()
        missing = (col == "?").to_numpy()  # a quoted '?' is the text ?, not a missing value
        if quoted_text:
            col = _unquote_column(path, row_lines, name, col)
        if kind is None:
            values = pd.to_numeric(col.where(~missing), errors="coerce").to_numpy(dtype=np.float64)
            bad = ~(np.abs(values) <= _FLOAT32_MAX) & ~missing  # NaN compares False: caught here too
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                text = col.iloc[r]
                if np.isnan(values[r]) and text.lower().lstrip("+-") != "nan":
                    problem = f"cannot parse {text!r} as a number"
                elif np.isfinite(values[r]):
                    problem = f"value {text!r} is outside float32's range (±{_FLOAT32_MAX:.8g})"
                else:
                    problem = f"value {text!r} is not finite (write '?' for a missing value)"
                raise _error(path, row_lines[r], f"attribute {name!r}: {problem}")
            blocks.append(values[:, None])
            feature_names.append(name)
        else:
            codes = col.map({value: i for i, value in enumerate(kind)}).to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isnan(codes) & ~missing
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise _error(path, row_lines[r], f"attribute {name!r}: {col.iloc[r]!r} is not one of {kind!r}")
            onehot = np.zeros((n_rows, len(kind)), dtype=np.float64)
            onehot[np.flatnonzero(~missing), codes[~missing].astype(np.int64)] = 1.0
            onehot[missing] = np.nan
            blocks.append(onehot)
            feature_names.extend(f"{name}={v}" for v in kind)
    return np.hstack(blocks).astype(np.float32), tuple(feature_names)


def _unquote_column(path: Path, row_lines: list[int], name: str, col: pd.Series) -> pd.Series:
    """A column of stripped fields with each value's enclosing quotes removed, as :func:`_unquote` does; an
    unbalanced quote is an error naming the line."""
    first, last = col.str[:1], col.str[-1:]
    quoted = first.isin(_QUOTES) & (col.str.len() >= 2) & (first == last)
    unbalanced = ((first.isin(_QUOTES) | last.isin(_QUOTES)) & ~quoted).to_numpy()
    if unbalanced.any():
        r = int(np.flatnonzero(unbalanced)[0])
        raise _error(path, row_lines[r], f"attribute {name!r}: unbalanced quote in {col.iloc[r]!r}")
    unquoted: pd.Series = col.where(~quoted, col.str[1:-1])
    return unquoted


def _arff_files(directory: Path) -> list[Path]:
    return sorted(f for f in directory.iterdir() if f.name.lower().endswith(_SUFFIXES) and f.is_file())


def _find_split(directory: Path, prefix: str, words: tuple[str, ...]) -> Path | None:
    found: dict[str, list[Path]] = {}
    for file in _arff_files(directory):
        name = file.name.lower()
        stem = name[: -len(".arff.gz")] if name.endswith(".gz") else name[: -len(".arff")]
        if not stem.startswith(prefix.lower()):
            continue
        tail = re.split(r"[._]", stem)[-1]
        if tail in words:
            found.setdefault(tail, []).append(file)
    for tail, files in found.items():
        if len(files) > 1:
            raise ValueError(f"{directory / prefix}: several {tail} files: {[f.name for f in files]}; keep one, or "
                             "pass a path prefix that selects one dataset")
    matches = sorted(files[0] for files in found.values())
    return matches[0] if matches else None


def load_hmc(directory_or_prefix: str | Path, standardize: bool = True, merge_valid: bool = False) -> HMCSplits:
    """Load the train / valid / test files of one HMC dataset, preprocessed as C-HMCNN does.

    Missing feature values are replaced by the **training** split's column mean (0 for a column with no observed
    training value) and, with ``standardize=True``, every split is standardised with the training split's mean
    and standard deviation (a column with zero deviation is only centred). Nothing is fitted on valid or test.

    With ``merge_valid=True`` the valid rows are appended to the training split *before* the preprocessing is
    fitted and ``valid`` is ``None``: C-HMCNN's protocol, whose final models train on train + valid.

    Args:
        directory_or_prefix: a dataset folder (e.g. ``../shared/data/hmc/eisen_FUN``) or a path prefix such as
            ``.../eisen_FUN/eisen_FUN``. Recognised names: ``*.train.arff``, ``*.valid.arff``, ``*.test.arff`` and
            ``*_train.arff``, ``*_trainvalid.arff``, ``*_test.arff`` (any case), each also gzip-compressed as
            ``*.arff.gz``.
        standardize: standardise features after imputation.
        merge_valid: train on train + valid (see above); a dataset without a valid split is unaffected.

    Raises:
        ValueError: if the folder does not exist, the train or test file is missing, a split has several files
            (``d.train.arff`` and ``d.train.arff.gz``), a split's file has no data rows (naming it: an empty
            train split would leave nothing to fit the imputation and standardisation on, an empty valid or test
            split nothing to score), the splits disagree on features or hierarchy, or a file is malformed (see
            :func:`load_hmc_arff`; a value that is not finite is refused there, so it cannot spread through
            imputation and standardisation).
    """
    target = Path(directory_or_prefix)
    directory, prefix = (target, "") if target.is_dir() else (target.parent, target.name)
    if not directory.is_dir():
        raise ValueError(f"{target}: the folder {directory} does not exist")
    train_path = _find_split(directory, prefix, ("train", "trainvalid"))
    test_path = _find_split(directory, prefix, ("test",))
    valid_path = _find_split(directory, prefix, ("valid",))
    if train_path is None or test_path is None:
        raise ValueError(f"{target}: expected a train and a test .arff file, found "
                         f"{[p.name for p in _arff_files(directory)]}")
    train = load_hmc_arff(train_path)
    valid = load_hmc_arff(valid_path) if valid_path else None
    test = load_hmc_arff(test_path)
    for split, path, data in (("train", train_path, train), ("valid", valid_path, valid), ("test", test_path, test)):
        if data is not None and len(data.X) == 0:  # nothing to fit the preprocessing on, or to score
            raise ValueError(f"{path}: the {split} split has no data rows after @DATA")
    for split, data in (("valid", valid), ("test", test)):
        if data is None:
            continue
        if data.hierarchy != train.hierarchy:
            raise ValueError(f"{target}: the {split} split's hierarchy differs from the train split's")
        if data.feature_names != train.feature_names:
            raise ValueError(f"{target}: the {split} split's features differ from the train split's")
    if merge_valid and valid is not None:
        train = HMCData(X=np.concatenate([train.X, valid.X]), Y=np.concatenate([train.Y, valid.Y]),
                        hierarchy=train.hierarchy, feature_names=train.feature_names)
        valid = None
    observed = ~np.isnan(train.X)
    counts = observed.sum(0)
    mean = np.where(counts > 0, np.nansum(train.X, 0) / np.maximum(counts, 1), 0.0)
    filled = np.where(observed, train.X, mean)
    std = filled.std(0) if standardize else np.ones_like(mean)
    center = filled.mean(0) if standardize else np.zeros_like(mean)
    std = np.where(std > 0, std, 1.0)

    def prepare(data: HMCData) -> HMCData:
        x = np.where(np.isnan(data.X), mean, data.X)
        x = ((x - center) / std).astype(np.float32)
        return HMCData(X=x, Y=data.Y, hierarchy=train.hierarchy, feature_names=train.feature_names)

    return HMCSplits(train=prepare(train), valid=None if valid is None else prepare(valid), test=prepare(test),
                     hierarchy=train.hierarchy)
