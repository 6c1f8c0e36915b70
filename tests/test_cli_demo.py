"""Tests for `hierloss demo`, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hierloss.cli import main

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
