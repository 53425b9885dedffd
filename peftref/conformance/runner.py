"""Run a candidate on cases: one :class:`Result` per check.

A valid case gives the checks ``delta_weight``, ``forward`` (without bias) and ``forward+bias``, ``merge``, ``unmerge`` (the
expected merged weight back to W), ``vjp`` (∂L/∂x and every trainable gradient) and ``num_trainable`` (exact); a locations
case one exact ``locations`` check; an invalid case one ``rejects`` check per listed operation, which passes only when the
candidate raises ``ValueError``. In float32 mode the floating inputs are cast to float32 (indices stay int64) and the float32
bound of the case applies; the expected values are always the float64 reference's.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np

from .cases import Case
from .protocol import declared_methods
from .tolerance import DTYPES, scaled_error


@dataclass
class Result:
    """The outcome of one check. Where outputs were compared: ``max_abs`` = max |got − expected|, ``rel`` = that divided by
    the output's scale (see :mod:`.tolerance`), ``tolerance`` the bound ``rel`` must not exceed (worst output of the check)."""

    case: str  # case id, with "@<op>" for the checks of an invalid case
    method: str
    operation: str  # one of protocol.OPERATIONS
    status: str  # "pass" | "fail" | "skip"
    max_abs: float | None = None
    rel: float | None = None
    tolerance: float | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _cast(array: np.ndarray, dtype: str) -> np.ndarray:
    """A copy (the candidate may write into it), floating arrays in `dtype`."""
    return array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array.copy()


class _Inputs:
    """A case's inputs as the candidate receives them: fresh copies in the run's dtype on every access, and a fresh config."""

    def __init__(self, case: Case, dtype: str):
        self.case, self.dtype = case, dtype

    W = property(lambda self: _cast(self.case.inputs["W"], self.dtype))
    x = property(lambda self: _cast(self.case.inputs["x"], self.dtype))
    gy = property(lambda self: _cast(self.case.inputs["gy"], self.dtype))
    bias = property(lambda self: _cast(self.case.inputs["bias"], self.dtype))

    @property
    def params(self) -> dict:
        return {name: _cast(value, self.dtype) for name, value in self.case.params.items()}

    @property
    def config(self) -> dict:
        return copy.deepcopy(self.case.config)


def _compare(case: Case, label: str, operation: str, outputs: list[tuple[str, object, str]], dtype: str) -> Result:
    """Compare (shown name, got, output name) against the case's expected output and bound for `dtype`; the worst decides."""
    bound = case.tolerance[dtype]
    worst_abs, worst_rel, worst_name = 0.0, 0.0, ""
    for name, got, output in outputs:
        expected = case.inputs["W"] if output == "unmerge" else case.expected[output]
        got = np.asarray(got)
        if got.shape != expected.shape:
            return Result(label, case.method, operation, "fail", message=f"{name}: shape {got.shape}, expected {expected.shape}")
        if not (np.issubdtype(got.dtype, np.floating) or np.issubdtype(got.dtype, np.integer)):
            return Result(label, case.method, operation, "fail", message=f"{name}: dtype {got.dtype}, expected a real array")
        if not np.all(np.isfinite(got)):
            return Result(label, case.method, operation, "fail", message=f"{name}: non-finite values")
        abs_err, rel = scaled_error(got, expected, case.scales[output])
        if rel >= worst_rel:
            worst_abs, worst_rel, worst_name = abs_err, rel, name
    status = "pass" if worst_rel <= bound else "fail"
    message = "" if status == "pass" else f"{worst_name}: relative error {worst_rel:.3g} > {bound:.3g}"
    return Result(label, case.method, operation, status, worst_abs, worst_rel, bound, message)


def _attempt(candidate, case: Case, operation: str, label: str, call: Callable, judge: Callable) -> Result:
    """Call the candidate; skip when it lacks the operation or raises NotImplementedError, fail when it raises anything else."""
    if not callable(getattr(candidate, operation, None)):
        return Result(label, case.method, operation, "skip", message=f"candidate has no {operation}()")
    try:
        out = call(getattr(candidate, operation))
    except NotImplementedError as err:
        return Result(label, case.method, operation, "skip", message=f"unsupported: {err}")
    except Exception as err:  # a candidate's failure is a result, not a crash of the runner
        return Result(label, case.method, operation, "fail", message=f"raised {type(err).__name__}: {err}")
    return judge(out)


