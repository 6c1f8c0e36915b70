"""The ``hierloss`` command line: ``hierloss demo``, ``hierloss penalties``.

Each sub-command lives in its own module of this package exposing ``add_parser(subparsers)``, which registers
the sub-command and sets ``func`` (called with the parsed ``argparse.Namespace``, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Sub-command modules, imported lazily by name so that `hierloss --help` stays fast.
_COMMANDS: tuple[str, ...] = ("demo", "penalties")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    from hierloss import __version__

    parser = argparse.ArgumentParser(prog="hierloss", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hierloss {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        module = importlib.import_module(f"hierloss.cli.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hierloss`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
