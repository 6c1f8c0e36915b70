"""Tests for hierloss.datasets.hmc: every shared HMC dataset, preprocessing, and broken files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from hierloss.datasets import load_hmc, load_hmc_arff

# name: (features, labels, train, valid, test, is_dag) from ../shared/data/README.md
EXPECTED = {
    "cellcycle_FUN": (77, 499, 1628, 848, 1281, False),
    "derisi_FUN": (63, 499, 1608, 842, 1275, False),
    "eisen_FUN": (79, 461, 1058, 529, 837, False),
    "gasch2_FUN": (52, 499, 1639, 849, 1291, False),
    "spo_FUN": (86, 499, 1600, 837, 1266, False),
    "cellcycle_GO": (77, 4125, 1625, 848, 1278, True),
    "derisi_GO": (63, None, 1605, 842, 1272, True),
    "eisen_GO": (79, None, 1055, 528, 835, True),
    "gasch2_GO": (52, None, 1636, 849, 1288, True),
    "spo_GO": (86, None, 1597, 837, 1263, True),
    "enron": (1001, 56, 988, None, 660, False),
    "imclef07a": (80, 96, 10000, None, 1006, False),
    "diatoms": (371, 398, 2065, None, 1054, False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_dataset(shared_data: Path, name: str) -> None:
    """Shapes match the data README, labels are ancestor-closed, GO hierarchies have multi-parent nodes."""
    features, labels, n_train, n_valid, n_test, is_dag = EXPECTED[name]
    splits = load_hmc(shared_data / "hmc" / name)
    h = splits.hierarchy
    assert splits.train.X.shape == (n_train, features) and splits.train.X.dtype == np.float32
    assert splits.test.X.shape == (n_test, features)
    assert (splits.valid is None) == (n_valid is None)
    if splits.valid is not None:
        assert splits.valid.X.shape[0] == n_valid
    if labels is not None:
        assert h.num_labels == labels
    assert "root" not in h
    for split in (splits.train, splits.test):
        assert split.Y.shape == (split.X.shape[0], h.num_labels) and split.Y.dtype == np.uint8
        np.testing.assert_array_equal(h.propagate(split.Y), split.Y)
        assert not np.isnan(split.X).any()
    multi = sum(len(h.parents(lab)) > 1 for lab in h.labels)
    assert (multi > 0) == is_dag
    if name == "cellcycle_GO":
        assert h.num_edges == 5824 and multi == 1477  # 5,827 header pairs, 3 from the artificial root


def test_funcat_node_identity_is_the_full_path(shared_data: Path) -> None:
    """FunCat nodes are full paths: '01/01' and '02/01' are different labels with different parents."""
    data = load_hmc_arff(shared_data / "hmc" / "eisen_FUN" / "eisen_FUN.train.arff")
    h = data.hierarchy
    assert h.parents("01/01") == ("01",) and h.parents("02/01") == ("02",)
    assert "01" in h.roots


def test_preprocessing_is_fitted_on_train_only(tmp_path: Path) -> None:
    """Imputation uses the training mean and standardisation the training moments, applied to every split."""
    header = "@RELATION t\n@ATTRIBUTE a numeric\n@ATTRIBUTE b {x,y}\n@ATTRIBUTE class hierarchical 1,1/1,2\n@DATA\n"
    (tmp_path / "d.train.arff").write_text(header + "1,x,1/1\n3,y,2\n?,x,1\n")
    (tmp_path / "d.test.arff").write_text(header + "?,?,2\n5,y,1/1@2\n")
    splits = load_hmc(tmp_path / "d")
    raw = load_hmc_arff(tmp_path / "d.train.arff")
    assert raw.feature_names == ("a", "b=x", "b=y") and np.isnan(raw.X[2, 0])
    # train column a = [1, 3, 2 (imputed)] → mean 2, std sqrt(2/3)
    std = np.sqrt(2 / 3)
    np.testing.assert_allclose(splits.train.X[:, 0], [(1 - 2) / std, (3 - 2) / std, 0.0], rtol=1e-6)
    np.testing.assert_allclose(splits.test.X[:, 0], [0.0, (5 - 2) / std], rtol=1e-6)
    assert splits.valid is None
    assert splits.test.Y.tolist() == [[0, 0, 1], [1, 1, 1]]  # 1/1 implies 1


def test_merge_valid_fits_preprocessing_on_train_plus_valid(tmp_path: Path) -> None:
    """merge_valid=True (C-HMCNN's final protocol) appends valid to train before fitting, and drops valid."""
    header = "@RELATION t\n@ATTRIBUTE a numeric\n@ATTRIBUTE class hierarchical 1,1/1,2\n@DATA\n"
    (tmp_path / "d.train.arff").write_text(header + "1,1/1\n3,2\n")
    (tmp_path / "d.valid.arff").write_text(header + "?,1\n8,2\n")
    (tmp_path / "d.test.arff").write_text(header + "4,2\n")
    separate = load_hmc(tmp_path / "d")
    merged = load_hmc(tmp_path / "d", merge_valid=True)
    assert separate.valid is not None and len(separate.train.X) == 2
    assert merged.valid is None and len(merged.train.X) == 4
    assert merged.train.Y.tolist() == [[1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]]
    # train + valid column a = [1, 3, 4 (imputed: mean of 1, 3, 8), 8] → mean 4, population std sqrt(6.5)
    std = np.sqrt(((1 - 4) ** 2 + (3 - 4) ** 2 + 0 + (8 - 4) ** 2) / 4)
    np.testing.assert_allclose(merged.train.X[:, 0], [(1 - 4) / std, (3 - 4) / std, 0.0, (8 - 4) / std], rtol=1e-6)
    np.testing.assert_allclose(merged.test.X[:, 0], [0.0], atol=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1,x,1/1\n1,2\n", r"line 7: expected 3 comma-separated fields, got 2"),
        ("1,x,1/1\n2,x,9/9\n", r"line 7: unknown label '9/9'"),
        ("1,x,1/1\nabc,x,2\n", r"line 7: attribute 'a': cannot parse 'abc' as a number"),
        ("1,z,1/1\n", r"line 6: attribute 'b': 'z' is not one of \['x', 'y'\]"),
    ],
)
def test_broken_rows(tmp_path: Path, body: str, message: str) -> None:
    """Malformed rows raise ValueError naming the file, the 1-based line and the problem."""
    path = tmp_path / "bad.arff"
    path.write_text("@RELATION t\n@ATTRIBUTE a numeric\n@ATTRIBUTE b {x,y}\n@ATTRIBUTE class hierarchical 1,1/1,2\n"
                    "@DATA\n" + body)
    with pytest.raises(ValueError, match=rf"bad\.arff: {message}"):
        load_hmc_arff(path)


