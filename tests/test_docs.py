"""Every python block of README.md and docs/**/*.md runs as written, page by page, as a reader would run it.

A page's blocks run in order in one namespace, in a folder with ``../shared`` beside it (as the repository root
has), so the files a block writes do not land in the checkout. A block of ``>>>`` lines runs as a doctest: its
shown output must be what it prints. A block whose first line is a comment saying it needs a GPU or the
reader's own data (``# needs a GPU: ...``, ``# needs your own images: ...``) is skipped, and the skipped blocks
are listed in ``SKIPPED`` so that skipping cannot grow unnoticed.
"""

from __future__ import annotations

import doctest
import linecache
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: A fenced python block, possibly indented (inside a list item or an admonition).
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.DOTALL | re.MULTILINE)
#: The first line of a block that cannot run here.
NEEDS = re.compile(r"#\s*needs (a GPU|your own \w+)\b", re.IGNORECASE)
#: (page, block number) of every block skipped by its first line; empty: every block runs.
SKIPPED: set[tuple[str, int]] = set()


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else str(page)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The python blocks of a page: (line number of the fence, dedented code)."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK.finditer(text):
        indent = len(match["indent"])
        code = "".join(line[indent:] for line in match["code"].splitlines(keepends=True))
        blocks.append((text.count("\n", 0, match.start()) + 1, code))
    return blocks


def _skipped(code: str) -> bool:
    first = code.lstrip("\n").split("\n", 1)[0]
    return NEEDS.match(first.strip()) is not None


def test_blocks_are_found() -> None:
    """The block finder sees the README's Quickstart and the blocks of several pages, and nothing is skipped
    that is not listed in SKIPPED."""
    by_page = {_name(page): python_blocks(page) for page in PAGES}
    assert by_page["README.md"], "README.md has no python block"
    assert sum(len(blocks) > 0 for blocks in by_page.values()) >= 8
    skipped = {(name, i) for name, blocks in by_page.items() for i, (_, code) in enumerate(blocks) if _skipped(code)}
    assert skipped == SKIPPED


def test_skip_marker_is_the_first_line_only() -> None:
    """Only a first-line comment saying what the block needs skips it; the words elsewhere do not."""
    assert _skipped("# needs a GPU: the CUDA graphs example\nimport torch\n")
    assert _skipped("\n# Needs your own images: a folder of PNGs\nx = 1\n")
    assert not _skipped("import torch\n# needs a GPU\n")
    assert not _skipped("# this needs nothing\n")


def test_runner_shares_a_namespace_and_checks_doctest_output(tmp_path: Path) -> None:
    """Blocks of a page share names, a skipped block does not run, and a doctest whose shown output differs from
    what it prints fails."""
    page = tmp_path / "page.md"
    fence = "```"
    page.write_text(f"{fence}python\nx = 2\n{fence}\n\n{fence}python\n# needs a GPU: shown only\nx = 0\n{fence}\n\n"
                    f"- item\n\n    {fence}python\n    >>> x + 1\n    3\n    {fence}\n")
    assert _run_page(page) == 2
    page.write_text(page.read_text().replace("    3\n", "    4\n"))
    with pytest.raises(AssertionError, match=r"Expected:\s+4\s+Got:\s+3"):
        _run_page(page)


def _run_page(page: Path) -> int:
    """Run the page's blocks in order in one namespace; return how many ran."""
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for i, (line, code) in enumerate(python_blocks(page)):
        where = f"{_name(page)} block {i} (line {line})"
        if _skipped(code):
            continue
        if code.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(code, namespace, where, str(page), line)
            runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
            report: list[str] = []
            result = runner.run(test, out=report.append, clear_globs=False)
            assert result.failed == 0, f"{where}:\n{''.join(report)}"
            namespace.update(test.globs)
        else:
            linecache.cache[where] = (len(code), None, code.splitlines(keepends=True), where)  # for tracebacks
            exec(compile(code, where, "exec"), namespace)
        ran += 1
    return ran


@pytest.mark.parametrize("page", [page for page in PAGES if python_blocks(page)], ids=_name)
def test_page_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block of the page runs as written, in order, in one namespace, from a folder with ../shared
    beside it; doctest blocks print what they show."""
    if "../shared/" in page.read_text(encoding="utf-8") and not SHARED.is_dir():
        pytest.skip(f"{_name(page)} reads ../shared/data, which is not beside the project ({SHARED})")
    workdir = tmp_path / "project"
    workdir.mkdir()
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    monkeypatch.chdir(workdir)
    try:
        assert _run_page(page) > 0
    finally:
        import sys

        import torch.distributed as dist

        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
