"""The runner's verdicts: what passes, what fails, what is skipped, and what the report says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from peftref import conformance, refimpl
from peftref.conformance import OPERATIONS, Unsupported
from peftref.conformance.candidates.reference import ReferenceCandidate


@pytest.fixture(scope="module")
def vectors():
    return conformance.load_vectors()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_reference_passes_every_check(dtype):
    report = conformance.run("reference", dtype=dtype)
    assert report.counts() == {"pass": len(report.results), "fail": 0, "skip": 0}
    # every operation of every method is exercised
    rows = {(row["method"], row["operation"]) for row in report.summary()}
    for method in refimpl.METHODS:
        assert {(method, op) for op in ("delta_weight", "forward", "merge", "unmerge", "vjp", "num_trainable", "rejects")} <= rows
    assert ("fourierft", "locations") in rows


class DeltaOnly:
    """Implements LoRA's ΔW only."""

    methods = {"lora"}

    def delta_weight(self, method, W, params, config):
        return refimpl.get(method).delta_weight(W, params, refimpl.make_config(method, config))


def test_what_a_candidate_does_not_implement_is_skipped_never_passed():
    report = conformance.run(DeltaOnly())
    passed = {(r.method, r.operation) for r in report.results if r.status == "pass"}
    assert passed == {("lora", "delta_weight"), ("lora", "rejects")}  # the rejects of ΔW
    assert report.counts()["fail"] == 0 and not report.failed
    skipped = [r for r in report.results if r.status == "skip"]
    assert any(r.message == "candidate has no forward()" for r in skipped)
    assert any(r.message == "method 'bone' not declared by the candidate" for r in skipped)
    lora_rejects = [r for r in report.results if r.method == "lora" and r.operation == "rejects"]
    assert {r.status for r in lora_rejects if r.case.endswith("@delta_weight")} == {"pass"}
    assert {r.status for r in lora_rejects if not r.case.endswith("@delta_weight")} == {"skip"}


class Misbehaving(ReferenceCandidate):
    """The reference for everything but LoRA, where each operation goes wrong in its own way."""

    def delta_weight(self, method, W, params, config):
        out = super().delta_weight(method, W, params, config)
        return out.T if method == "lora" else out  # wrong shape on non-square layers

    def forward(self, method, x, W, params, config, bias=None):
        if method == "lora":
            raise Unsupported("no LoRA forward here")
        return super().forward(method, x, W, params, config, bias)

    def merge(self, method, W, params, config):
        out = super().merge(method, W, params, config)
        return np.full_like(out, np.nan) if method == "lora" else out

    def unmerge(self, method, W_merged, params, config):
        if method == "lora":
            raise TypeError("invalid input, but the wrong exception")
        return super().unmerge(method, W_merged, params, config)

    def vjp(self, method, x, W, params, config, gy):
        gx, grads = super().vjp(method, x, W, params, config, gy)
        if method == "lora":
            return gx if W.shape[0] == W.shape[1] else (gx, {"A": grads["A"]})  # square layers: gx alone
        return gx, grads

    def num_trainable(self, method, shape, config):
        n = super().num_trainable(method, shape, config)
        return float(n) if method == "lora" else n


def test_each_kind_of_misbehaviour_is_reported_with_its_reason():
    report = conformance.run(Misbehaving(), methods=["lora", "bone"])
    by = {}
    for r in report.results:
        by.setdefault((r.method, r.operation), []).append(r)
    assert all(r.status == "pass" for (m, _), rs in by.items() if m == "bone" for r in rs)
    square, wide = "lora/square_8x8_r2", "lora/wide_4x12_r1"
    delta = {r.case: r for r in by["lora", "delta_weight"]}
    assert delta[square].status == "fail" and delta[square].message.startswith("delta_weight: relative error")
    assert delta[wide].status == "fail" and delta[wide].message == "delta_weight: shape (12, 4), expected (4, 12)"
    assert all(r.status == "skip" and r.message == "unsupported: no LoRA forward here" for r in by["lora", "forward"])
    assert all(r.status == "fail" and r.message == "merge: non-finite values" for r in by["lora", "merge"])
    assert all(r.status == "fail" and r.message == "raised TypeError: invalid input, but the wrong exception" for r in by["lora", "unmerge"])
    vjp = {r.case: r for r in by["lora", "vjp"]}
    assert vjp[square].status == "fail" and vjp[square].message == "vjp must return (gx, {name: gradient}), got ndarray"
    assert vjp[wide].status == "fail" and vjp[wide].message == "vjp returned no gradient for ['B']"
    assert all(r.status == "fail" and "got " in r.message for r in by["lora", "num_trainable"])
    unmerge_rejects = [r for r in by["lora", "rejects"] if r.case.endswith("@unmerge")]
    assert all(r.status == "fail" and r.message.endswith("raised TypeError (invalid input, but the wrong exception), expected ValueError")
               for r in unmerge_rejects)
    assert report.failed


