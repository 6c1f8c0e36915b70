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


#: Twins whose function is not named after the class (``SomeLoss`` -> ``some_loss`` otherwise).
_TWIN_NAMES = {"MultiLabelSoftmaxLoss": "multilabel_softmax_loss", "MaxConstraint": "max_over_descendants",
               "ChainRule": "chain_rule_probs"}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def test_public_names_resolve() -> None:
    """Every name in `hierloss.__all__` exists; the top-level classes are exactly those of hierloss.losses and
    hierloss.layers, and every one of them has its functional twin in hierloss.functional."""
    for name in hierloss.__all__:
        assert hasattr(hierloss, name), name
    classes = [n for pkg in (hierloss.losses, hierloss.layers) for n in pkg.__all__ if n[0].isupper()]
    assert sorted(classes) == sorted(n for n in hierloss.__all__ if n[0].isupper() and n != "Hierarchy")
    assert len(classes) >= 12
    for cls in classes:
        twin = _TWIN_NAMES.get(cls, _snake(cls))
        assert twin in hierloss.functional.__all__, (cls, twin)
        assert callable(getattr(hierloss.functional, twin)), twin
    assert _snake("ChainRuleBCELoss") == "chain_rule_bce_loss" and _snake("MCLoss") == "mc_loss"


def test_each_public_name_is_declared_once() -> None:
    """A package's public names are its submodules' __all__: losses and layers list exactly what their modules
    declare, and functional exactly the functions among them (plus the engine's two functional forms)."""
    for package in (hierloss.losses, hierloss.layers):
        prefix = package.__name__ + "."
        declared = [name for module_name, module in sys.modules.items() if module_name.startswith(prefix)
                    and not module_name[len(prefix):].startswith("_") for name in module.__all__]
        assert sorted(set(package.__all__) - {"hbce_backend"}) == sorted(declared)
    functions = [n for pkg in (hierloss.losses, hierloss.layers) for n in pkg.__all__ if n[0].islower()]
    assert sorted(hierloss.functional.__all__) == sorted(
        {*functions, "max_over_descendants", "min_over_ancestors"} - {"hbce_backend", "coupling_pairs"})


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
