"""hierloss: hierarchy-aware losses, penalties and metrics for multi-label classification in PyTorch."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hierloss import functional as functional
    from hierloss.hierarchy import Hierarchy as Hierarchy
    from hierloss.layers import *  # noqa: F403
    from hierloss.losses import *  # noqa: F403

try:
    __version__ = version("hierloss")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

#: The packages whose classes are top-level names (``hierloss.HBCELoss``), each declaring them in its ``__all__``.
#: They are imported on first use: ``import hierloss`` (and so the ``hierloss`` command's ``--help``) imports neither
#: torch nor pandas, networkx, matplotlib or torchmetrics.
_CLASS_PACKAGES = ("hierloss.layers", "hierloss.losses")
#: Submodules reachable as attributes (``hierloss.metrics.coherent``), imported on first use.
_SUBMODULES = ("datasets", "edge_weights", "functional", "layers", "losses", "metrics", "propagation", "recipes")


def _classes() -> dict[str, str]:
    """Top-level class name → the package that exports it (imports the packages)."""
    found = {}
    for package in _CLASS_PACKAGES:
        module = importlib.import_module(package)
        found.update({name: package for name in module.__all__ if name[0].isupper()})
    return found


def __getattr__(name: str) -> Any:
    if name == "Hierarchy":
        from hierloss.hierarchy import Hierarchy

        globals()[name] = Hierarchy
        return Hierarchy
    if name in _SUBMODULES:
        return importlib.import_module(f"hierloss.{name}")
    if name == "__all__":
        return sorted(["Hierarchy", "__version__", "functional", *_classes()])
    if name[:1].isupper() and name in (classes := _classes()):
        value = getattr(importlib.import_module(classes[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hierloss' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "Hierarchy", *_classes(), *_SUBMODULES})
