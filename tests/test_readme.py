"""The README: its Quickstart prints what the README shows, it reads well as a package index's description, and
its set-up scripts say what they do. (That every python block of the README and the docs runs: test_docs.py.)"""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _quickstart_and_output(text: str) -> tuple[str, str]:
    """The Quickstart's python block and the text block that shows its output."""
    section = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    shown = re.search(r"```text\n(.*?)```", section, flags=re.DOTALL)
    assert code and shown, "the Quickstart needs a python block and a text block showing its output"
    return code[1], shown[1]


def _same_up_to_rounding(printed: str, shown: str) -> bool:
    """The texts agree word for word, and every number within 1% (or 0.005), as another CPU may round differently."""
    if NUMBER.sub("#", printed.strip()) != NUMBER.sub("#", shown.strip()):
        return False
    pairs = zip(map(float, NUMBER.findall(printed)), map(float, NUMBER.findall(shown)))
    return all(math.isclose(a, b, rel_tol=0.01, abs_tol=0.005) for a, b in pairs)


def test_quickstart_prints_what_the_readme_shows() -> None:
    """The Quickstart runs, prints the output the README shows, and that output shows the model learned (the loss
    fell) and what `coherent` changed (no violation left)."""
    code, shown = _quickstart_and_output(README.read_text(encoding="utf-8"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md Quickstart", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue()
    assert _same_up_to_rounding(printed, shown), f"the Quickstart printed\n{printed}\nthe README shows\n{shown}"
    before = float(re.search(r"loss before training: (\S+)", printed)[1])  # type: ignore[index]
    after = float(re.search(r"loss after \d+ epochs: (\S+)", printed)[1])  # type: ignore[index]
    assert after < 0.6 * before
    assert re.search(r"coherent: .* 0\.0%$", printed.strip())


def test_output_comparison_tolerates_rounding_only() -> None:
    """The comparison accepts a last-digit difference and refuses other words or numbers."""
    assert _same_up_to_rounding("loss 0.328, 46.2%\n", "loss 0.329, 46.4%")
    assert not _same_up_to_rounding("loss 0.328", "loss 0.400")
    assert not _same_up_to_rounding("loss 0.328", "gain 0.328")


def test_readme_reads_on_a_package_index() -> None:
    """The README is the package's long description: no link or image relative to the repository, no install
    command for a package that is not on PyPI, the CPU build of torch explained, and the repository's scripts
    only under a heading that says they need a clone."""
    text = README.read_text(encoding="utf-8")
    relative = [target for target in re.findall(r"\]\(([^)]+)\)", text) if not re.match(r"https?://|#", target)]
    assert relative == []
    assert not re.search(r"pip install ['\"]?hierloss(\[|['\"\s]|$)", text, flags=re.MULTILINE)
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in text
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading = section.split("\n", 1)[0]
        if "bash scripts/" in section:
            assert "clone" in heading.lower(), heading


def test_demo_script_shows_what_it_is_doing() -> None:
    """scripts/demo.sh lets pip print what it installs (no -q) and announces every step before it runs it."""
    script = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not any(re.search(r"\s(-q|--quiet)\b", line) for line in commands)
    runs = ('"${PIP[@]}"', ".venv/bin/python -m pip", '"$PYTHON" -m venv', "exec ")  # what takes time
    steps = [i for i, line in enumerate(commands) if line.startswith(runs)]
    assert len(steps) >= 4
    for i in steps:
        assert commands[i - 1].startswith("step "), commands[i]
