"""Make ``examples/chexpert`` importable, and skip the ``examples`` tests where torchvision is not installed.

Collection never imports torchvision: the test modules that need it import the example's torchvision modules
inside their tests, and are marked ``examples`` (run by ``scripts/test.sh`` in ``.venv-examples``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "chexpert"
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return
    skip = pytest.mark.skip(reason="needs torchvision: run in the examples environment (scripts/test.sh)")
    for item in items:
        if item.get_closest_marker("examples") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def chexpert_labels(shared_data: Path) -> Path:
    """The folder of the real CheXpert test-set label files (skips when ../shared/data is absent)."""
    folder = shared_data / "chexpert"
    if not (folder / "test_labeler.csv").is_file():
        pytest.skip(f"CheXpert label files not found in {folder}")
    return folder
