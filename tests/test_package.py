"""The package itself: a light core import and the public names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import hierloss


def test_core_import_is_light() -> None:
    """`import hierloss` pulls in none of the optional dependencies (metrics, plots, examples)."""
    code = ("import sys, hierloss; print(','.join(m for m in ('torchmetrics', 'sklearn', 'matplotlib', "
            "'torchvision', 'scipy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == ""


def test_public_names_resolve() -> None:
    """Every name in `hierloss.__all__` exists, and each loss class has its functional twin."""
    for name in hierloss.__all__:
        assert hasattr(hierloss, name), name
    twins = {"HBCELoss": "hbce_loss", "HierarchyPenalty": "hierarchy_penalty", "AsymmetricLoss": "asymmetric_loss",
             "FocalLoss": "focal_loss", "ZLPRLoss": "zlpr_loss", "MultiLabelSoftmaxLoss": "multilabel_softmax_loss",
             "MCLoss": "mc_loss", "LabelGraphRefinement": "label_graph_refinement"}
    for cls, fn in twins.items():
        assert cls in hierloss.__all__, cls
        assert callable(getattr(hierloss.functional, fn)), fn


def test_submodules_are_reachable_and_lazy() -> None:
    """After `import hierloss as hl`, `hl.metrics`, `hl.datasets`, `hl.edge_weights`, `hl.losses`, `hl.layers` and
    `hl.functional` work; the optional and heavy dependencies load only when a submodule needing them is used."""
    code = ("import sys, hierloss as hl\n"
            "heavy = ('pandas', 'networkx', 'matplotlib', 'torchmetrics')\n"
            "before = [m for m in heavy if m in sys.modules]\n"
            "assert hl.metrics.coherent and hl.datasets.load_hmc and hl.datasets.chexpert_hierarchy\n"
            "assert hl.edge_weights.ConditionalWeight and hl.losses.HBCELoss and hl.functional.hbce_loss\n"
            "assert hl.layers.MaxConstraint\n"
            "assert 'metrics' in dir(hl)\n"
            "print(','.join(before))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    with pytest.raises(AttributeError, match="module 'hierloss' has no attribute 'no_such_module'"):
        hierloss.no_such_module  # type: ignore[attr-defined]  # noqa: B018


def _pyproject() -> dict[str, object]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_extras_hold_what_the_library_imports() -> None:
    """The `metrics` extra is torchmetrics only (no library module imports scikit-learn); scikit-learn, the tests'
    reference, is a `dev` requirement."""
    extras = _pyproject()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert _names(extras["metrics"]) == {"torchmetrics"}
    assert "scikit-learn" in _names(extras["dev"])
    src = Path(hierloss.__file__).parent
    importers = [p.name for p in src.rglob("*.py") if re.search(r"^\s*(import|from) sklearn", p.read_text(), re.M)]
    assert importers == []


def test_classifiers_describe_a_library() -> None:
    """The trove classifiers do not call the library a pytest plugin, and name the supported Python versions."""
    classifiers = _pyproject()["classifiers"]
    assert isinstance(classifiers, list)
    assert not any(c.startswith("Framework :: Pytest") for c in classifiers)
    assert "Programming Language :: Python :: 3.10" in classifiers