def test_broken_headers(tmp_path: Path) -> None:
    """A missing @DATA, class attribute, parent path or malformed GO pair is reported."""
    path = tmp_path / "h.arff"
    path.write_text("@ATTRIBUTE a numeric\n@ATTRIBUTE class hierarchical 1,2\n1,1\n")
    with pytest.raises(ValueError, match=r"h\.arff: no @DATA line"):
        load_hmc_arff(path)
    path.write_text("@ATTRIBUTE a numeric\n@DATA\n1\n")
    with pytest.raises(ValueError, match="no '@ATTRIBUTE class hierarchical' line before @DATA"):
        load_hmc_arff(path)
    path.write_text("@ATTRIBUTE a numeric\n@ATTRIBUTE class hierarchical 1,1/2/3\n@DATA\n")
    with pytest.raises(ValueError, match=r"line 2: label '1/2/3' has no parent '1/2' in the hierarchy"):
        load_hmc_arff(path)
    path.write_text("@ATTRIBUTE a numeric\n@ATTRIBUTE class hierarchical root/A,A/B/C\n@DATA\n")
    with pytest.raises(ValueError, match=r"line 2: expected a 'parent/child' pair in the GO hierarchy, got 'A/B/C'"):
        load_hmc_arff(path)
    path.write_text("@ATTRIBUTE a string\n@ATTRIBUTE class hierarchical 1\n@DATA\n")
    with pytest.raises(ValueError, match=r"line 1: unsupported attribute type 'string' for 'a'"):
        load_hmc_arff(path)


