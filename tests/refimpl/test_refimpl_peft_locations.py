"""``fourierft.peft_locations`` replays PEFT's frequency locations bit-exactly without torch, and refuses the sizes where torch's
randperm switches algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peftref.refimpl import _randperm, fourierft

SEEDS = [0, 777, -12345, 2**32 + 2024]  # default-ish, PEFT's default, negative, above 2^32 (torch reduces it mod 2^32 too)


def torch_locations(seed: int, d_out: int, d_in: int, n: int) -> np.ndarray:
    """What PEFT's FourierFTLayer.update_layer computes."""
    flat = torch.randperm(d_out * d_in, generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([flat // d_in, flat % d_in]).numpy()


SMALL = [(768, 3072, 1000), (1, 1, 1), (1, 7, 7), (5, 1, 3), (6, 8, 48), (24, 17, 408), (31, 3, 2)]  # incl. n = d_out·d_in
LLAMA_MLP = (4096, 11008, 1000)  # the largest shape PEFT users meet; a full torch.randperm of it takes ~3 s: PEFT's seed only


@pytest.mark.parametrize("seed, d_out, d_in, n", [(seed, *shape) for seed in SEEDS for shape in SMALL] + [(777, *LLAMA_MLP)])
def test_matches_torch_randperm(seed, d_out, d_in, n):
    ours = fourierft.peft_locations(seed, d_out, d_in, n)
    assert ours.dtype == np.int64 and ours.shape == (2, n)
    assert np.array_equal(ours, torch_locations(seed, d_out, d_in, n))


@pytest.mark.parametrize("seed", SEEDS)
def test_init_uses_peft_locations(seed):
    cfg = fourierft.Config(n=30, seed=seed)
    params = fourierft.init(np.zeros((9, 13)), cfg, 0)
    assert np.array_equal(params["indices"], torch_locations(seed, 9, 13, 30))


@pytest.mark.parametrize(
    "d_out, d_in",
    [
        (4, 53_687_091),  # exactly UINT32_MAX // 20 = 214 748 364: torch already draws 64-bit values here (regression: accepted)
        (16_384, 16_384),
        (11_008, 32_000),
    ],
)
def test_refuses_sizes_where_torch_switches_algorithm(d_out, d_in):
    assert d_out * d_in >= _randperm.SIZE_LIMIT == 214_748_364
    with pytest.raises(
        ValueError,
        match=rf"fourierft: layer shape \({d_out}, {d_in}\): cannot replay torch.randperm for {d_out * d_in} >= 214748364 elements",
    ):
        fourierft.peft_locations(777, d_out, d_in, 10)


def test_largest_replayable_size_is_accepted():
    """214 748 363 = 3 × 71 582 787 still takes torch's 32-bit path (checked against torch once, offline: 1.7 GB, 30 s)."""
    assert fourierft.peft_locations(777, 3, 71_582_787, 5).shape == (2, 5)


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 4, 5, 0), r"config field 'n' must be in \[1, 20\], got 0"),
        ((0, 4, 5, 21), r"config field 'n' must be in \[1, 20\], got 21"),
        ((0, 0, 5, 1), r"shape must be positive, got \(0, 5\)"),
        ((1.5, 4, 5, 1), r"config field 'seed' must be an int, got float 1.5"),
        ((0, 4, 5, 2.0), r"config field 'n' must be an int, got float 2.0"),
    ],
)
def test_rejects_bad_arguments(args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fourierft.peft_locations(*args)
