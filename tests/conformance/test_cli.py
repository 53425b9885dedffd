"""``peftref conform``: the command line, including a plugin candidate named by ``module:object``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from peftref import cli
from peftref.conformance.vectors import DATA_FILE, MANIFEST_FILE, VECTORS_DIR


class NumpyLora:
    """A plugin: LoRA in a dozen lines of NumPy, validating its input as a conforming implementation must."""

    methods = {"lora"}

    @staticmethod
    def _check(W, params, config):
        r, (d_out, d_in) = config["r"], W.shape
        if r < 1 or params["A"].shape != (r, d_in) or params["B"].shape != (d_out, r):
            raise ValueError("bad rank or parameter shape")
        if not all(np.isfinite(p).all() for p in params.values()):
            raise ValueError("non-finite parameter")
        return config["alpha"] / (np.sqrt(r) if config["use_rslora"] else r)

    def delta_weight(self, method, W, params, config):
        return self._check(W, params, config) * params["B"] @ params["A"]

    def forward(self, method, x, W, params, config, bias):
        y = x @ (W + self.delta_weight(method, W, params, config)).T
        return y if bias is None else y + bias


class NumpyLoraWithoutScaling(NumpyLora):
    def delta_weight(self, method, W, params, config):
        self._check(W, params, config)
        return params["B"] @ params["A"]


def test_a_plugin_named_by_module_and_object_runs_and_writes_a_json_report(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = cli.main(["conform", "run", "--impl", f"{__name__}:NumpyLora", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.startswith(f"peftref conform: candidate {__name__}:NumpyLora, float64, suite version 1\n")
    report = json.loads(out.read_text())
    assert report["candidate"] == f"{__name__}:NumpyLora" and report["passed"] is True
    passed = {(r["method"], r["operation"]) for r in report["results"] if r["status"] == "pass"}
    assert passed == {("lora", "delta_weight"), ("lora", "forward"), ("lora", "rejects")}
    assert report["counts"]["skip"] == len(report["results"]) - report["counts"]["pass"]


def test_a_failing_candidate_exits_with_status_1_and_names_the_failures(capsys):
    code = cli.main(["conform", "run", "--impl", f"{__name__}:NumpyLoraWithoutScaling", "--methods", "lora,bone"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "failures (" in printed and "lora/square_8x8_r2 [delta_weight]: delta_weight: relative error" in printed


def test_float32_and_method_selection_reach_the_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(["conform", "run", "--impl", "reference", "--methods", "bat, svd_rescale", "--dtype", "float32", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dtype"] == "float32" and {r["method"] for r in report["results"]} == {"bat", "svd_rescale"}
    tolerances = {r["tolerance"] for r in report["results"] if r["tolerance"] is not None}
    assert tolerances and min(tolerances) > 1e-7  # float32 bounds


def test_live_cases_are_reported_with_their_seed(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(["conform", "run", "--impl", "reference", "--methods", "bone", "--live", "3", "--seed", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    live = [r for r in report["results"] if r["operation"] == "live"]
    assert report["live_seed"] == 5 and report["live_examples"] == 3
    assert [(r["case"], r["status"], r["message"]) for r in live] == [("bone/live", "pass", "3 cases")]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--impl", "nonsense"], "peftref conform: error: --impl 'nonsense': expected one of reference, torch"),
        (["--impl", "no_such_module_xyz:C"], "peftref conform: error: --impl 'no_such_module_xyz:C': cannot import module"),
        (["--impl", "reference", "--vectors", "/nonexistent/dir"], "peftref conform: error: no conformance manifest at /nonexistent/dir/manifest.json"),
        (["--impl", "reference", "--methods", "lora", "--json", "/nonexistent/dir/r.json"], "peftref conform: error: --json /nonexistent/dir/r.json: directory /nonexistent/dir does not exist"),
    ],
)
def test_user_errors_are_one_line_with_status_2(argv, message, capsys):
    assert cli.main(["conform", "run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--impl", "reference", "--methods", "lora,nope"], "argument --methods: unknown method(s) ['nope']"),
        (["run", "--impl", "reference", "--live", "-2"], "argument --live: expected a non-negative integer, got -2"),
        (["run", "--impl", "reference", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (["run"], "the following arguments are required: --impl"),
        ([], "the following arguments are required: ACTION"),
    ],
)
def test_bad_options_are_refused_by_the_parser_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["conform", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_generate_writes_the_shipped_bytes_into_a_new_directory(tmp_path, capsys):
    assert cli.main(["conform", "generate", "--out", str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out.startswith("wrote 94 cases: ")
    for name in (MANIFEST_FILE, DATA_FILE):
        assert (tmp_path / "new" / name).read_bytes() == (VECTORS_DIR / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted([MANIFEST_FILE, DATA_FILE])  # no temporary files left


def test_run_reads_vectors_from_another_directory(tmp_path, capsys):
    assert cli.main(["conform", "generate", "--out", str(tmp_path)]) == 0
    assert cli.main(["conform", "run", "--impl", "reference", "--methods", "dcft", "--vectors", str(tmp_path)]) == 0


@pytest.mark.parametrize("argv", [["conform", "--help"], ["conform", "run", "--help"], ["conform", "generate", "--help"]])
def test_every_action_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage: peftref conform")


def test_the_command_runs_as_a_process():
    result = subprocess.run([sys.executable, "-m", "peftref.cli", "conform", "run", "--impl", "reference", "--methods", "lora"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert ["lora", "rejects", "16", "0", "0"] in [line.split()[:5] for line in result.stdout.splitlines()]
