"""The shipped vectors: regenerated bit-identically, verified on load, small, and covering what the suite promises."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from peftref import conformance, refimpl
from peftref.conformance import vectors
from peftref.conformance.vectors import DATA_FILE, MANIFEST_FILE, VECTORS_DIR


@pytest.fixture(scope="module")
def shipped():
    return conformance.load_vectors()


def _differing_tensors(a_path, b_path) -> list[str]:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    return sorted(set(a) ^ set(b)) + sorted(k for k in set(a) & set(b) if a[k].tobytes() != b[k].tobytes())


def test_regenerating_the_vectors_writes_the_same_bytes(tmp_path):
    conformance.generate(tmp_path)
    hint = "the reference or the cases changed: run `peftref conform generate` and commit peftref/conformance/vectors"
    assert (tmp_path / DATA_FILE).read_bytes() == (VECTORS_DIR / DATA_FILE).read_bytes(), (
        f"{hint}; differing tensors: {_differing_tensors(tmp_path / DATA_FILE, VECTORS_DIR / DATA_FILE)[:10]}"
    )
    assert (tmp_path / MANIFEST_FILE).read_bytes() == (VECTORS_DIR / MANIFEST_FILE).read_bytes(), hint


def test_the_vectors_are_small_and_their_manifest_is_canonical_json():
    size = (VECTORS_DIR / DATA_FILE).stat().st_size + (VECTORS_DIR / MANIFEST_FILE).stat().st_size
    assert size < 1_000_000  # well under the 2 MB budget
    text = (VECTORS_DIR / MANIFEST_FILE).read_text(encoding="utf-8")
    manifest = json.loads(text)
    assert text == json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    assert manifest["suite_version"] == conformance.SUITE_VERSION
    assert manifest["spec_versions"] == {m: 1 for m in refimpl.METHODS}


def test_every_case_carries_its_description(shipped):
    ids = [case.id for case in shipped.cases]
    assert len(ids) == len(set(ids))
    for case in shipped.cases:
        assert case.method in refimpl.METHODS and case.id.startswith(case.method + "/")
        if case.kind == "valid":
            d_out, d_in = case.shape
            assert case.inputs["x"].shape == case.batch + (d_in,) and case.inputs["gy"].shape == case.batch + (d_out,)
            assert set(case.scales) == {n for n in case.expected} | {"unmerge"}
            assert case.tolerance["float32"] < 1e-4 and case.tolerance["float64"] < 1e-12
            assert case.num_trainable == refimpl.get(case.method).num_trainable(case.shape, refimpl.make_config(case.method, case.config))
        elif case.kind == "invalid":
            assert case.reason and case.ops
        else:
            assert case.kind == "locations" and case.expected["indices"].shape == (2, case.config["n"])


def test_the_expected_outputs_agree_with_each_other(shipped):
    """forward = x merge(W)ᵀ (+ b), merge = W + ΔW for additive methods: the golden data is self-consistent."""
    for case in (c for c in shipped.cases if c.kind == "valid"):
        e, W, x, bias = case.expected, case.inputs["W"], case.inputs["x"], case.inputs["bias"]
        np.testing.assert_allclose(x @ e["merge"].T, e["forward"], atol=1e-12 * case.scales["forward"], err_msg=case.id)
        np.testing.assert_allclose(e["forward"] + bias, e["forward_bias"], atol=1e-12 * case.scales["forward_bias"], err_msg=case.id)
        np.testing.assert_allclose(W + e["delta_weight"], e["merge"], atol=1e-12 * case.scales["merge"], err_msg=case.id)


def _names(shipped, method):
    return {case.id.split("/", 1)[1] for case in shipped.cases if case.method == method and case.kind == "valid"}


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_each_method_has_square_tall_wide_tiny_and_batched_cases(shipped, method):
    cases = [c for c in shipped.cases if c.method == method and c.kind == "valid"]
    shapes = {c.shape for c in cases}
    assert any(m == n for m, n in shapes) and any(m > n for m, n in shapes) and any(m < n for m, n in shapes)
    assert (1, 1) in shapes and any(m == 1 and n > 1 for m, n in shapes)
    assert {len(c.batch) for c in cases} >= {0, 1, 2}  # x of shape (d_in,), (T, d_in), (B, T, d_in)
    invalid = [c for c in shipped.cases if c.method == method and c.kind == "invalid"]
    assert len(invalid) >= 3


def test_the_edge_configs_are_covered(shipped):
    valid = [c for c in shipped.cases if c.kind == "valid"]

    def has(method, predicate):
        return any(c.method == method and predicate(c.config, *c.shape) for c in valid)

    assert has("lora", lambda k, m, n: k["r"] == 1) and has("lora", lambda k, m, n: k["r"] == n) and has("lora", lambda k, m, n: k["use_rslora"])
    assert has("fourierft", lambda k, m, n: k["n"] == 1) and has("fourierft", lambda k, m, n: k["n"] == m * n)
    assert has("sdctft", lambda k, m, n: k["n"] == 1) and has("sdctft", lambda k, m, n: k["n"] == m * n)
    assert has("dcft", lambda k, m, n: k["stride"] < k["d"]) and has("dcft", lambda k, m, n: k["stride"] > k["d"]) and has("dcft", lambda k, m, n: k["k"] > 1)
    assert has("bone", lambda k, m, n: n % k["r"] != 0) and has("bone", lambda k, m, n: k["mini_r"] is not None)
    assert has("bone", lambda k, m, n: k["mini_r"] is not None and n % k["r"] != 0) and has("bone", lambda k, m, n: k["r"] == n)
    assert has("bat", lambda k, m, n: k["r"] == 1) and has("bat", lambda k, m, n: k["r"] == n) and has("bat", lambda k, m, n: k["r"] == m)
    assert has("svd_rescale", lambda k, m, n: k["r"] == 1) and has("svd_rescale", lambda k, m, n: k["r"] == min(m, n))
    fourier = [c for c in valid if c.method == "fourierft"]
    assert sum(c.flags["peft_locations"] for c in fourier) >= 6 and not all(c.flags["peft_locations"] for c in fourier)
    seeds = {c.config["seed"] for c in shipped.cases if c.method == "fourierft" and c.kind != "invalid"}
    assert {777, 0} <= seeds and any(s < 0 for s in seeds) and any(s > 2**32 for s in seeds)


def test_the_invalid_cases_cover_what_an_implementation_must_reject(shipped):
    invalid = {c.id for c in shipped.cases if c.kind == "invalid"}
    for needed in ("fourierft/invalid/duplicate_indices", "fourierft/invalid/row_index_out_of_range", "bat/invalid/r_not_dividing_d_in",
                   "dcft/invalid/non_whole_subspace", "bone/invalid/mini_r_not_dividing_d_out", "svd_rescale/invalid/r_above_min_dim",
                   "bone/invalid/r_above_d_in", "lora/invalid/nan_B", "lora/invalid/wrong_A_shape", "bat/invalid/singular_unmerge"):
        assert needed in invalid


def test_the_location_vectors_are_torch_randperm_itself(shipped):
    """Independent of peftref's replay: the golden locations are what torch.randperm gives (PEFT's code)."""
    torch = pytest.importorskip("torch")
    for case in (c for c in shipped.cases if c.kind == "locations"):
        d_out, d_in = case.shape
        flat = torch.randperm(d_out * d_in, generator=torch.Generator().manual_seed(case.config["seed"]))[: case.config["n"]]
        np.testing.assert_array_equal(np.stack([flat // d_in, flat % d_in]), case.expected["indices"], err_msg=case.id)


def test_a_tampered_data_file_is_refused(tmp_path):
    shutil.copytree(VECTORS_DIR, tmp_path / "v")
    data = bytearray((tmp_path / "v" / DATA_FILE).read_bytes())
    data[-1] ^= 1
    (tmp_path / "v" / DATA_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"vectors.safetensors: sha256 [0-9a-f]{64} does not match the manifest's"):
        vectors.load(tmp_path / "v")


def test_a_manifest_of_another_suite_version_is_refused(tmp_path):
    shutil.copytree(VECTORS_DIR, tmp_path / "v")
    path = tmp_path / "v" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(manifest | {"suite_version": 99}))
    with pytest.raises(ValueError, match="suite_version 99, this runner reads 1"):
        vectors.load(tmp_path / "v")


def test_missing_or_broken_vector_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no conformance manifest at"):
        vectors.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json: not valid JSON"):
        vectors.load(tmp_path)
    shutil.copy(VECTORS_DIR / MANIFEST_FILE, tmp_path / MANIFEST_FILE)
    with pytest.raises(FileNotFoundError, match="names data file 'vectors.safetensors', which does not exist"):
        vectors.load(tmp_path)


def test_generate_refuses_a_file_as_output_directory_and_leaves_it_alone(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        conformance.generate(target)
    assert target.read_text() == "keep"


def test_tolerance_bounds_follow_the_formula(shipped):
    case = next(c for c in shipped.cases if c.id == "lora/square_8x8_r2")
    K = 6 * (8 + 8) + 8 * 8  # T·(d_in + d_out) + d_in·d_out, T = 2·3 tokens
    assert case.tolerance["reduction"] == K
    assert case.tolerance["float32"] == pytest.approx(8 * np.finfo(np.float32).eps * math.sqrt(K), rel=1e-2)
    assert case.tolerance["float64"] == pytest.approx(8 * np.finfo(np.float64).eps * math.sqrt(K), rel=1e-2)
