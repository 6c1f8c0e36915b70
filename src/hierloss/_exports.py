"""The public names of a package, gathered from its submodules' ``__all__``: each name is declared once, in the module
that defines it, and adding a loss or a layer is its file plus one import line in its package."""

from __future__ import annotations

import sys

__all__ = ["gather"]


def gather(package: str, *extra: str) -> list[str]:
    """``extra`` then the ``__all__`` of every public submodule of ``package`` imported so far, in import order."""
    names = list(extra)
    prefix = package + "."
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix) and "." not in name[len(prefix):] and not name[len(prefix):].startswith("_"):
            names += [n for n in getattr(module, "__all__", ()) if n not in names]
    return names
