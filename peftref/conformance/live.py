"""Live mode: fresh random cases from Hypothesis, the candidate against the reference, the first failure minimised.

For each method a strategy draws a shape, a config that fits it, leading batch dimensions and a seed for the arrays; the case
is built exactly like a shipped vector (:func:`cases.build_valid`) and checked with the same checks and bounds.
``hypothesis.find`` searches for a case on which some check fails and shrinks it to a minimal one (small shapes, small
ranks, seed 0 where possible), which the report names.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from tqdm import tqdm

from .cases import ValidSpec, build_valid
from .protocol import declared_methods
from .runner import Result, check_case

MAX_DIM = 12
_BATCH = st.lists(st.integers(1, 3), max_size=2).map(tuple)
_ALPHA = st.floats(0.25, 200.0)
_ARRAY_SEED = st.integers(0, 2**32 - 1)


@st.composite
def _shape(draw, low: int = 1) -> tuple[int, int]:
    return draw(st.integers(low, MAX_DIM)), draw(st.integers(low, MAX_DIM))


@st.composite
def _config(draw, method: str) -> tuple[tuple[int, int], dict]:
    """(shape, config fields) that fit together."""
    if method == "dcft":
        d, stride, n_out, n_in = (draw(st.integers(1, 4)) for _ in range(4))
        shape = (d + stride * (n_out - 1), d + stride * (n_in - 1))
        return shape, {"d": d, "stride": stride, "k": draw(st.integers(1, 3)), "scaling": draw(st.floats(0.25, 4.0))}
    if method == "bat":
        r = draw(st.integers(1, 4))
        return (r * draw(st.integers(1, 3)), r * draw(st.integers(1, 3))), {"r": r}
    d_out, d_in = shape = draw(_shape())
    if method == "lora":
        return shape, {"r": draw(st.integers(1, 8)), "alpha": draw(_ALPHA), "use_rslora": draw(st.booleans())}
    if method == "fourierft":
        return shape, {"n": draw(st.integers(1, d_out * d_in)), "alpha": draw(_ALPHA), "seed": draw(st.integers(-(2**40), 2**40))}
    if method == "sdctft":
        return shape, {"n": draw(st.integers(1, d_out * d_in)), "alpha": draw(_ALPHA), "seed": draw(st.integers(0, 2**31)),
                       "energy_fraction": draw(st.floats(0.0, 1.0)), "bands": draw(st.integers(1, 4))}
    if method == "bone":
        divisors = [m for m in range(1, d_out + 1) if d_out % m == 0]
        return shape, {"r": draw(st.integers(1, d_in)), "mini_r": draw(st.none() | st.sampled_from(divisors))}
    if method == "svd_rescale":
        return shape, {"r": draw(st.integers(1, min(shape)))}
    raise ValueError(f"no live strategy for method {method!r}")


@st.composite
def live_case(draw, method: str) -> tuple[ValidSpec, int]:
    """(spec, array seed) of one fresh valid case."""
    shape, config = draw(_config(method))
    return ValidSpec("live", method, shape, config, batch=draw(_BATCH)), draw(_ARRAY_SEED)


def describe(spec: ValidSpec, seed: int) -> str:
    return f"shape={spec.shape} batch={spec.batch} config={spec.config} array_seed={seed}"


def _run_method(candidate, method: str, dtype: str, examples: int, seed: int, bar) -> Result:
    label = f"{method}/live"
    methods = declared_methods(candidate)
    if methods is not None and method not in methods:
        return Result(label, method, "live", "skip", message=f"method {method!r} not declared by the candidate")
    seen = {"examples": 0, "compared": 0, "worst": None, "found": False}

    def fails(drawn) -> bool:
        results = check_case(candidate, build_valid(*drawn), dtype)
        failed = any(r.status == "fail" for r in results)
        if not seen["found"]:
            seen["examples"] += 1
            bar.update(1)
            for r in results:
                if r.rel is not None:
                    seen["compared"] += 1
                    if seen["worst"] is None or r.rel / r.tolerance > seen["worst"].rel / seen["worst"].tolerance:
                        seen["worst"] = r
        seen["found"] |= failed
        return failed

    config = settings(max_examples=examples, database=None, deadline=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    try:
        spec, array_seed = find(live_case(method), fails, settings=config, random=random.Random(seed))
    except NoSuchExample:
        worst = seen["worst"]
        if worst is None:
            return Result(label, method, "live", "skip", message=f"{seen['examples']} cases, every check skipped")
        return Result(label, method, "live", "pass", worst.max_abs, worst.rel, worst.tolerance, f"{seen['examples']} cases")
    failure = next(r for r in check_case(candidate, build_valid(spec, array_seed), dtype) if r.status == "fail")
    return Result(label, method, "live", "fail", failure.max_abs, failure.rel, failure.tolerance,
                  f"minimal failing case {describe(spec, array_seed)}: {failure.operation}: {failure.message}")


def run_live(candidate, methods: list[str], dtype: str, examples: int, seed: int, progress: bool | None = False) -> list[Result]:
    """One "live" result per method: pass after `examples` fresh cases, or the minimal failing case."""
    with tqdm(total=examples * len(methods), desc="live cases", unit="case", disable=None if progress is None else not progress) as bar:
        return [_run_method(candidate, method, dtype, examples, seed, bar) for method in methods]
