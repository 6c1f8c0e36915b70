"""Tests for the `hierloss edge-weights` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierloss import Hierarchy
from hierloss.cli import main
from hierloss.datasets import CHEXPERT_OBSERVATIONS, chexpert_hierarchy, chexpert_targets
from hierloss.edge_weights import ConditionalWeight, EdgeWeights


def test_groundtruth_derives_columns_and_writes_csv(shared_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """On raw CheXpert columns the CLI derives the parents first and matches the library's edge weights."""
    src = shared_data / "chexpert" / "test_groundtruth.csv"
    out = tmp_path / "table.csv"
    assert main(["edge-weights", str(src), "--hierarchy", "chexpert", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Enlarged Cardiomediastinum" in printed and "weight" in printed
    want = ConditionalWeight().fit(chexpert_hierarchy(), chexpert_targets(pd.read_csv(src))).table()
    got = pd.read_csv(out)
    assert got["weight"].tolist() == pytest.approx(want["weight"].tolist(), rel=1e-12)
    assert got[["parent", "child"]].values.tolist() == want[["parent", "child"]].values.tolist()


def test_labeler_policies(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The labeler file needs a policy; 'zeros' equals mapping -1/blank to 0 by hand; JSON output loads back."""
    src = shared_data / "chexpert" / "test_labeler.csv"
    assert main(["edge-weights", str(src), "--hierarchy", "chexpert"]) == 2
    assert "pass --uncertain zeros|ones|ignore" in capsys.readouterr().err
    out = tmp_path / "pen.json"
    assert main(["edge-weights", str(src), "--hierarchy", "chexpert", "--uncertain", "zeros", "--out", str(out)]) == 0
    frame = pd.read_csv(src)
    obs = list(CHEXPERT_OBSERVATIONS)
    frame[obs] = frame[obs].fillna(0).replace(-1, 0)
    want = ConditionalWeight().fit(chexpert_hierarchy(), chexpert_targets(frame))
    assert EdgeWeights.from_dict(json.loads(out.read_text())) == want
    assert main(["edge-weights", str(src), "--hierarchy", "chexpert", "--uncertain", "ignore"]) == 0


def test_ignore_leaves_undetermined_columns_missing(tmp_path: Path) -> None:
    """With 'ignore', a parent is 1 if any observation is 1, missing if it depends on a -1, 0 if all known 0; a
    blank observation is 0 (not mentioned), as in the reference."""
    from hierloss.cli.edge_weights import _derive_chexpert

    rows = pd.DataFrame(0.0, index=range(3), columns=list(CHEXPERT_OBSERVATIONS))
    rows.loc[0, "Fracture"] = 1.0
    rows.loc[0, "Support Devices"] = -1.0
    rows.loc[1, "Fracture"] = -1.0
    rows.loc[2, "Edema"] = np.nan
    out = _derive_chexpert(rows, "ignore", True)
    assert out.loc[0, "Other"] == 1.0 and np.isnan(out.loc[1, "Other"]) and out.loc[2, "Other"] == 0.0
    assert out.loc[2, "Uncertain"] == 1.0 and np.isnan(out.loc[1, "Uncertain"]) and out.loc[0, "Uncertain"] == 0
    assert out.loc[0, "Abnormal"] == 1.0 and out.loc[2, "Abnormal"] == 0.0 and np.isnan(out.loc[1, "Abnormal"])


def test_json_hierarchy_and_estimators(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON hierarchy file works with every estimator; errors exit 2 with the message."""
    h = Hierarchy.from_dict({"a": ["b"]})
    hfile = tmp_path / "h.json"
    hfile.write_text(h.to_json())
    csv = tmp_path / "y.csv"
    pd.DataFrame({"a": [0, 0, 1], "b": [1, 0, 1]}).to_csv(csv, index=False)
    for extra in ([], ["--estimator", "beta"], ["--estimator", "fixed", "--value", "0.4"]):
        assert main(["edge-weights", str(csv), "--hierarchy", str(hfile), *extra]) == 0
    assert "0.4" in capsys.readouterr().out
    pd.DataFrame({"a": [0]}).to_csv(csv, index=False)
    assert main(["edge-weights", str(csv), "--hierarchy", str(hfile)]) == 2
    assert "missing hierarchy columns ['b']" in capsys.readouterr().err
    assert main(["edge-weights", str(tmp_path / "nope.csv"), "--hierarchy", str(hfile)]) == 2


def test_python_dash_m(tmp_path: Path) -> None:
    """`python -m hierloss edge-weights --help` works and mentions the CheXpert derivation."""
    done = subprocess.run([sys.executable, "-m", "hierloss", "edge-weights", "--help"], capture_output=True,
                          text=True, timeout=120, check=True)
    assert "chexpert_targets" in done.stdout


def _one_line_error(err: str) -> str:
    """Check that stderr is exactly one `hierloss edge-weights: error:` line and return it."""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("hierloss edge-weights: error: "), err
    return err


@pytest.fixture
def labels_csv(tmp_path: Path) -> Path:
    """A small valid label CSV for the hierarchy {'a': ['b']}."""
    path = tmp_path / "y.csv"
    pd.DataFrame({"a": [0, 0, 1], "b": [1, 0, 1]}).to_csv(path, index=False)
    return path


@pytest.fixture
def hierarchy_json(tmp_path: Path) -> Path:
    """The hierarchy {'a': ['b']} as a JSON file."""
    path = tmp_path / "h.json"
    path.write_text(Hierarchy.from_dict({"a": ["b"]}).to_json())
    return path


def test_unknown_hierarchy_name_is_neither_known_nor_a_file(labels_csv: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`--hierarchy CheXpert` says it is neither a known hierarchy (listing them) nor a file, and suggests one."""
    assert main(["edge-weights", str(labels_csv), "--hierarchy", "CheXpert"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "--hierarchy 'CheXpert' is neither a known hierarchy (chexpert) nor a file" in err
    assert "did you mean 'chexpert'?" in err and "No such file" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is a directory, not a hierarchy JSON file"),
        ("{", "h.json: hierarchy JSON is not valid JSON"),
        ('{"labels": ["a", "b"], "edges": [["a", "b"], ["b", "a"]]}', "h.json: the hierarchy has a cycle"),
        (b"\xff\xfe", "h.json: cannot read the file as UTF-8"),
    ],
)
def test_bad_hierarchy_file_is_named(tmp_path: Path, labels_csv: Path, content: str | bytes | None, message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A directory, broken JSON, an invalid graph or undecodable bytes as --hierarchy: one line naming the file."""
    path = tmp_path / "h.json"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["edge-weights", str(labels_csv), "--hierarchy", str(path)]) == 2
    assert message in _one_line_error(capsys.readouterr().err)


def test_no_uncertain_label_needs_chexpert(labels_csv: Path, hierarchy_json: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--no-uncertain-label with a JSON hierarchy is refused instead of silently ignored."""
    assert main(["edge-weights", str(labels_csv), "--hierarchy", str(hierarchy_json), "--no-uncertain-label"]) == 2
    assert "--no-uncertain-label only applies to --hierarchy chexpert" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("target", ["missing/table.csv", "missing/pen.json", "."])
def test_out_into_a_missing_directory_fails_before_the_table(tmp_path: Path, labels_csv: Path, hierarchy_json: Path,
                                                             target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--out into a missing directory (or onto a directory) is one error line, exit 2, and no table."""
    out = tmp_path / target
    assert main(["edge-weights", str(labels_csv), "--hierarchy", str(hierarchy_json), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = _one_line_error(captured.err)
    assert f"--out {str(out)!r}" in err and ("does not exist" in err or "is a directory" in err)
    assert captured.out == ""


def test_out_write_failure_is_one_line(tmp_path: Path, labels_csv: Path, hierarchy_json: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An OSError while writing --out (disk full, permissions) is one error line naming the file, exit 2."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pd.DataFrame, "to_csv", refuse)
    out = tmp_path / "table.csv"
    assert main(["edge-weights", str(labels_csv), "--hierarchy", str(hierarchy_json), "--out", str(out)]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert f"cannot write {str(out)!r}" in err and "Permission denied" in err


@pytest.mark.parametrize("uncertain", [[], ["--uncertain", "zeros"], ["--uncertain", "ignore"]])
def test_non_numeric_observation_names_the_column(tmp_path: Path, uncertain: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A non-numeric cell in a raw CheXpert observation names the column, the row and the value."""
    frame = pd.DataFrame(0.0, index=range(3), columns=list(CHEXPERT_OBSERVATIONS)).astype(object)
    frame.loc[1, "Edema"] = "yes"
    path = tmp_path / "raw.csv"
    frame.to_csv(path, index=False)
    assert main(["edge-weights", str(path), "--hierarchy", "chexpert", *uncertain]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "column 'Edema' holds the non-numeric value 'yes' (data row 2)" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no columns to parse"),
        ("a,b\n0,1\n1,1,1\n", "Expected 2 fields in line 3, saw 3"),
    ],
)
def test_unreadable_csv_names_the_file(tmp_path: Path, hierarchy_json: Path, text: str, message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """An empty or ragged CSV is one error line that names the file."""
    path = tmp_path / "broken.csv"
    path.write_text(text)
    assert main(["edge-weights", str(path), "--hierarchy", str(hierarchy_json)]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert f"{path}: " in err and message.lower() in err.lower()


def test_missing_labels_file(tmp_path: Path, hierarchy_json: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A labels path that does not exist is one error line naming it."""
    path = tmp_path / "nope.csv"
    assert main(["edge-weights", str(path), "--hierarchy", str(hierarchy_json)]) == 2
    assert f"{str(path)!r} does not exist" in _one_line_error(capsys.readouterr().err)


def test_console_script_unknown_hierarchy(labels_csv: Path) -> None:
    """The installed `hierloss` script: an unknown --hierarchy is one stderr line and exit code 2."""
    script = Path(sys.executable).with_name("hierloss")
    if not script.exists():
        pytest.skip(f"no console script at {script}")
    proc = subprocess.run([str(script), "edge-weights", str(labels_csv), "--hierarchy", "CheXpert"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "neither a known hierarchy (chexpert) nor a file" in _one_line_error(proc.stderr)
