"""Tests for `hierloss demo`, end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hierloss.cli import _training, main

ROWS = ["BCE", "BCE + coherent", "HBCE", "HBCE + coherent", "HBCE hard", "HBCE hard + coherent", "MCLoss"]


def test_demo_console_entry_point_end_to_end(tmp_path: Path) -> None:
    """`python -m hierloss demo` with the defaults but fewer epochs: one table, every loss, a plot."""
    plot = tmp_path / "demo.png"
    proc = subprocess.run([sys.executable, "-m", "hierloss", "demo", "--epochs", "3", "--plot", str(plot)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "AU(PRC)" in out and "viol@0.5" in out and "viol any" in out and "hF1" in out and "train s" in out
    for row in ROWS:
        assert any(line.startswith(row + " ") or line.startswith(row + "  ") for line in out.splitlines()), row
    assert "epoch" in proc.stderr  # the progress bars go to stderr
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_markdown_subset_of_losses(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--epochs", "2", "--samples", "300", "--losses", "bce", "hbce", "--markdown",
                 "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4  # header, rule, BCE, BCE + coherent, HBCE, HBCE + coherent
    assert not any(line.startswith("| MCLoss") for line in table)


def test_demo_on_a_real_hmc_dataset(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--data", str(shared_data / "hmc" / "eisen_FUN"), "--epochs", "1", "--losses", "bce",
                 "--no-progress", "--hidden", "32"])
    assert code == 0
    out = capsys.readouterr().out
    assert "eisen_FUN" in out and "BCE + coherent" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--data", "/nonexistent/hmc"], "/nonexistent/hmc"),
        (["--samples", "1"], "--samples 1"),
    ],
)
def test_demo_bad_input_exits_2_with_a_message(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err


def _one_line_error(err: str) -> str:
    """Check that stderr is exactly one `hierloss demo: error:` line and return it."""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("hierloss demo: error: "), err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
        (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
        (["--lr", "0"], "--lr must be a positive finite number, got 0"),
        (["--lr=-1e-3"], "--lr must be a positive finite number, got -0.001"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
        (["--dropout", "-0.1"], "--dropout must be in [0, 1), got -0.1"),
        (["--dropout", "nan"], "--dropout must be in [0, 1), got nan"),
        (["--seed", "-1"], "--seed must be in [0, 2**63), got -1"),
        (["--device", "meta"], "--device 'meta': Cannot copy out of meta tensor"),
        (["--device", "nonsense"], "--device 'nonsense'"),
    ],
)
def test_bad_numbers_and_devices_fail_before_training(argv: list[str], message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A non-finite or out-of-range --lr/--dropout/--seed, or an unusable device: one line, exit 2, no training."""
    assert main(["demo", "--no-progress", "--samples", "300", "--epochs", "1", *argv]) == 2
    captured = capsys.readouterr()
    assert message in _one_line_error(captured.err)
    assert captured.out == ""


@pytest.mark.skipif(torch.version.cuda is not None or torch.version.hip is not None,
                    reason="this torch build has CUDA (or ROCm)")