def test_missing_split_files(tmp_path: Path) -> None:
    """load_hmc needs a train and a test file and says which files it found."""
    (tmp_path / "x.train.arff").write_text("@ATTRIBUTE a numeric\n@ATTRIBUTE class hierarchical 1\n@DATA\n1,1\n")
    with pytest.raises(ValueError, match=r"expected a train and a test \.arff file, found \['x\.train\.arff'\]"):
        load_hmc(tmp_path)


_HEADER = "@RELATION t\n@ATTRIBUTE a numeric\n@ATTRIBUTE b numeric\n@ATTRIBUTE class hierarchical 1,1/1,2\n@DATA\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("inf", r"value 'inf' is not finite"),
        ("-inf", r"value '-inf' is not finite"),
        ("Infinity", r"value 'Infinity' is not finite"),
        ("nan", r"value 'nan' is not finite"),
        ("1e400", r"value '1e400' is not finite"),
        ("1e39", r"value '1e39' is outside float32's range"),
        ("-3.5e38", r"value '-3.5e38' is outside float32's range"),
    ],
)
def test_non_finite_feature_is_refused(tmp_path: Path, value: str, message: str) -> None:
    """An infinite, NaN or float32-overflowing feature value raises naming the file, the line and the attribute."""
    path = tmp_path / "bad.arff"
    path.write_text(_HEADER + f"1,2,1/1\n3,{value},2\n")
    with pytest.raises(ValueError, match=rf"bad\.arff: line 7: attribute 'b': {message}"):
        load_hmc_arff(path)


def test_load_hmc_refuses_a_non_finite_value_in_any_split(tmp_path: Path) -> None:
    """One `inf` in the test split stops load_hmc instead of turning a whole column into -inf/NaN everywhere."""
    (tmp_path / "d.train.arff").write_text(_HEADER + "1,2,1/1\n3,4,2\n")
    (tmp_path / "d.test.arff").write_text(_HEADER + "1,2,1/1\n% a comment\ninf,4,2\n")
    with pytest.raises(ValueError, match=r"d\.test\.arff: line 8: attribute 'a': value 'inf' is not finite"):
        load_hmc(tmp_path / "d")


def test_largest_float32_is_accepted(tmp_path: Path) -> None:
    """float32's largest finite value is kept as it is: only values beyond it are refused."""
    top = float(np.finfo(np.float32).max)
    path = tmp_path / "ok.arff"
    path.write_text(_HEADER + f"{top!r},-{top!r},1/1\n")
    np.testing.assert_array_equal(load_hmc_arff(path).X, np.array([[top, -top]], dtype=np.float32))


def test_gzipped_arff_reads_like_the_plain_file(tmp_path: Path) -> None:
    """`.arff.gz` files are read transparently, by load_hmc_arff and by load_hmc's split search."""
    train = _HEADER + "1,2,1/1\n3,?,2\n5,6,1\n"
    test = _HEADER + "?,2,2\n7,8,1/1@2\n"
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir()
    packed.mkdir()
    (plain / "d.train.arff").write_text(train)
    (plain / "d.test.arff").write_text(test)
    (packed / "d.train.arff.gz").write_bytes(gzip.compress(train.encode()))
    (packed / "d.test.arff.gz").write_bytes(gzip.compress(test.encode()))
    raw = load_hmc_arff(packed / "d.train.arff.gz")
    want = load_hmc_arff(plain / "d.train.arff")
    np.testing.assert_array_equal(raw.X, want.X)
    np.testing.assert_array_equal(raw.Y, want.Y)
    for got, ref in ((load_hmc(packed), load_hmc(plain)), (load_hmc(packed / "d"), load_hmc(plain / "d"))):
        assert got.hierarchy == ref.hierarchy and got.valid is None
        np.testing.assert_array_equal(got.train.X, ref.train.X)
        np.testing.assert_array_equal(got.test.X, ref.test.X)
        np.testing.assert_array_equal(got.test.Y, ref.test.Y)


def test_gzipped_arff_errors_name_the_file_and_line(tmp_path: Path) -> None:
    """A bad row in a gzip'ed file names the .gz file and the line of the decompressed text; a corrupt one is named."""
    path = tmp_path / "bad.arff.gz"
    path.write_bytes(gzip.compress((_HEADER + "1,2,1/1\nx,2,2\n").encode()))
    with pytest.raises(ValueError, match=r"bad\.arff\.gz: line 7: attribute 'a': cannot parse 'x' as a number"):
        load_hmc_arff(path)
    path.write_bytes(gzip.compress(_HEADER.encode())[:-6])
    with pytest.raises(ValueError, match=r"bad\.arff\.gz: not a valid gzip file"):
        load_hmc_arff(path)


