"""The fold's blocked merge (:func:`peftref.export.folding.merge_rows`) against the reference merge, block edges included.

Blocks are made tiny (BLOCK_ELEMENTS = 100: 5 rows of a stored (12, 20) W, 8 rows of a stored (20, 12) Wᵀ, both with a
partial last block; column tiles of 5 for a transposed dense ΔW, the last one partial) so that every edge is crossed.

Tolerances: methods with a dense ΔW (FourierFT, Bat) copy the reference's ΔW, so the result is the reference merge rounded
once — bit for bit. Methods with thin factors ΔW = L R (LoRA, SVD re-scaling) compute each block of ΔW from the factors; that
float64 product may differ from the reference's ΔW in its last bit (LoRA groups it (s·B) A, not s·(B A)), which can move
W + ΔW across a rounding boundary of the storage dtype: allowed is 1 ulp of the stored dtype, nothing more.
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest
from export_cases import layer_adapter

from peftref import refimpl
from peftref.export import folding
from peftref.export.tensors import round_to_dtype

SHAPE = (12, 20)  # (d_out, d_in): valid for every method's test config (Bat r = 4 divides both)
DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def _case(method: str, transposed: bool, dtype: np.dtype):
    """(the layer's adapter, W (d_out, d_in) float64, W as stored in `dtype`: W or Wᵀ)."""
    rng = np.random.default_rng(11)
    W = round_to_dtype(rng.standard_normal(SHAPE) / 4, dtype).astype(np.float64)  # representable in dtype: what the model holds
    return layer_adapter(method, "layer", W, rng), W, (W.T if transposed else W).astype(dtype)


def _merge(method: str, transposed: bool, dtype: np.dtype):
    """(merged by merge_rows, reference merge rounded once, the unmerged weight), in the stored layout; float64 values."""
    layer, W, stored = _case(method, transposed, dtype)
    merged = np.empty(stored.shape, dtype)
    finite = folding.merge_rows(stored, folding.delta_rows(layer, stored.T if transposed else stored, transposed), folding.ArrayRows(merged))
    expected = round_to_dtype(refimpl.get(method).merge(W, layer.params, layer.config), dtype)  # (d_out, d_in)
    assert finite
    return merged.astype(np.float64), (expected.T if transposed else expected).astype(np.float64), stored.astype(np.float64)


def _assert_within_one_ulp(merged: np.ndarray, expected: np.ndarray, dtype: np.dtype) -> None:
    rounded = expected.astype(dtype)
    ulp = np.abs(np.nextafter(rounded, np.array(np.inf, dtype)).astype(np.float64) - expected)  # (rows, cols)
    assert np.all(np.abs(merged - expected) <= ulp)


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(folding, "BLOCK_ELEMENTS", 100)
    monkeypatch.setattr(folding, "TRANSPOSED_TILE_COLUMNS", 5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True], ids=["W", "W^T"])
@pytest.mark.parametrize("method", ["fourierft", "bat"])
def test_dense_delta_blocks_equal_the_reference_merge_bit_for_bit(method, transposed, dtype):
    merged, expected, _ = _merge(method, transposed, DTYPES[dtype])
    np.testing.assert_array_equal(merged, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True], ids=["W", "W^T"])
@pytest.mark.parametrize("method", ["lora", "svd_rescale"])
def test_factored_delta_blocks_equal_the_reference_merge_within_one_ulp(method, transposed, dtype):
    merged, expected, stored = _merge(method, transposed, DTYPES[dtype])
    _assert_within_one_ulp(merged, expected, DTYPES[dtype])
    assert np.abs(merged - stored).max() > 0.01  # the adapter moves the weight by far more than 1 ulp (ΔW ~ 0.1)


@pytest.mark.parametrize("transposed", [False, True], ids=["W", "W^T"])
def test_factored_methods_never_form_the_dense_delta(monkeypatch, transposed):
    """LoRA's blocks come from its factors: the fold works with the reference's dense delta_weight made unusable."""

    def dense_delta(*args):
        raise AssertionError("the dense ΔW was formed")

    monkeypatch.setattr(refimpl.get("lora"), "delta_weight", dense_delta)
    merged, expected, _ = _merge("lora", transposed, DTYPES["float32"])
    _assert_within_one_ulp(merged, expected, DTYPES["float32"])


def test_overflow_in_a_block_is_reported_not_raised():
    """A block whose W + ΔW overflows the storage dtype makes merge_rows return False (the caller names the module)."""
    stored = np.full((60, 4), 6e4, np.float16)  # blocks of 25 rows
    merged = np.empty_like(stored)

    def delta(rows, out):
        out[...] = 1e4 if rows.start == 0 else 0.0  # only the first block overflows float16 (largest value 65504)

    assert not folding.merge_rows(stored, delta, folding.ArrayRows(merged))
    assert np.isinf(merged[0]).all() and np.isfinite(merged[-1]).all()


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("transposed", [False, True], ids=["W", "W^T"])
def test_blocks_written_to_a_file_equal_the_blocks_merged_in_memory(tmp_path, monkeypatch, transposed, workers):
    """FileRows: each thread's blocks land at their own byte ranges of the file (after a 7-byte prefix that stays intact)."""
    monkeypatch.setattr(folding, "WORKERS", workers)
    merged, _, _ = _merge("lora", transposed, DTYPES["float32"])
    layer, _, stored32 = _case("lora", transposed, DTYPES["float32"])
    path = tmp_path / "data"
    path.write_bytes(b"prefix!" + bytes(stored32.nbytes))
    fd = os.open(path, os.O_RDWR)
    try:
        rows = folding.FileRows(fd, 7, stored32.shape, np.float32)
        assert folding.merge_rows(stored32, folding.delta_rows(layer, stored32.T if transposed else stored32, transposed), rows)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[:7] == b"prefix!"
    np.testing.assert_array_equal(np.frombuffer(data[7:], np.float32).reshape(stored32.shape), merged)
