"""The documentation's code runs.

The rule: a Markdown file in docs/ that contains the line MARKER takes part. Then every fenced block opened
with exactly ```python runs, in the order of the file, in one namespace per file (a block may use the names
the blocks before it defined), with a fresh temporary directory as the working directory. Any exception
fails the test, with a traceback in the .md file's line numbers. Blocks fenced otherwise (```bash, ```text)
do not run, nor do files without the marker: their code may need Graphviz, write files, or train for
seconds.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
MARKER = "<!-- docs-test: run the python blocks -->"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def marked_files() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if MARKER in p.read_text(encoding="utf-8").splitlines())


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the block's first code line, its code) for each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_derivatives_md_is_run() -> None:
    names = [p.name for p in marked_files()]
    assert "derivatives.md" in names
    assert len(python_blocks((DOCS / "derivatives.md").read_text(encoding="utf-8"))) >= 10


def test_blocks_are_found_with_their_line_numbers() -> None:
    text = "intro\n```python\na = 1\n```\n\n```bash\nls\n```\n```python\nb = a + 1\nc = 2\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (10, "b = a + 1\nc = 2\n")]


@pytest.mark.parametrize("path", marked_files(), ids=lambda p: p.name)
def test_the_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs.{path.stem}"}
    for line, code in python_blocks(path.read_text(encoding="utf-8")):
        # Padding with newlines makes the traceback's line numbers those of the Markdown file.
        program = compile("\n" * (line - 1) + code, str(path), "exec")
        failure = None
        try:
            exec(program, namespace)
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            where = "".join(traceback.format_list([f for f in frames if f.filename == str(path)]))
            failure = f"{path.name}, the block at line {line}:\n{where}{type(error).__name__}: {error}"
        if failure is not None:
            pytest.fail(failure, pytrace=False)
