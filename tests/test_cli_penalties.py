"""Tests for the `hierloss penalties` command line."""

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
from hierloss.hierarchies import CHEXPERT_OBSERVATIONS, chexpert, chexpert_targets
from hierloss.penalties import ConditionalPenalty, EdgePenalties


def test_groundtruth_derives_columns_and_writes_csv(shared_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """On raw CheXpert columns the CLI derives the parents first and matches the library's penalties."""
    src = shared_data / "chexpert" / "test_groundtruth.csv"
    out = tmp_path / "table.csv"
    assert main(["penalties", str(src), "--hierarchy", "chexpert", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Enlarged Cardiomediastinum" in printed and "penalty" in printed
    want = ConditionalPenalty().fit(chexpert(), chexpert_targets(pd.read_csv(src))).table()
    got = pd.read_csv(out)
    assert got["penalty"].tolist() == pytest.approx(want["penalty"].tolist(), rel=1e-12)
    assert got[["parent", "child"]].values.tolist() == want[["parent", "child"]].values.tolist()


def test_labeler_policies(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The labeler file needs a policy; 'zeros' equals mapping -1/blank to 0 by hand; JSON output loads back."""
    src = shared_data / "chexpert" / "test_labeler.csv"
    assert main(["penalties", str(src), "--hierarchy", "chexpert"]) == 2
    assert "pass --uncertain zeros|ones|ignore" in capsys.readouterr().err
    out = tmp_path / "pen.json"
    assert main(["penalties", str(src), "--hierarchy", "chexpert", "--uncertain", "zeros", "--out", str(out)]) == 0
    frame = pd.read_csv(src)
    obs = list(CHEXPERT_OBSERVATIONS)
    frame[obs] = frame[obs].fillna(0).replace(-1, 0)
    want = ConditionalPenalty().fit(chexpert(), chexpert_targets(frame))
    assert EdgePenalties.from_dict(json.loads(out.read_text())) == want
    assert main(["penalties", str(src), "--hierarchy", "chexpert", "--uncertain", "ignore"]) == 0


def test_ignore_uses_three_valued_logic(tmp_path: Path) -> None:
    """With 'ignore', a parent is 1 if any observation is 1, missing if unknown, 0 if all known 0."""
    from hierloss.cli.penalties import _derive_chexpert

    rows = pd.DataFrame(0.0, index=range(3), columns=list(CHEXPERT_OBSERVATIONS))
    rows.loc[0, "Fracture"] = 1.0
    rows.loc[0, "Support Devices"] = -1.0
    rows.loc[1, "Fracture"] = np.nan
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
        assert main(["penalties", str(csv), "--hierarchy", str(hfile), *extra]) == 0
    assert "0.4" in capsys.readouterr().out
    pd.DataFrame({"a": [0]}).to_csv(csv, index=False)
    assert main(["penalties", str(csv), "--hierarchy", str(hfile)]) == 2
    assert "missing hierarchy columns ['b']" in capsys.readouterr().err
    assert main(["penalties", str(tmp_path / "nope.csv"), "--hierarchy", str(hfile)]) == 2


def test_python_dash_m(tmp_path: Path) -> None:
    """`python -m hierloss penalties --help` works and mentions the CheXpert derivation."""
    done = subprocess.run([sys.executable, "-m", "hierloss", "penalties", "--help"], capture_output=True,
                          text=True, timeout=120, check=True)
    assert "chexpert_targets" in done.stdout
