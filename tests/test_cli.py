"""Tests for hierloss.cli: how every command-line mistake is reported (one line on stderr, exit code 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hierloss.cli import main

CONSOLE_SCRIPT = Path(sys.executable).with_name("hierloss")


def _one_line_error(err: str, prog: str) -> str:
    """Check that stderr is exactly one error line from `prog` and return it."""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"{prog}: error: "), err
    return err


@pytest.mark.parametrize(
    ("argv", "prog", "message"),
    [
        (["demo", "--lr", "fast"], "hierloss demo", "argument --lr: invalid float value: 'fast'"),
        (["demo", "--losses", "nope"], "hierloss demo", "argument --losses: invalid choice: 'nope'"),
        (["demo", "--bogus"], "hierloss demo", "unrecognized arguments: --bogus"),
        (["edge-weights", "y.csv"], "hierloss edge-weights", "the following arguments are required: --hierarchy"),
        (["frobnicate"], "hierloss", "argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "hierloss", "choose a command: demo, edge-weights"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(argv: list[str], prog: str, message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An argparse mistake (or no command) returns 2 with one line naming the mistake and pointing to --help."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = _one_line_error(captured.err, prog)
    assert message in err and f"'{prog} --help'" in err
    assert captured.out == ""


def test_help_and_version_still_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--help and --version are not mistakes: argparse prints them and exits 0."""
    for argv in (["--help"], ["--version"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "hierloss" in capsys.readouterr().out


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason=f"no console script at {CONSOLE_SCRIPT}")
def test_console_script_usage_mistake() -> None:
    """The installed `hierloss` script reports a usage mistake as one stderr line and exit code 2."""
    proc = subprocess.run([str(CONSOLE_SCRIPT), "demo", "--epochs", "many"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    assert "argument --epochs: invalid int value: 'many'" in _one_line_error(proc.stderr, "hierloss demo")