def _valid_checks(candidate, case: Case, dtype: str) -> list[Result]:
    m, i = case.method, _Inputs(case, dtype)
    gradients = [name for name in case.expected if name.startswith("grad/")]

    def numeric(label, operation, output):
        return lambda out: _compare(case, label, operation, [(output.replace("_bias", "+bias"), out, output)], dtype)

    def vjp_judge(out):
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], Mapping)):
            return Result(case.id, m, "vjp", "fail", message=f"vjp must return (gx, {{name: gradient}}), got {type(out).__name__}")
        gx, grads = out
        missing = sorted(name[5:] for name in gradients if name[5:] not in grads)
        if missing:
            return Result(case.id, m, "vjp", "fail", message=f"vjp returned no gradient for {missing}")
        return _compare(case, case.id, "vjp", [("gx", gx, "gx")] + [(name, grads[name[5:]], name) for name in gradients], dtype)

    def count_judge(out):
        ok = isinstance(out, (int, np.integer)) and not isinstance(out, bool) and int(out) == case.num_trainable
        return Result(case.id, m, "num_trainable", "pass" if ok else "fail", message="" if ok else f"got {out!r}, expected {case.num_trainable}")

    return [
        _attempt(candidate, case, "delta_weight", case.id, lambda f: f(m, i.W, i.params, i.config),
                 numeric(case.id, "delta_weight", "delta_weight")),
        _attempt(candidate, case, "forward", case.id, lambda f: f(m, i.x, i.W, i.params, i.config, None),
                 numeric(case.id, "forward", "forward")),
        _attempt(candidate, case, "forward", f"{case.id}+bias", lambda f: f(m, i.x, i.W, i.params, i.config, i.bias),
                 numeric(f"{case.id}+bias", "forward", "forward_bias")),
        _attempt(candidate, case, "merge", case.id, lambda f: f(m, i.W, i.params, i.config), numeric(case.id, "merge", "merge")),
        _attempt(candidate, case, "unmerge", case.id, lambda f: f(m, _cast(case.expected["merge"], dtype), i.params, i.config),
                 numeric(case.id, "unmerge", "unmerge")),
        _attempt(candidate, case, "vjp", case.id, lambda f: f(m, i.x, i.W, i.params, i.config, i.gy), vjp_judge),
        _attempt(candidate, case, "num_trainable", case.id, lambda f: f(m, case.shape, i.config), count_judge),
    ]


def _locations_check(candidate, case: Case) -> Result:
    expected = case.expected["indices"]

    def judge(out):
        got = np.asarray(out)
        if got.shape != expected.shape:
            return Result(case.id, case.method, "locations", "fail", message=f"shape {got.shape}, expected {expected.shape}")
        wrong = np.flatnonzero(np.any(got != expected, axis=0))
        if wrong.size:
            k = int(wrong[0])
            return Result(case.id, case.method, "locations", "fail",
                          message=f"{wrong.size} of {expected.shape[1]} locations differ; first at k={k}: "
                                  f"{tuple(got[:, k].tolist())}, expected {tuple(expected[:, k].tolist())}")
        return Result(case.id, case.method, "locations", "pass")

    return _attempt(candidate, case, "locations", case.id, lambda f: f(case.config["seed"], *case.shape, case.config["n"]), judge)


def _rejects(candidate, case: Case, dtype: str) -> list[Result]:
    m, i = case.method, _Inputs(case, dtype)
    calls = {
        "delta_weight": lambda f: f(m, i.W, i.params, i.config),
        "forward": lambda f: f(m, i.x, i.W, i.params, i.config, i.bias),
        "merge": lambda f: f(m, i.W, i.params, i.config),
        "unmerge": lambda f: f(m, i.W, i.params, i.config),
        "vjp": lambda f: f(m, i.x, i.W, i.params, i.config, i.gy),
        "num_trainable": lambda f: f(m, case.shape, i.config),
        "locations": lambda f: f(case.config["seed"], *case.shape, case.config["n"]),
    }
    results = []
    for op in case.ops:
        label = f"{case.id}@{op}"
        if not callable(getattr(candidate, op, None)):
            results.append(Result(label, m, "rejects", "skip", message=f"candidate has no {op}()"))
            continue
        try:
            calls[op](getattr(candidate, op))
        except ValueError:
            results.append(Result(label, m, "rejects", "pass"))
        except NotImplementedError as err:
            results.append(Result(label, m, "rejects", "skip", message=f"unsupported: {err}"))
        except Exception as err:
            results.append(Result(label, m, "rejects", "fail", message=f"{case.reason}: raised {type(err).__name__} ({err}), expected ValueError"))
        else:
            results.append(Result(label, m, "rejects", "fail", message=f"{case.reason}: accepted (returned a result), expected ValueError"))
    return results


def _labels(case: Case) -> list[tuple[str, str]]:
    """(label, operation) of every check of a case, in the order the checks run."""
    if case.kind == "invalid":
        return [(f"{case.id}@{op}", "rejects") for op in case.ops]
    labels = [(case.id, op) for op in case.ops]
    if case.kind == "valid":
        labels.insert(2, (f"{case.id}+bias", "forward"))
    return labels


def check_case(candidate, case: Case, dtype: str = "float64") -> list[Result]:
    """Every check of one case against one candidate."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    methods = declared_methods(candidate)
    if methods is not None and case.method not in methods:
        reason = f"method {case.method!r} not declared by the candidate"
        return [Result(label, case.method, operation, "skip", message=reason) for label, operation in _labels(case)]
    if case.kind == "valid":
        return _valid_checks(candidate, case, dtype)
    if case.kind == "locations":
        return [_locations_check(candidate, case)]
    return _rejects(candidate, case, dtype)
