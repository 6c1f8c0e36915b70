"""The README's quickstart and the getting-started page run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs() -> None:
    """The first python block of the README executes without error."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python code block"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_getting_started_runs() -> None:
    """The python blocks of docs/getting-started.md execute in order, in one namespace, as a reader would."""
    page = README.parent / "docs" / "getting-started.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2, "docs/getting-started.md lost its examples"
    namespace: dict[str, object] = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/getting-started.md block {i}", "exec"), namespace)
    assert "fixed" in namespace


def test_hbce_pages_backend_examples_run() -> None:
    """The python blocks of docs/hbce-internals.md, and the one of docs/hbce.md's "How it runs" section, execute as
    written."""
    docs = README.parent / "docs"
    internals = re.findall(r"```python\n(.*?)```", (docs / "hbce-internals.md").read_text(), flags=re.DOTALL)
    how_it_runs = (docs / "hbce.md").read_text().split("## How it runs", 1)[1]
    blocks = [*internals, *re.findall(r"```python\n(.*?)```", how_it_runs, flags=re.DOTALL)]
    assert len(blocks) == 2, "the HBCE pages lost their backend examples"
    for i, block in enumerate(blocks):
        exec(compile(block, f"HBCE docs block {i}", "exec"), {})
