"""Every code example in the docs runs, and prints what the page says it prints.

Rules (the same for every page under docs/):
* each ```python block runs; the blocks of one page run in order in one namespace, with cwd = a fresh temporary directory;
* a ```text title="Output" block right after a python block (only blank lines between) is that block's expected stdout,
  compared exactly after stripping trailing whitespace from each line and blank lines at both ends;
* the doctest examples in the module docstrings of peftref.refimpl run with the doctest module.
A failure names the page and the line of the block; tracebacks carry the page's own line numbers.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import peftref.refimpl

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>.*)$")
OUTPUT_INFO = re.compile(r'^text\s+title="Output"\s*$')


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    end: int  # 0-based index of the line after the closing fence
    code: str
    expected: str | None = None  # the Output block that follows, if any


def parse_blocks(text: str, page: str) -> list[Block]:
    """The python blocks of a page, each with its expected output; an Output block must directly follow a python block."""
    lines = text.splitlines()
    blocks: list[Block] = []
    previous_fence_python = False  # was the last fenced block (of any language) a python block?
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = len(match["indent"]), match["fence"], match["info"].strip()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), None)
        if end is None:
            raise AssertionError(f"{page}:{i + 1}: code block is never closed")
        body = "\n".join(line[indent:] for line in lines[i + 1 : end])
        if OUTPUT_INFO.match(info):
            adjacent = previous_fence_python and not any(line.strip() for line in lines[blocks[-1].end : i])
            if not adjacent or blocks[-1].expected is not None:
                raise AssertionError(f"{page}:{i + 1}: an Output block must directly follow a python block")
            blocks[-1].expected = body
        elif info.split()[:1] == ["python"]:
            blocks.append(Block(i + 1, end + 1, body))
        previous_fence_python = info.split()[:1] == ["python"]
        i = end + 1
    return blocks


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n")


def run_page(text: str, page: str) -> int:
    """Run a page's python blocks in order in one namespace (in the current directory); return how many ran."""
    namespace: dict = {"__name__": "__docs__"}
    blocks = parse_blocks(text, page)
    for block in blocks:
        source = "\n" * block.line + block.code  # line numbers in tracebacks are the page's
        stdout = io.StringIO()
        try:
            with contextlib.redirect_stdout(stdout):
                exec(compile(source, page, "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"{page}:{block.line}: python block raised {type(err).__name__}: {err}") from err
        if block.expected is not None and normalise(stdout.getvalue()) != normalise(block.expected):
            raise AssertionError(
                f"{page}:{block.line}: python block printed\n{normalise(stdout.getvalue())}\n"
                f"but the page's Output block says\n{normalise(block.expected)}"
            )
    return len(blocks)


ROOT = DOCS.parent
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_code_blocks_run_and_print_what_the_page_shows(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_page(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def test_method_pages_have_worked_examples_with_checked_output():
    for path in sorted((DOCS / "methods").glob("*.md")):
        blocks = parse_blocks(path.read_text(encoding="utf-8"), path.name)
        assert any(b.expected is not None for b in blocks), f"docs/methods/{path.name}: no python block with a checked Output block"


def test_refimpl_docstring_examples():
    modules = [peftref.refimpl] + [
        importlib.import_module(f"peftref.refimpl.{info.name}") for info in pkgutil.iter_modules(peftref.refimpl.__path__)
    ]
    attempted = 0
    for module in modules:
        result = doctest.testmod(module, verbose=False, report=True)
        assert result.failed == 0, f"{module.__name__}: {result.failed} doctest example(s) failed (see the output above)"
        attempted += result.attempted
    assert attempted > 0, "no doctest examples found in peftref.refimpl"


# The checker itself must be able to fail.

GOOD_PAGE = """# A page

```python
x = 2
print(x + 1)
```

```text title="Output"
3
```

Text, then a block using the namespace of the first one:

```python
print(x * 10)
```

```text title="Output"
20
```
"""


def test_checker_passes_a_correct_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_page(GOOD_PAGE, "good.md") == 2


def test_checker_reports_wrong_output_with_page_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match=r"bad\.md:14: python block printed\n20\nbut the page's Output block says\n21"):
        run_page(GOOD_PAGE.replace("20\n```", "21\n```"), "bad.md")


def test_checker_reports_an_exception_with_page_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match=r"bad\.md:14: python block raised NameError"):
        run_page(GOOD_PAGE.replace("print(x * 10)", "print(y * 10)"), "bad.md")


def test_checker_rejects_an_output_block_without_its_python_block():
    page = "Some text\n\n```text title=\"Output\"\n3\n```\n"
    with pytest.raises(AssertionError, match=r"orphan\.md:3: an Output block must directly follow a python block"):
        parse_blocks(page, "orphan.md")


def test_checker_runs_blocks_in_the_temporary_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_page('```python\nopen("made.txt", "w").write("x")\n```\n', "cwd.md")
    assert (tmp_path / "made.txt").read_text() == "x"
