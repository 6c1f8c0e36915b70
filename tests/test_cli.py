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


def test_top_level_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    """`hierloss --help` says what the tool and each command do and how to get a command's help, not how the
    package is built inside."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for internal in ("add_parser", "subparsers", "Namespace", "CommandError", "func"):
        assert internal not in out, internal
    assert "demo" in out and "edge-weights" in out and "hierloss COMMAND --help" in out


def _modules_loaded_by(argv: list[str]) -> set[str]:
    """The modules that `hierloss ARGV` imports beyond `import hierloss` itself, in a fresh interpreter."""
    code = ("import sys, hierloss\n"
            "before = set(sys.modules)\n"
            "from hierloss.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(' '.join(sorted(set(sys.modules) - before)), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(proc.stderr.split())


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["edge-weights", "--help"], ["--version"]])
def test_help_loads_nothing_heavy(argv: list[str]) -> None:
    """--help and --version load no sub-command machinery: not the training loop, pandas, matplotlib, the metrics
    or the datasets."""
    loaded = _modules_loaded_by(argv)
    heavy = {"hierloss.cli._training", "pandas", "matplotlib", "torchmetrics", "hierloss.metrics",
             "hierloss.datasets", "hierloss.edge_weights", "networkx"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_help_does_not_import_torch() -> None:
    """`hierloss --help` appears without importing torch, which alone takes seconds to import."""
    code = ("import sys\nfrom hierloss.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stderr.strip() == "False"


def test_demo_help_names_nothing_a_wheel_user_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    """`hierloss demo --help` points at no file of the repository or of ../shared, and documents --threads."""
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for path in ("benchmarks/", "hmc_quality", "../shared", "scripts/"):
        assert path not in out, path
    assert "--threads" in out
