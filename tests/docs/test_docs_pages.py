"""The site's structure: every page is in the nav, every method has its page built around its module, and the outputs the
pages quote from the command line are what the commands print."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

from peftref import cli, refimpl

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_nav_lists_every_page_and_only_existing_pages():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = nav_pages(config["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(on_disk) - set(in_nav)) == [], "pages missing from the nav in mkdocs.yml"
    assert sorted(set(in_nav) - set(on_disk)) == [], "nav entries in mkdocs.yml without a page in docs/"
    assert len(in_nav) == len(set(in_nav)), "a page is listed twice in the nav"


SECTIONS = ("## The formulas", "## Deriving the", "## Worked example", "## Parameters against", "## What the paper",
            "## Where the")


def test_every_method_has_a_page_built_around_its_module_docstring():
    for method in refimpl.METHODS:
        text = (DOCS / "methods" / f"{method}.md").read_text(encoding="utf-8")
        directive = f"::: peftref.refimpl.{method}\n    options:\n      members: false\n"
        assert directive in text, f"docs/methods/{method}.md does not include the module docstring of peftref.refimpl.{method}"
        positions = [text.find(heading) for heading in SECTIONS]
        assert -1 not in positions and positions == sorted(positions), (
            f"docs/methods/{method}.md must have the sections {SECTIONS} in this order; found at {positions}"
        )


def quoted_block(page: str, title: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    match = re.search(rf'^```text title="{re.escape(title)}"\n(.*?)^```$', text, flags=re.S | re.M)
    assert match, f"docs/{page} has no text block titled {title!r}"
    return match.group(1).rstrip("\n").splitlines()


def test_getting_started_shows_what_peftref_demo_prints(capsys):
    assert cli.main(["demo"]) == 0
    printed = capsys.readouterr().out.rstrip("\n").splitlines()
    quoted = quoted_block("getting-started.md", "peftref demo")
    assert len(quoted) == len(printed) and quoted[:3] == printed[:3], f"header differs:\n{quoted[:3]}\n{printed[:3]}"
    for page_line, run_line in zip(quoted[3 : 3 + len(refimpl.METHODS)], printed[3 : 3 + len(refimpl.METHODS)]):
        page, run = page_line.split(), run_line.split()
        # method, trainable, × LoRA and the adapter effect (float64) must agree; the error is onnxruntime's float32
        # rounding (its digits depend on the CPU kernels, its size must not); fold time and latency are the machine's.
        assert page[:3] + page[4:5] == run[:3] + run[4:5], f"demo row differs: page {page_line!r}, run {run_line!r}"
        assert float(page[3]) < 2e-5 and float(run[3]) < 2e-5, (page_line, run_line)
    assert quoted[3 + len(refimpl.METHODS) :] == printed[3 + len(refimpl.METHODS) :]


def test_griffe_extension_renders_doctests_and_roles_as_markdown():
    spec = importlib.util.spec_from_file_location("griffe_docstrings", DOCS / "scripts" / "griffe_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "Intro, see :func:`peft_locations`.\n\n>>> 1 + 1\n2\n\nAfter (:data:`METHODS`)."
    assert module.to_markdown(text) == (
        "Intro, see `peft_locations`.\n\n```pycon\n>>> 1 + 1\n2\n```\n\nAfter (`METHODS`)."
    )
    assert module.to_markdown(">>> x = 1") == "```pycon\n>>> x = 1\n```"


def test_api_reference_covers_every_subpackage():
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    subpackages = sorted(p.parent.name for p in (ROOT / "peftref").glob("*/__init__.py"))
    documented = set(re.findall(r"^::: (peftref\.\w+)$", api, flags=re.M))
    missing = [f"peftref.{name}" for name in subpackages if f"peftref.{name}" not in documented]
    assert missing == [], f"docs/api.md has no '::: <package>' section for {missing}"
    assert "peftref.adapter" in documented
