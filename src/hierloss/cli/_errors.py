"""How the command line reports a mistake: one line on stderr, ``PROG: error: MESSAGE``, and exit code 2."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["ArgumentParser", "CommandError", "UsageError", "one_line"]


class CommandError(Exception):
    """A mistake in a command's arguments or inputs; :func:`hierloss.cli.main` prints it as one line, returns 2."""


class UsageError(CommandError):
    """A mistake found while parsing the arguments, with the ``prog`` of the parser that found it."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that raises :class:`UsageError` instead of printing usage and exiting.

    Sub-command parsers inherit the class, so a mistake in any of them is reported by ``main`` as one line.
    ``--help`` and ``--version`` still print and exit 0.
    """

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` with this parser's ``prog`` and argparse's message."""
        raise UsageError(self.prog, message)


def one_line(message: object) -> str:
    """``str(message)`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())
