"""Write docs/benchmarks.md and its plots from benchmarks/results/*.json: ``python docs/scripts/make_benchmark_figures.py``.

Each results file is what a benchmark script in benchmarks/ writes: ``{"name", "machine", "date", "rows": [{...}, ...]}``.
For each file the page gets a section with the machine and date, the file's other top-level fields (its settings), a table
of all rows, and a bar chart of the row values
whose key contains "ratio" (ours / PEFT, ours / a physical limit, ...), one bar per row labelled by its non-numeric
values. Rerun it after rerunning the benchmarks; the page is generated, never edited by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
FIGURES = ROOT / "docs" / "figures" / "benchmarks"
REQUIRED = ("name", "machine", "date", "rows")
MARKDOWN_SPECIAL = re.compile(r"([\\`*|])")  # would start emphasis, code or a table cell inside a cell

INTRO = """# Benchmarks

Performance is measured, not assumed. Each script in `benchmarks/` times peftref side by side with a peer (Hugging Face
PEFT, torch) or a physical limit (memory bandwidth, a dense matrix product) in one run, prints the ratios, and writes its
results to `benchmarks/results/<name>.json`. This page is generated from those files by
`docs/scripts/make_benchmark_figures.py`; the machine and date of every measurement come from the file. The columns are the
benchmark scripts' own (each script's docstring defines them); the plots show every column whose name contains "ratio",
with parity (1) marked.

To refresh it, rerun the benchmarks, then:

```bash
python docs/scripts/make_benchmark_figures.py
```
"""


def load(path: Path) -> dict:
    """One results file, checked: a JSON object with the required keys and a list of row objects."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path}: expected a JSON object with keys {list(REQUIRED)}, got {type(result).__name__}")
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; expected {list(REQUIRED)}")
    rows = result["rows"]
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: 'rows' must be a non-empty list of objects")
    return result


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def text(value) -> str:
    """A value as plain text: floats to 4 significant digits, lists of ints as a×b (shapes), other lists as a, b, …
    (repeated measurements), mappings as k=v."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, int) for v in value):
            return "×".join(str(v) for v in value)
        return ", ".join(text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={text(v)}" for k, v in value.items())
    return str(value)


def cell(value) -> str:
    """A value as Markdown text, for the page."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text(value))


def columns(rows: list[dict]) -> list[str]:
    """All keys, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def ratio_columns(rows: list[dict]) -> list[str]:
    return [key for key in columns(rows) if "ratio" in key.lower() and all(is_number(row[key]) for row in rows if key in row)]


def label(row: dict) -> str:
    return " · ".join(text(value) for value in row.values() if not is_number(value)) or "row"


def plot(result: dict, path: Path) -> bool:
    """A horizontal bar chart of the ratio columns, one group per row; False (and no file) if there are none."""
    rows, keys = result["rows"], ratio_columns(result["rows"])
    if not keys:
        return False
    height = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.35 * len(rows) * len(keys)))
    for k, key in enumerate(keys):
        positions = [i + k * height for i in range(len(rows))]
        ax.barh(positions, [row.get(key, float("nan")) for row in rows], height=height, label=key)
    ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
    values = [row[key] for row in rows for key in keys if key in row and row[key] > 0]
    if values and max(values) / min(values) > 20:
        ax.set_xscale("log")
    ax.set_yticks([i + (len(keys) - 1) * height / 2 for i in range(len(rows))], [label(row) for row in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (1 = parity)", fontsize=8)
    ax.set_title(f"{result['name']}\n{text(result['machine'])}, {result['date']}", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


def section(result: dict, figure: str | None) -> str:
    rows, keys = result["rows"], columns(result["rows"])
    settings = [f"- {key}: {cell(value)}" for key, value in result.items() if key not in REQUIRED]
    lines = [f"## {result['name']}", "", f"Measured on {cell(result['machine'])}, {result['date']}.", ""]
    lines += settings + [""] if settings else []
    lines += ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    lines += ["| " + " | ".join(cell(row[key]) if key in row else "" for key in keys) + " |" for row in rows]
    if figure:
        lines += ["", f"![{result['name']}]({figure})"]
    return "\n".join(lines) + "\n"


def build(results_dir: Path, page: Path, figures_dir: Path) -> list[str]:
    """Write the page and the figures (removing plots of results that are gone); return the benchmark names."""
    results = [load(path) for path in sorted(results_dir.glob("*.json"))]  # all checked before anything is written
    figures_dir.mkdir(parents=True, exist_ok=True)
    sections, plotted = [], set()
    for result in results:
        png = figures_dir / f"{result['name']}.png"
        if plot(result, png):
            plotted.add(png.name)
        link = Path(os.path.relpath(png, page.parent)).as_posix() if png.name in plotted else None
        sections.append(section(result, link))
    for stale in figures_dir.glob("*.png"):
        if stale.name not in plotted:
            stale.unlink()
    if not results:
        sections.append("No results yet: run the scripts in `benchmarks/`, then this page's generator.\n")
    page.write_text(INTRO + "\n" + "\n".join(sections), encoding="utf-8")
    return [result["name"] for result in results]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"directory of results JSON (default {RESULTS})")
    parser.add_argument("--page", type=Path, default=PAGE, help=f"the page to write (default {PAGE})")
    parser.add_argument("--figures", type=Path, default=FIGURES, help=f"directory for the plots (default {FIGURES})")
    args = parser.parse_args(argv)
    try:
        names = build(args.results, args.page, args.figures)
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {args.page} ({len(names)} benchmark(s): {', '.join(names) or 'none'})")


if __name__ == "__main__":
    main()
