"""Tests for benchmarks/hmc_quality.py: the HMC harness's command line on the project's data and on a user's own.

The user's-own-data tests write tiny Clus HMC ARFF datasets in tmp_path and train one epoch of a small MLP.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hmc_quality

LABELS = ("1", "1/1", "1/2", "2", "2/1")
SMALL = ["--hidden", "8", "--lr", "1e-3", "--epochs", "1", "--batch-size", "16", "--losses", "bce", "mcloss"]


def write_dataset(root: Path, name: str, seed: int = 0) -> Path:
    """A tiny FunCat-like dataset: ``root/name/name.{train,valid,test}.arff``, 4 features, 5 labels."""
    rng = np.random.default_rng(seed)
    header = ("@RELATION t\n" + "".join(f"@ATTRIBUTE f{i} numeric\n" for i in range(4))
              + f"@ATTRIBUTE class hierarchical {','.join(LABELS)}\n@DATA\n")
    folder = root / name
    folder.mkdir(parents=True)
    for split, rows in (("train", 48), ("valid", 16), ("test", 32)):
        lines = []
        for _ in range(rows):
            leaves = rng.choice(["1/1", "1/2", "2/1", "2"], size=int(rng.integers(1, 3)), replace=False)
            lines.append(",".join(f"{v:.3f}" for v in rng.normal(size=4)) + "," + "@".join(leaves))
        (folder / f"{name}.{split}.arff").write_text(header + "\n".join(lines) + "\n")
    return folder


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_dataset_outside_the_protocol_needs_its_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dataset not in the protocol table is refused, before any training, naming the settings it lacks; a name
    with no data under --data is refused naming the path."""
    write_dataset(tmp_path / "hmc", "mine_FUN")
    out = tmp_path / "runs.jsonl"
    common = ["--data", str(tmp_path / "hmc"), "--out", str(out)]
    assert hmc_quality.main([*common, "--datasets", "mine_FUN", "--hidden", "8"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'mine_FUN' is not in the protocol table (cellcycle_FUN, " in err
    assert err.rstrip().endswith("give --lr, --epochs")
    assert hmc_quality.main([*common, "--datasets", "mine_FUN", "nothere", *SMALL]) == 2
    assert f"no HMC dataset at {tmp_path / 'hmc' / 'nothere'}" in capsys.readouterr().err
    assert not out.exists()


def test_own_data_rows_skips_and_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--data/--datasets with --hidden/--lr/--epochs trains a new dataset and records every setting and the data's
    fingerprint; the same call again trains nothing and says so per run; another hidden size, or another copy of
    the data with other content, trains again; a copy with the same files is skipped; --table keeps the groups
    apart."""
    write_dataset(tmp_path / "hmc", "mine_FUN")
    out = tmp_path / "runs.jsonl"
    call = ["--data", str(tmp_path / "hmc"), "--datasets", "mine_FUN", "--seeds", "0", "--out", str(out), *SMALL]
    assert hmc_quality.main(call) == 0
    rows = _rows(out)
    assert [(r["loss"], r["output"]) for r in rows] == [("bce", "raw"), ("bce", "coherent"),
                                                       ("mcloss", "max-constraint")]
    fingerprint = hmc_quality.data_fingerprint(tmp_path / "hmc" / "mine_FUN")
    for r in rows:
        assert (r["dataset"], r["data_sha256"], r["full_protocol"]) == ("mine_FUN", fingerprint, False)
        assert {k: r[k] for k in hmc_quality.SETTINGS} == {"epochs": 1, "hidden": 8, "lr": 1e-3, "batch_size": 16,
                                                           "weight_decay": 1e-5, "dropout": 0.7, "num_layers": 3}
    capsys.readouterr()
    assert hmc_quality.main(call) == 0
    assert len(_rows(out)) == 3
    err = capsys.readouterr().err
    assert (f"skipped: mine_FUN bce seed 0 (1 epochs; hidden 8; lr 0.001; batch size 16; weight decay 1e-05; "
            f"dropout 0.7; num layers 3; no protocol; data {fingerprint}): already in {out}") in err
    assert "skipped: mine_FUN mcloss seed 0" in err

    assert hmc_quality.main([*call, "--hidden", "12"]) == 0  # the last --hidden wins: another setting
    assert len(_rows(out)) == 6 and _rows(out)[-1]["hidden"] == 12

    write_dataset(tmp_path / "other", "mine_FUN", seed=1)  # same name, other content
    assert hmc_quality.main([*call[:1], str(tmp_path / "other"), *call[2:]]) == 0
    assert len(_rows(out)) == 9 and _rows(out)[-1]["data_sha256"] != fingerprint
    (tmp_path / "copy").mkdir()
    (tmp_path / "hmc" / "mine_FUN").rename(tmp_path / "copy" / "mine_FUN")  # the same files elsewhere
    capsys.readouterr()
    assert hmc_quality.main([*call[:1], str(tmp_path / "copy"), *call[2:]]) == 0
    assert len(_rows(out)) == 9 and "skipped: mine_FUN bce seed 0" in capsys.readouterr().err

    assert hmc_quality.main(["--table", "--out", str(out)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mine_FUN")]
    bce = [line for line in table if "| BCE |" in line]
    assert len(bce) == 3  # hidden 8, hidden 12, the other data: three groups, never averaged
    assert any("hidden 12" in line for line in bce) and any("data " in line for line in bce)
    assert all("| — | — |" in line for line in table)  # no published numbers for a dataset outside the protocol


def test_out_defaults_to_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Without --out the rows go to ./hmc_quality.jsonl, never to the project's committed table."""
    write_dataset(tmp_path / "hmc", "mine_FUN")
    before = hmc_quality.RESULTS.read_bytes()
    monkeypatch.chdir(tmp_path)
    assert hmc_quality.main(["--data", "hmc", "--datasets", "mine_FUN", "--seeds", "0", *SMALL]) == 0
    assert len(_rows(tmp_path / "hmc_quality.jsonl")) == 3
    assert hmc_quality.RESULTS.read_bytes() == before
    monkeypatch.chdir(tmp_path / "hmc")
    assert hmc_quality.main(["--table"]) == 2
    assert "no results file hmc_quality.jsonl" in capsys.readouterr().err


def test_rows_without_the_new_keys_read_as_the_protocol() -> None:
    """A row written before the settings and the fingerprint were recorded reads as the protocol's settings and
    data, so the project's results file keeps its keys: a protocol run of a dataset in it is skipped, a run with
    any other setting or data is not, and only the protocol's settings and files are 'full protocol'."""
    old = {"dataset": "eisen_FUN", "seed": 0, "loss": "bce", "output": "raw", "epochs": 110, "hidden": 500,
           "lr": 1e-4, "batch_size": 4}
    filled = hmc_quality.with_defaults(old)
    assert filled["data_sha256"] == hmc_quality.FINGERPRINTS["eisen_FUN"]
    assert (filled["weight_decay"], filled["dropout"], filled["num_layers"], filled["fine_tune_epochs"]) == (
        1e-5, 0.7, 3, None)
    protocol = hmc_quality.protocol_settings("eisen_FUN")
    assert protocol is not None
    new = {"dataset": "eisen_FUN", "data_sha256": hmc_quality.FINGERPRINTS["eisen_FUN"], **protocol, "seed": 0,
           "loss": "bce"}
    assert hmc_quality.run_key(filled) == hmc_quality.run_key(hmc_quality.with_defaults(new))
    assert hmc_quality.run_key(filled) != hmc_quality.run_key(hmc_quality.with_defaults({**new, "dropout": 0.5}))
    assert hmc_quality.run_key(filled) != hmc_quality.run_key(hmc_quality.with_defaults({**new, "data_sha256": "x"}))
    assert hmc_quality.is_full_protocol("eisen_FUN", hmc_quality.FINGERPRINTS["eisen_FUN"], protocol)
    assert not hmc_quality.is_full_protocol("eisen_FUN", hmc_quality.FINGERPRINTS["eisen_FUN"],
                                            {**protocol, "lr": 1e-3})
    assert not hmc_quality.is_full_protocol("eisen_FUN", "0123456789abcdef", protocol)
    key = hmc_quality.setting_key(hmc_quality.with_defaults({**new, "epochs": 1, "hidden": 32}))
    assert hmc_quality.describe(key) == "1 (reduced; protocol 110); hidden 32 (protocol 500)"
    assert hmc_quality.describe(key, long=False) == "1 epochs; hidden 32"
    committed = hmc_quality.done_runs(hmc_quality.RESULTS)
    assert hmc_quality.run_key(hmc_quality.with_defaults(new)) in committed


def test_fingerprints_are_the_project_s_files(shared_data: Path) -> None:
    """FINGERPRINTS holds data_fingerprint of every protocol dataset as the project keeps it."""
    assert set(hmc_quality.FINGERPRINTS) == set(hmc_quality.PROTOCOL)
    for name, fingerprint in hmc_quality.FINGERPRINTS.items():
        assert hmc_quality.data_fingerprint(shared_data / "hmc" / name) == fingerprint, name


def test_fingerprint_follows_content_not_names(tmp_path: Path) -> None:
    """The fingerprint changes with a file's content, not with its folder or a gzip compression."""
    import gzip

    first = write_dataset(tmp_path / "a", "x")
    fingerprint = hmc_quality.data_fingerprint(first)
    assert hmc_quality.data_fingerprint(first / "x") == fingerprint  # a path prefix, as load_hmc takes
    (first / "x.test.arff").write_bytes(gzip.compress((first / "x.test.arff").read_bytes()))
    (first / "x.test.arff").rename(first / "x.test.arff.gz")
    assert hmc_quality.data_fingerprint(first) == fingerprint
    with (first / "x.valid.arff").open("a") as f:
        f.write("0,0,0,0,1\n")
    assert hmc_quality.data_fingerprint(first) != fingerprint


@pytest.mark.parametrize(("argv", "message"), [
    (["--lr", "0"], "--lr must be a positive number, got 0"),
    (["--hidden", "-3"], "--hidden must be a positive number, got -3"),
    (["--dropout", "1"], "--dropout must be in [0, 1), got 1"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0, got nan"),
])
def test_bad_settings_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A setting out of range stops the command with argparse's message naming it."""
    with pytest.raises(SystemExit) as exit_info:
        hmc_quality.main([*argv, "--table"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_appends_rows_skips_done_runs_and_stacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """hmc_quality.py (1 reduced epoch on eisen_FUN): one row per output, runs already in the file are skipped,
    --stack trains the remaining runs together and says so in the row, and --table shows every method."""
    if not hmc_quality.HMC.is_dir():
        pytest.skip(f"HMC datasets not found at {hmc_quality.HMC}")
    out = tmp_path / "q.jsonl"
    common = ["--datasets", "eisen_FUN", "--epochs", "1", "--out", str(out)]
    assert hmc_quality.main([*common, "--seeds", "0", "--losses", "bce", "mcloss"]) == 0
    rows = _rows(out)
    assert [(r["seed"], r["loss"], r["output"]) for r in rows] == [(0, "bce", "raw"), (0, "bce", "coherent"),
                                                                   (0, "mcloss", "max-constraint")]
    assert all(r["epochs"] == 1 and not r["full_protocol"] and r["hidden"] == 500 for r in rows)
    assert all(r["data_sha256"] == hmc_quality.FINGERPRINTS["eisen_FUN"] for r in rows)
    assert hmc_quality.main([*common, "--seeds", "0", "1", "--losses", "bce", "mcloss", "--stack"]) == 0
    rows = _rows(out)
    new = rows[3:]
    assert [(r["seed"], r["loss"]) for r in new] == [(1, "bce"), (1, "bce"), (1, "mcloss")]
    assert all(str(r["where"]).endswith("; 2 networks stacked") for r in new)
    capsys.readouterr()
    assert hmc_quality.main(["--table", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    for method in ("| BCE |", "| BCE + coherent |", "| MCLoss |"):
        assert f"| eisen_FUN | 1 (reduced; protocol 110) {method} 0,1 |" in table
    assert "| 0.306 | 0.298 |" in table  # published C-HMCNN and HMCN-F AU(PRC) beside ours
    assert hmc_quality.main(["--table", "--out", str(out), "--datasets", "derisi_FUN"]) == 0
    only_other = capsys.readouterr().out
    assert "| dataset | epochs | method |" in only_other and "eisen_FUN" not in only_other


def test_by_seed_pairs_methods_with_each_baseline_of_the_same_settings() -> None:
    """--by-seed: one line per (dataset, settings, seed) with each method's difference to each baseline of the same
    seed and settings (a missing baseline or method shows '—'), then per dataset and settings and over all pairs
    the mean difference and the wins; rows of other settings never pair."""

    def row(dataset: str, seed: int, loss: str, output: str, auprc: float, hf1: float = 0.5,
            **settings: object) -> dict[str, object]:
        return {"dataset": dataset, "epochs": 7, "seed": seed, "loss": loss, "output": output, "auprc": auprc,
                "hf1": hf1, "violation_any": 0.0, **settings}

    rows = [row("eisen_FUN", 0, "bce", "coherent", 0.30), row("eisen_FUN", 0, "mcloss", "max-constraint", 0.31),
            row("eisen_FUN", 0, "conditional", "chain-rule", 0.305),
            row("eisen_FUN", 1, "bce", "coherent", 0.20), row("eisen_FUN", 1, "mcloss", "max-constraint", 0.25),
            row("eisen_FUN", 1, "conditional", "chain-rule", 0.21),
            row("eisen_FUN", 1, "conditional-ft", "chain-rule", 0.26),
            row("eisen_FUN", 1, "bce", "coherent", 0.99, hidden=32),  # another setting: not a baseline here
            row("spo_FUN", 0, "conditional", "chain-rule", 0.1),
            row("spo_FUN", 0, "bce", "raw", 0.9)]  # BCE's raw output is not a baseline
    text = hmc_quality.by_seed(rows, ["Conditional (chain rule)", "Conditional + fine-tuning (chain rule)"])
    lines = text.splitlines()
    assert lines[2] == ("| eisen_FUN | 7 (reduced; protocol 110) | 0 | 0.3000 / 0.5000 | 0.3100 / 0.5000 | "
                        "0.3050 / 0.5000 / 0.0% | +0.0050 | -0.0050 | — | — | — |")
    assert lines[3] == ("| eisen_FUN | 7 (reduced; protocol 110) | 1 | 0.2000 / 0.5000 | 0.2500 / 0.5000 | "
                        "0.2100 / 0.5000 / 0.0% | +0.0100 | -0.0400 | 0.2600 / 0.5000 / 0.0% | +0.0600 | +0.0100 |")
    assert lines[4] == ("| spo_FUN | 7 (reduced; protocol 115) | 0 | — | — | 0.1000 / 0.5000 / 0.0% | — | — | — | — "
                        "| — |")
    assert ("- Conditional (chain rule) vs BCE + coherent, eisen_FUN (7 epochs): mean Δ AU(PRC) +0.0075, higher on 2 "
            "of 2 seeds") in lines
    assert ("- **Conditional (chain rule) vs MCLoss, all pairs: mean Δ AU(PRC) -0.0225, higher on 0 of 2 seeds; "
            "mean Δ above 0 on 0 of 1 datasets**") in lines
    assert ("- **Conditional + fine-tuning (chain rule) vs MCLoss, all pairs: mean Δ AU(PRC) +0.0100, higher on 1 of "
            "1 seeds; mean Δ above 0 on 1 of 1 datasets**") in lines
