"""The ``hierloss`` command line: ``hierloss demo``, ``hierloss edge-weights``.

Each sub-command lives in its own module of this package exposing ``add_parser(subparsers)``, which registers
the sub-command and sets ``func`` (called with the parsed ``argparse.Namespace``, returning an exit code, or
raising ``CommandError`` on a mistake in its arguments or inputs). Those modules import nothing heavy at import
time or in ``add_parser`` (torch, pandas, the training loop load inside ``func``), so ``--help`` is quick.

Every mistake, in the arguments or in the files they name, is reported as one line on stderr
(``hierloss demo: error: ...``) with exit code 2; ``--help`` and ``--version`` exit 0.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hierloss.cli._errors import ArgumentParser, CommandError, UsageError, one_line

__all__ = ["main"]

# Sub-commands and their modules, imported by name.
_COMMANDS: dict[str, str] = {"demo": "demo", "edge-weights": "edge_weights"}

_DESCRIPTION = "Hierarchy-aware losses, layers and metrics for multi-label classification in PyTorch."
_EPILOG = """Run 'hierloss COMMAND --help' for the options of a command, e.g. 'hierloss demo --help'.
A mistake in the arguments prints one line on stderr and exits with code 2."""


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    from hierloss import __version__

    parser = ArgumentParser(prog="hierloss", description=_DESCRIPTION, epilog=_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hierloss {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module_name in _COMMANDS.values():
        module = importlib.import_module(f"hierloss.cli.{module_name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hierloss`` console script; returns the process exit code.

    A mistake in the arguments or in the files they name prints one line on stderr and returns 2.
    """
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        prog = f"hierloss {args.command}" if args.command else "hierloss"
        if extra:
            raise UsageError(prog, f"unrecognized arguments: {' '.join(extra)}")
        if getattr(args, "func", None) is None:
            raise UsageError(prog, f"choose a command: {', '.join(_COMMANDS)}")
    except UsageError as err:
        _report(err.prog, f"{err} (see '{err.prog} --help')")
        return 2
    try:
        code: int = args.func(args)
    except CommandError as err:
        _report(prog, str(err))
        return 2
    return code


def _report(prog: str, message: str) -> None:
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
