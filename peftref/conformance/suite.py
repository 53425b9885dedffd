"""One call that runs a candidate through the vectors (and optionally live cases) and returns the :class:`Report`."""

from __future__ import annotations

import random

from tqdm import tqdm

from .. import refimpl
from . import candidates, vectors
from .protocol import candidate_name
from .report import Report
from .runner import check_case
from .tolerance import DTYPES


def run(candidate, *, methods=None, dtype: str = "float64", live: int = 0, seed: int | None = None,
        vectors_dir=None, progress: bool | None = False) -> Report:
    """Check `candidate` (an object, a built-in name or ``package.module:object``) against the shipped vectors.

    methods: method ids to check (default all); dtype: "float64" or "float32" (inputs cast for the candidate, float32 bounds);
    live: fresh Hypothesis cases per method (0: none); seed: of the live search (default: random, recorded in the report);
    vectors_dir: another vectors directory; progress: tqdm bars on stderr (None: only on a terminal).
    """
    methods = list(refimpl.METHODS if methods is None else methods)
    unknown = [m for m in methods if m not in refimpl.METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or methods}; expected a subset of {', '.join(refimpl.METHODS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if isinstance(live, bool) or not isinstance(live, int) or live < 0:
        raise ValueError(f"live must be a non-negative number of cases, got {live!r}")
    if live:
        try:
            from .live import run_live  # imports hypothesis only when asked for
        except ImportError as err:
            raise ValueError(f"live mode needs hypothesis (pip install hypothesis): {err}") from None
    label = candidate if isinstance(candidate, str) else candidate_name(candidate)
    if isinstance(candidate, str):
        candidate = candidates.load(candidate)
    loaded = vectors.load() if vectors_dir is None else vectors.load(vectors_dir)
    selected = [case for case in loaded.cases if case.method in methods]
    results = []
    for case in tqdm(selected, desc="vectors", unit="case", disable=None if progress is None else not progress):
        results += check_case(candidate, case, dtype)
    if live:
        seed = random.randrange(2**32) if seed is None else seed
        results += run_live(candidate, methods, dtype, live, seed, progress)
    return Report(label, dtype, results, loaded.suite_version, loaded.sha256, live, seed if live else None)
