"""The python blocks of docs/losses.md run in order as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "losses.md"


def test_losses_page_examples_run() -> None:
    """Every python block of docs/losses.md executes, in one namespace, and leaves a finite scalar `loss`."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 3, "docs/losses.md lost its examples"
    namespace: dict[str, object] = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/losses.md block {i}", "exec"), namespace)
    loss = namespace["loss"]
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and bool(torch.isfinite(loss))
