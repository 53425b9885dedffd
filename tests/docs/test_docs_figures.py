"""The figure and page generators in docs/scripts run, and what they make is what the docs show."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCRIPTS = DOCS / "scripts"
MAX_FIGURE_BYTES = 100 * 1024  # the budget per committed PNG


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_figures = load_script("make_figures")
make_benchmark_figures = load_script("make_benchmark_figures")


def test_make_figures_writes_every_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "make_figures.py"), "--out", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == sorted(make_figures.DRAWINGS), f"make_figures.py wrote {written}"
    for path in tmp_path.glob("*.png"):
        image = matplotlib.image.imread(path)  # a real PNG, not an empty file
        assert image.ndim == 3 and min(image.shape[:2]) >= 200, f"{path.name}: unexpected image shape {image.shape}"
        assert path.stat().st_size <= MAX_FIGURE_BYTES, f"{path.name}: {path.stat().st_size} bytes > {MAX_FIGURE_BYTES}"


def test_committed_figures_are_the_scripts_and_small():
    committed = sorted(p.name for p in (DOCS / "figures").glob("*.png"))
    assert committed == sorted(make_figures.DRAWINGS), "docs/figures/ differs from make_figures.DRAWINGS: rerun the script"
    for name in committed:
        size = (DOCS / "figures" / name).stat().st_size
        assert size <= MAX_FIGURE_BYTES, f"docs/figures/{name}: {size} bytes > {MAX_FIGURE_BYTES}"


def test_every_figure_is_shown_on_its_method_page():
    for name in make_figures.DRAWINGS:
        page = DOCS / "methods" / name.replace(".png", ".md")
        assert f"](../figures/{name})" in page.read_text(encoding="utf-8"), f"docs/methods/{page.name} does not show {name}"


RESULT = {
    "name": "delta_weight",
    "machine": "Linux-6.1-x86_64-with-glibc2.36, 2 CPUs",
    "date": "2025-01-02T03:04:05",
    "config": {"shape": [4096, 4096], "alpha": 150.0},
    "rows": [
        {"method": "fourierft", "shape": [4096, 4096], "ours_s": 0.0123456, "peft_s": 0.031, "ratio_to_peft": 0.398},
        {"method": "lora", "shape": [768, 768], "ours_s": 0.001, "peft_s": 0.0012, "ratio_to_peft": 0.8333333},
        {"method": "α*B|A", "shape": [8, 8], "ours_s": 2.0, "peft_s": 1.0, "ratio_to_peft": 2.0},
    ],
}


def test_benchmark_page_shows_machine_date_rows_and_plot(tmp_path):
    results, page, figures = tmp_path / "results", tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "figures" / "b"
    results.mkdir()
    (results / "delta_weight.json").write_text(json.dumps(RESULT))
    (figures).mkdir(parents=True)
    (figures / "removed_benchmark.png").write_bytes(b"stale")
    assert make_benchmark_figures.build(results, page, figures) == ["delta_weight"]
    text = page.read_text(encoding="utf-8")
    assert "Measured on Linux-6.1-x86_64-with-glibc2.36, 2 CPUs, 2025-01-02T03:04:05." in text
    assert "| method | shape | ours_s | peft_s | ratio_to_peft |" in text
    assert "| fourierft | 4096×4096 | 0.01235 | 0.031 | 0.398 |" in text
    assert "| lora | 768×768 | 0.001 | 0.0012 | 0.8333 |" in text
    assert "| α\\*B\\|A | 8×8 | 2 | 1 | 2 |" in text  # Markdown-escaped, so the cell stays one cell
    assert "- config: shape=4096×4096, alpha=150\n" in text  # the file's other top-level fields
    assert "![delta_weight](figures/b/delta_weight.png)" in text
    assert sorted(p.name for p in figures.iterdir()) == ["delta_weight.png"]  # the stale plot is gone
    assert matplotlib.image.imread(figures / "delta_weight.png").ndim == 3


def test_benchmark_without_ratio_columns_gets_a_table_but_no_plot(tmp_path):
    result = dict(RESULT, rows=[{"method": "lora", "seconds": 0.5}])
    (tmp_path / "r.json").write_text(json.dumps(result))
    make_benchmark_figures.build(tmp_path, tmp_path / "page.md", tmp_path / "figs")
    text = (tmp_path / "page.md").read_text(encoding="utf-8")
    assert "| lora | 0.5 |" in text and "![" not in text
    assert not list((tmp_path / "figs").iterdir())


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"bad\.json: not valid JSON"),
        ("[1, 2]", r"bad\.json: expected a JSON object with keys \['name', 'machine', 'date', 'rows'\], got list"),
        (json.dumps({k: v for k, v in RESULT.items() if k != "machine"}), r"bad\.json: missing key\(s\) \['machine'\]"),
        (json.dumps(dict(RESULT, rows=[])), r"bad\.json: 'rows' must be a non-empty list of objects"),
        (json.dumps(dict(RESULT, rows=[1.0])), r"bad\.json: 'rows' must be a non-empty list of objects"),
    ],
)
def test_benchmark_page_rejects_bad_results_and_writes_nothing(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        make_benchmark_figures.build(tmp_path, tmp_path / "page.md", tmp_path / "figs")
    assert not (tmp_path / "page.md").exists() and not (tmp_path / "figs").exists()


def test_benchmark_script_reports_bad_results_in_one_line(tmp_path):
    (tmp_path / "bad.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "make_benchmark_figures.py"), "--results", str(tmp_path), "--page", str(tmp_path / "p.md"),
         "--figures", str(tmp_path / "f")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert re.search(r"error: .*bad\.json: missing key\(s\) \['name', 'machine', 'date', 'rows'\]", result.stderr)


def test_committed_benchmark_page_is_up_to_date(tmp_path):
    page = tmp_path / "benchmarks.md"
    make_benchmark_figures.build(ROOT / "benchmarks" / "results", page, tmp_path / "figures" / "benchmarks")
    assert (DOCS / "benchmarks.md").read_text(encoding="utf-8") == page.read_text(encoding="utf-8"), (
        "docs/benchmarks.md is stale: run python docs/scripts/make_benchmark_figures.py"
    )
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text(encoding="utf-8")):
        assert (DOCS / link).is_file(), f"docs/benchmarks.md shows {link}, which is not committed"
