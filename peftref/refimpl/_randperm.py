r"""Replay of ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:n]`` without torch.

PEFT's FourierFT stores only the spectrum and regenerates its locations this way. For N < 214 748 364
(``UINT32_MAX / 20``, where torch switches to 64-bit draws) torch's CPU kernel is a forward Fisher–Yates shuffle:

    r = [0, 1, …, N−1]
    for i = 0 … N−2:   z = i + (w_i mod (N − i));   swap r[i], r[z]

with w_i the 32-bit outputs of MT19937 seeded with ``seed mod 2^32`` — the stream of
``numpy.random.RandomState(seed mod 2^32)``. Position i is final after step i, so the first n entries need
n draws and a sparse record of the swaps: O(n) time and memory, whatever N is.
"""

from __future__ import annotations

import numpy as np

#: torch draws 32-bit values only for sizes strictly below this (aten randperm_cpu: ``n < UINT32_MAX / 20``, integer division);
#: at exactly this size it already takes the 64-bit path.
SIZE_LIMIT = (2**32 - 1) // 20


def torch_randperm_prefix(seed: int, size: int, n: int) -> np.ndarray:
    """The first n entries of torch.randperm(size) under ``manual_seed(seed)``, as int64."""
    if not 0 <= n <= size:
        raise ValueError(f"randperm prefix length n must be in [0, {size}], got {n}")
    if size >= SIZE_LIMIT:
        raise ValueError(
            f"cannot replay torch.randperm for {size} >= {SIZE_LIMIT} elements: torch switches to 64-bit draws "
            "there, and that algorithm is not verified in peftref; store the indices explicitly instead"
        )
    steps = min(n, size - 1)
    draws = np.random.RandomState(seed % 2**32).randint(0, 2**32, size=max(steps, 0), dtype=np.uint64)
    moved: dict[int, int] = {}  # position -> value, only for positions a swap touched
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        if i < steps:
            z = i + int(draws[i]) % (size - i)
            moved[i], moved[z] = moved.get(z, z), moved.get(i, i)
        out[i] = moved.get(i, i)
    return out