def test_plain_and_gzipped_copies_of_one_split_are_ambiguous(tmp_path: Path) -> None:
    """load_hmc refuses to guess between `d.train.arff` and `d.train.arff.gz` and names both."""
    (tmp_path / "d.train.arff").write_text(_HEADER + "1,2,1/1\n")
    (tmp_path / "d.train.arff.gz").write_bytes(gzip.compress((_HEADER + "1,2,1/1\n").encode()))
    (tmp_path / "d.test.arff").write_text(_HEADER + "1,2,1/1\n")
    with pytest.raises(ValueError, match=r"several train files: \['d\.train\.arff', 'd\.train\.arff\.gz'\]"):
        load_hmc(tmp_path)


def test_non_utf8_byte_names_file_and_line(tmp_path: Path) -> None:
    """A latin-1 byte raises a ValueError naming the file, the 1-based line and the byte."""
    path = tmp_path / "latin.arff"
    path.write_bytes((_HEADER + "1,2,1/1\n% caf\xe9\n3,4,2\n").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.arff: line 7: byte 0xe9 is not valid UTF-8"):
        load_hmc_arff(path)


def test_line_numbers_count_only_newlines(tmp_path: Path) -> None:
    """A form feed or vertical tab inside a comment does not shift the reported line numbers."""
    path = tmp_path / "ff.arff"
    path.write_text(_HEADER + "% page\x0cbreak\x0b here\n1,x,1/1\n")
    with pytest.raises(ValueError, match=r"ff\.arff: line 7: attribute 'b': cannot parse 'x'"):
        load_hmc_arff(path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("root/A,A/B,B/C,C/A", r"line 2: the hierarchy has a cycle: 'A' → 'B' → 'C' → 'A'"),
        ("root/A,A/B,root/C,A/B", r"line 2: the pair 'A/B' is listed twice"),
        ("root/A,root/A", r"line 2: the pair 'root/A' is listed twice"),
        ("root/A,A/A", r"line 2: edge \('A', 'A'\) is a self-loop"),
        ("root/A,A/root", r"line 2: 'root' cannot be a child"),
        ("1,1/1,2,1/1", r"line 2: the label '1/1' is listed twice"),
    ],
)
def test_broken_hierarchy_header_names_file_and_line(tmp_path: Path, spec: str, message: str) -> None:
    """A cycle, a duplicate pair or label, a self-loop or a child 'root' in the class header names the file and line."""
    path = tmp_path / "go.arff"
    path.write_text(f"@ATTRIBUTE a numeric\n@ATTRIBUTE class hierarchical {spec}\n@DATA\n")
    with pytest.raises(ValueError, match=rf"go\.arff: {message}"):
        load_hmc_arff(path)


def test_missing_folder_is_named(tmp_path: Path) -> None:
    """The folder of a dataset prefix that does not exist is named as such."""
    with pytest.raises(ValueError, match=r"d: the folder .*nope does not exist"):
        load_hmc(tmp_path / "nope" / "d")


def test_repr_summarises_instead_of_printing_arrays(shared_data: Path) -> None:
    """repr of the splits and of one split shows shapes, dtypes and the hierarchy's size, not the raw arrays."""
    splits = load_hmc(shared_data / "hmc" / "eisen_FUN")
    hierarchy = "Hierarchy(num_labels=461, num_edges=443)"
    text = repr(splits)
    assert "array(" not in text and len(text) < 600, text
    assert text.startswith("HMCSplits(") and hierarchy in text
    for name, n in (("train", 1058), ("valid", 529), ("test", 837)):
        assert f"{name}=HMCData(X=float32 ({n}, 79), Y=uint8 ({n}, 461))" in text, text
    assert repr(splits.test) == f"HMCData(X=float32 (837, 79), Y=uint8 (837, 461), hierarchy={hierarchy})"
    without_valid = load_hmc(shared_data / "hmc" / "enron")
    assert "valid=None" in repr(without_valid)