def test_device_cuda_on_a_cpu_only_torch(capsys: pytest.CaptureFixture[str]) -> None:
    """`--device cuda` on a CPU-only torch says CUDA is not available in this torch build."""
    assert main(["demo", "--no-progress", "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert "--device 'cuda': CUDA is not available in this torch build" in _one_line_error(captured.err)
    assert captured.out == ""


def test_device_cuda_without_a_visible_gpu(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """On a CUDA build with no visible GPU, `--device cuda` says no CUDA device is visible."""
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["demo", "--no-progress", "--device", "cuda"]) == 2
    assert "--device 'cuda': no CUDA device is visible" in _one_line_error(capsys.readouterr().err)


def test_device_index_beyond_the_gpus(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`--device cuda:3` on a machine with one GPU names the devices there are."""
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["demo", "--no-progress", "--device", "cuda:3"]) == 2
    assert "--device 'cuda:3': this machine has 1 CUDA device (cuda:0)" in _one_line_error(capsys.readouterr().err)


def test_device_mps_where_unavailable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`--device mps` where MPS is unavailable gets one short line, not torch's dispatcher listing."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert main(["demo", "--no-progress", "--device", "mps"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "--device 'mps': MPS is not available" in err and len(err) < 200


def test_plot_without_matplotlib_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--plot without matplotlib is refused up front, not after all the training."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed, even after another test imported it
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["demo", "--no-progress", "--plot", str(tmp_path / "demo.png")]) == 2
    captured = capsys.readouterr()
    assert "--plot needs matplotlib (pip install 'hierloss[plot]')" in _one_line_error(captured.err)
    assert captured.out == ""


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing/demo.png", "does not exist"),
        ("demo.xyz", "unsupported format 'xyz'"),
        ("demo", "give the file an extension"),
    ],
)
def test_bad_plot_path_fails_before_training(tmp_path: Path, target: str, message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A --plot file in a missing directory, of an unknown format or without extension is refused up front."""
    pytest.importorskip("matplotlib")
    assert main(["demo", "--no-progress", "--plot", str(tmp_path / target)]) == 2
    captured = capsys.readouterr()
    assert message in _one_line_error(captured.err)
    assert captured.out == ""


def test_console_script_bad_dropout() -> None:
    """The installed `hierloss` script: `--dropout 1.5` is one stderr line and exit code 2, no traceback."""
    script = Path(sys.executable).with_name("hierloss")
    if not script.exists():
        pytest.skip(f"no console script at {script}")
    proc = subprocess.run([str(script), "demo", "--dropout", "1.5"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--dropout must be in [0, 1), got 1.5" in _one_line_error(proc.stderr)


@pytest.mark.parametrize(("argv", "expected"), [([], 1), (["--threads", "2"], 2)])
def test_demo_trains_on_one_thread_unless_told(argv: list[str], expected: int, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The demo trains with one torch thread by default (its small MLP gains nothing from more and slows down
    badly on a busy machine), --threads sets another number, and the caller's setting is restored."""
    from hierloss.cli import _training

    seen: list[int] = []
    original = _training.compare

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_training, "compare", spy)
    before = torch.get_num_threads()
    assert main(["demo", "--epochs", "1", "--samples", "300", "--losses", "bce", "--no-progress", *argv]) == 0
    assert seen == [expected]
    assert torch.get_num_threads() == before
    out = capsys.readouterr().out
    assert f"{expected} CPU thread" in out


def test_demo_refuses_zero_threads(capsys: pytest.CaptureFixture[str]) -> None:
    """--threads 0 is one error line and exit code 2, before any training."""
    assert main(["demo", "--no-progress", "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in _one_line_error(capsys.readouterr().err)


def test_demo_prints_how_long_it_took(capsys: pytest.CaptureFixture[str]) -> None:
    """The last line says how long the demo took, so the times quoted in the docs can be rerun."""
    assert main(["demo", "--epochs", "1", "--samples", "300", "--losses", "bce", "--no-progress"]) == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"done in \d+\.\d s \(training \d+\.\d s, 1 CPU thread\)", last), last


@pytest.mark.parametrize(("losses", "noted"), [(["hbce-hard"], True), (["bce", "hbce"], False)])
def test_progress_of_hbce_hard_says_its_loss_can_rise(losses: list[str], noted: bool,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Where the progress of HBCE hard is shown, a note says its loss includes the zero-gradient penalty, so that a
    rising value is not read as divergence; other losses get no note."""
    assert main(["demo", "--epochs", "1", "--samples", "300", "--losses", *losses]) == 0
    err = capsys.readouterr().err
    assert ("zero gradient" in err) is noted, err


def _results(auprc: list[float], violations: list[float]) -> list[_training.Result]:
    """Result rows for the plot: one raw row per AU(PRC) value, with the given violation rates (0 = none)."""
    return [_training.Result(recipe="bce", scores={"auprc": a, "auroc": 0.9, "violation_05": v, "violation_any": v,
                                                   "hf1": 0.5}, train_s=1.0) for a, v in zip(auprc, violations)]


def test_plot_labels_every_bar_and_zooms_on_close_scores() -> None:
    """In the demo figure the scores are written next to their marks, a zero violation rate is labelled "0"
    rather than left as an empty row, and the AU(PRC) axis does not start at 0 when the scores lie close."""
    pytest.importorskip("matplotlib")
    from hierloss.cli.demo import _figure

    fig = _figure(_results([0.283, 0.289], [0.0, 0.25]), "test")
    auprc_axis, violation_axis, _ = fig.axes
    low, high = auprc_axis.get_xlim()
    assert 0.2 < low < 0.283 and 0.289 < high < 0.35
    assert {t.get_text() for t in auprc_axis.texts} >= {"0.283", "0.289"}
    labels = [t.get_text() for t in violation_axis.texts]
    assert labels.count("0") == 2 and labels.count("25%") == 2


def test_demo_conditional_is_scored_once_through_the_chain_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """`--losses conditional` gives one row (no '+ coherent': the chain rule's output is coherent by construction),
    marked and explained in the legend, with no violation."""
    code = main(["demo", "--epochs", "2", "--samples", "300", "--losses", "bce", "conditional", "--markdown",
                 "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3  # header, rule, BCE, BCE + coherent, Conditional
    row = table[-1].split("|")
    assert row[1].strip() == "Conditional (chain rule) (2)"
    assert row[4].strip().startswith("0 ") and row[5].strip().startswith("0 ")  # no violation, at 0.5 or anywhere
    assert "(2) Conditional training predicts through the chain rule" in out