def test_float32_inputs_reach_the_candidate_as_float32_and_indices_stay_int64():
    seen = []

    class Recorder(ReferenceCandidate):
        def delta_weight(self, method, W, params, config):
            seen.append((W.dtype, {name: value.dtype for name, value in params.items()}))
            return super().delta_weight(method, W, params, config)

    conformance.run(Recorder(), methods=["fourierft"], dtype="float32")
    assert seen and all(W == np.float32 for W, _ in seen)
    assert all(p["spectrum"] == np.float32 and p["indices"] == np.int64 for _, p in seen)


def test_a_candidate_cannot_corrupt_the_vectors_it_is_given(vectors):
    class Vandal(ReferenceCandidate):
        def delta_weight(self, method, W, params, config):
            out = super().delta_weight(method, W, params, config)
            W[...] = 0
            for value in params.values():
                value[...] = 0
            config.clear()
            return out

    conformance.run(Vandal(), methods=["lora"])
    case = next(c for c in vectors.cases if c.id == "lora/square_8x8_r2")
    assert np.abs(case.inputs["W"]).max() > 0 and case.config["r"] == 2
    assert conformance.run("reference", methods=["lora"]).counts()["fail"] == 0


def test_the_json_report_names_the_suite_the_candidate_and_the_versions():
    report = conformance.run("reference", methods=["bat"])
    payload = json.loads(json.dumps(report.to_json()))
    assert payload["suite_version"] == conformance.SUITE_VERSION and payload["candidate"] == "reference"
    assert payload["vectors_sha256"] == conformance.load_vectors().sha256
    assert payload["dtype"] == "float64" and payload["passed"] is True
    assert {"numpy", "scipy", "torch", "peft", "peftref", "python"} <= set(payload["versions"])
    assert payload["versions"]["numpy"] == np.__version__
    assert len(payload["results"]) == len(report.results) and payload["counts"]["pass"] == len(report.results)
    first = payload["results"][0]
    assert set(first) == {"case", "method", "operation", "status", "max_abs", "rel", "tolerance", "message"}
    assert {row["operation"] for row in payload["summary"]} <= set(OPERATIONS)


def test_the_table_has_a_row_per_method_and_operation_and_lists_failures():
    text = conformance.run(Misbehaving(), methods=["lora"]).format_table()
    lines = text.splitlines()
    assert lines[0] == "peftref conform: candidate reference, float64, suite version 1"  # the `name` it inherits
    assert lines[1].split() == ["method", "operation", "pass", "fail", "skip", "max", "abs", "err", "max", "rel", "err", "tolerance"]
    assert any(line.split()[:2] == ["lora", "delta_weight"] for line in lines)
    assert "failures (" in text and "lora/wide_4x12_r1 [delta_weight]: delta_weight: shape (12, 4), expected (4, 12)" in text


def test_bad_run_arguments_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['nope'\]"):
        conformance.run("reference", methods=["nope"])
    with pytest.raises(ValueError, match="dtype must be one of float64, float32, got 'float16'"):
        conformance.run("reference", dtype="float16")
    with pytest.raises(ValueError, match="live must be a non-negative number of cases, got -1"):
        conformance.run("reference", live=-1)


def test_loading_a_candidate_by_name_reports_what_is_wrong():
    with pytest.raises(ValueError, match=r"--impl 'nonsense': expected one of reference, torch, torch-cpu, torch-cuda, peft or package.module:object"):
        conformance.load_candidate("nonsense")
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_module_xyz': ModuleNotFoundError"):
        conformance.load_candidate("no_such_module_xyz:Candidate")
    with pytest.raises(ValueError, match=r"module 'peftref.refimpl' has no attribute 'Nope'"):
        conformance.load_candidate("peftref.refimpl:Nope")
    with pytest.raises(ValueError, match="the object has none of the candidate operations"):
        conformance.load_candidate("peftref.refimpl:METHODS")
    assert isinstance(conformance.load_candidate("peftref.conformance.candidates.reference:ReferenceCandidate"), ReferenceCandidate)
