"""The runner catches wrong implementations: each mutant breaks one convention of one method and must fail there only.

A mutant is the reference with one method's ΔW replaced by a plausible mistake; forward, merge, unmerge and ∂L/∂x follow
from the wrong ΔW as they would in a real port (the parameter gradients stay the reference's, so ∂L/∂x alone catches vjp).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from peftref import conformance, refimpl
from peftref.conformance.candidates.reference import ReferenceCandidate
from peftref.refimpl import dcft


class Mutant(ReferenceCandidate):
    """The reference, except that `method`'s ΔW is `wrong_delta(W, params, cfg)` (inputs validated as the reference does)."""

    def __init__(self, method, wrong_delta):
        self.method, self.wrong_delta = method, wrong_delta

    def _delta(self, W, params, config):
        super().delta_weight(self.method, W, params, config)  # the reference's validation
        params = {name: np.asarray(value) for name, value in params.items()}
        return self.wrong_delta(np.asarray(W, dtype=np.float64), params, refimpl.make_config(self.method, config))

    def delta_weight(self, method, W, params, config):
        if method != self.method:
            return super().delta_weight(method, W, params, config)
        return self._delta(W, params, config)

    def forward(self, method, x, W, params, config, bias=None):
        if method != self.method:
            return super().forward(method, x, W, params, config, bias)
        y = x @ (W + self._delta(W, params, config)).T  # (..., d_out)
        return y if bias is None else y + bias

    def merge(self, method, W, params, config):
        if method != self.method:
            return super().merge(method, W, params, config)
        return W + self._delta(W, params, config)

    def unmerge(self, method, W_merged, params, config):
        if method != self.method or method == "bat":  # Bat's unmerge is a solve, not a subtraction: keep the reference's
            return super().unmerge(method, W_merged, params, config)
        return W_merged - self._delta(W_merged, params, config)

    def vjp(self, method, x, W, params, config, gy):
        gx, grads = super().vjp(method, x, W, params, config, gy)
        if method == self.method:
            gx = gy @ (W + self._delta(W, params, config))  # (..., d_in)
        return gx, grads


def _dense_spectrum(params, shape):
    F = np.zeros(shape, dtype=np.complex128)
    F[params["indices"][0], params["indices"][1]] = params["spectrum"]
    return F


