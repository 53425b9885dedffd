"""Live mode: fresh Hypothesis cases per method, checked like the vectors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peftref import conformance, refimpl
from peftref.conformance import live
from peftref.conformance.cases import build_valid
from peftref.conformance.candidates.reference import ReferenceCandidate


def test_the_reference_passes_fresh_cases_of_every_method():
    report = conformance.run("reference", live=8, seed=1)
    results = [r for r in report.results if r.operation == "live"]
    assert [r.method for r in results] == list(refimpl.METHODS)
    assert all(r.status == "pass" and r.message == "8 cases" and r.rel <= r.tolerance for r in results)


@pytest.mark.parametrize("method", refimpl.METHODS)
@settings(max_examples=10)
@given(data=st.data())
def test_every_drawn_case_is_a_valid_case_of_its_method(method, data):
    spec, seed = data.draw(live.live_case(method))
    case = build_valid(spec, seed)  # the reference accepts the shape and config: build_valid would raise otherwise
    assert case.expected["delta_weight"].shape == spec.shape and case.inputs["x"].shape == spec.batch + (spec.shape[1],)


def test_a_method_the_candidate_does_not_declare_is_skipped_in_live_mode():
    class OnlyBone(ReferenceCandidate):
        methods = frozenset({"bone"})

    report = conformance.run(OnlyBone(), methods=["lora", "bone"], live=3, seed=0)
    live_results = {r.method: r for r in report.results if r.operation == "live"}
    assert live_results["lora"].status == "skip" and live_results["lora"].message == "method 'lora' not declared by the candidate"
    assert live_results["bone"].status == "pass"


def test_a_candidate_that_can_run_nothing_is_skipped_not_passed_in_live_mode():
    class Nothing:
        def locations(self, seed, d_out, d_in, n):
            raise NotImplementedError("no")

    report = conformance.run(Nothing(), methods=["svd_rescale"], live=3, seed=0)
    (result,) = [r for r in report.results if r.operation == "live"]
    assert result.status == "skip" and result.message == "3 cases, every check skipped"


def test_the_same_seed_draws_the_same_cases():
    def drawn(seed):
        seen = []

        class Recorder(ReferenceCandidate):
            def num_trainable(self, method, shape, config):
                seen.append((tuple(shape), tuple(sorted(config.items()))))
                return super().num_trainable(method, shape, config)

        conformance.run(Recorder(), methods=["fourierft"], live=5, seed=seed)
        return seen[-5:]

    assert drawn(3) == drawn(3)