def _bone_rows(params, shape, rows):
    D = np.tile(params["D"], (1, shape[0] // params["D"].shape[1]))  # (r, d_out)
    return D.T[:, rows]  # (d_out, d_in)


MUTANTS = {
    # LoRA without its scaling alpha / r.
    "lora_without_scaling": ("lora", lambda W, p, cfg: p["B"] @ p["A"]),
    # FourierFT as the paper's equation: no 1/(MN).
    "fourierft_without_1_over_MN": ("fourierft", lambda W, p, cfg: cfg.alpha * W.size * np.real(np.fft.ifft2(_dense_spectrum(p, W.shape)))),
    # sDCTFT with the authors' unnormalised DCT.
    "sdctft_unnormalised_dct": ("sdctft", lambda W, p, cfg: cfg.alpha * scipy.fft.idctn(np.real(_dense_spectrum(p, W.shape)), type=2)),
    # DCFT with the original's kernel taken as is: kron(BA, C) instead of kron(BA, Cᵀ).
    "dcft_untransposed_kernel": ("dcft", lambda W, p, cfg: cfg.scaling * dcft.conv_transpose(p["B"] @ p["A"], p["C"], cfg.stride)),
    # Bone with chunk index i // r (wrapped) instead of i mod r.
    "bone_chunk_index_i_div_r": ("bone", lambda W, p, cfg: _bone_rows(p, W.shape, (np.arange(W.shape[1]) // cfg.r) % cfg.r)),
    # Bone with the reshape order swapped: r contiguous blocks of width d_in / r instead of chunks of width r.
    "bone_blocks_of_width_d_in_over_r": ("bone", lambda W, p, cfg: _bone_rows(p, W.shape, np.arange(W.shape[1]) * cfg.r // W.shape[1])),
    # Bat indexed by the input block: ΔW_ij = (W_ij + I) B_j (wrapped to the number of B blocks).
    "bat_indexed_by_input_block": ("bat", lambda W, p, cfg: _bat_by_input_block(W, p["B"])),
    # SVD re-scaling with b scaling the whole difference: diag(b) (U diag(s) − U diag(σ⁰)) Vᵀ.
    "svd_rescale_b_on_both_terms": ("svd_rescale", lambda W, p, cfg: (p["b"][:, None] * (p["U"] * p["s"] - p["U"] * p["sigma0"])) @ p["V"].T),
}


def _bat_by_input_block(W, B):
    r = B.shape[-1]
    n_out, n_in = W.shape[0] // r, W.shape[1] // r
    blocks = W.reshape(n_out, r, n_in, r).transpose(0, 2, 1, 3)  # (n_out, n_in, r, r): W_ij
    by_input = B[np.arange(n_in) % n_out]  # (n_in, r, r): B_j
    delta = blocks @ by_input[None] + by_input[None]  # (W_ij + I) B_j
    return delta.transpose(0, 2, 1, 3).reshape(W.shape)


class AcceptsInvalidBone(ReferenceCandidate):
    """The reference, except that for Bone it returns zeros instead of raising on invalid input: it silently accepts it."""

    def _lax(self, operation, method, *args):
        try:
            return getattr(super(), operation)(method, *args)
        except ValueError:
            if method != "bone":
                raise
            return 0 if operation == "num_trainable" else np.zeros(1)

    def delta_weight(self, method, *args):
        return self._lax("delta_weight", method, *args)

    def forward(self, method, *args):
        return self._lax("forward", method, *args)

    def merge(self, method, *args):
        return self._lax("merge", method, *args)

    def unmerge(self, method, *args):
        return self._lax("unmerge", method, *args)

    def vjp(self, method, *args):
        result = self._lax("vjp", method, *args)
        return (result, {}) if isinstance(result, np.ndarray) else result

    def num_trainable(self, method, *args):
        return self._lax("num_trainable", method, *args)


class TorchFreeLocations:
    """FourierFT locations from numpy's Generator instead of torch's MT19937 Fisher–Yates: a wrong replay."""

    def locations(self, seed, d_out, d_in, n):
        flat = np.random.default_rng(seed % 2**32).permutation(d_out * d_in)[:n]
        return np.stack([flat // d_in, flat % d_in])


def _failing(report):
    return {(r.method, r.operation) for r in report.results if r.status == "fail"}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a_mutant_fails_on_the_method_it_breaks_and_nowhere_else(name):
    method, wrong_delta = MUTANTS[name]
    report = conformance.run(Mutant(method, wrong_delta))
    failing = _failing(report)
    assert {m for m, _ in failing} == {method}, f"{name}: failures outside {method}: {sorted(failing)}"
    # the wrong ΔW shows in ΔW itself, in forward and merge, and in ∂L/∂x
    assert {"delta_weight", "forward", "merge", "vjp"} <= {op for _, op in failing}, sorted(failing)
    assert all(r.status == "pass" for r in report.results if r.method != method)
    assert report.counts()["skip"] == 0


def test_a_candidate_that_silently_accepts_invalid_input_fails_the_rejects_of_that_method_only():
    report = conformance.run(AcceptsInvalidBone())
    assert _failing(report) == {("bone", "rejects")}
    failed = [r for r in report.results if r.status == "fail"]
    assert len(failed) == sum(len(c.ops) for c in conformance.load_vectors().cases if c.method == "bone" and c.kind == "invalid")
    assert all("accepted (returned a result), expected ValueError" in r.message for r in failed)


def test_a_wrong_location_replay_fails_every_location_check_but_the_trivial_one():
    report = conformance.run(TorchFreeLocations())
    locations = {r.case: r for r in report.results if r.operation == "locations"}
    assert locations.pop("fourierft/locations/seed777_1x1_n1").status == "pass"  # one location: nothing to get wrong
    assert locations and all(r.status == "fail" and "locations differ" in r.message for r in locations.values())
    # it checks nothing about n, so the invalid location requests are accepted: failures too
    rejects = [r for r in report.results if r.case.endswith("@locations")]
    assert len(rejects) == 2 and all(r.status == "fail" for r in rejects)
    others = [r for r in report.results if r.operation != "locations" and not r.case.endswith("@locations")]
    assert others and all(r.status == "skip" for r in others)


@pytest.mark.parametrize(
    "name, minimal",
    [
        ("lora_without_scaling", "shape=(1, 1) batch=()"),  # any layer shows a scaling ≠ 1
        ("dcft_untransposed_kernel", "shape=(2, 2) batch=() config={'d': 2, 'stride': 1, 'k': 1"),  # C ≠ Cᵀ needs d ≥ 2
        ("bone_chunk_index_i_div_r", "batch=() config={'r': 2, 'mini_r': None}"),
    ],
)
def test_live_mode_finds_a_mutant_and_reports_a_minimal_case(name, minimal):
    method, wrong_delta = MUTANTS[name]
    report = conformance.run(Mutant(method, wrong_delta), methods=[method], live=30, seed=0)
    (live,) = [r for r in report.results if r.operation == "live"]
    assert live.status == "fail" and live.case == f"{method}/live"
    assert live.message.startswith("minimal failing case ") and minimal in live.message, live.message
