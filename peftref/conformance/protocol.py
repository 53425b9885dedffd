"""What a candidate is: the operations it may implement, and how it says "not supported".

A candidate is any object (a module, a class instance; a class named by ``--impl`` is instantiated without arguments) with
some of these methods. Arrays are NumPy, the config is a plain dict with the field names of ``refimpl.get(method).Config``,
parameters a dict with SPEC.md's names in the (d_out, d_in) layout:

    delta_weight(method, W, params, config)            -> ΔW (d_out, d_in)
    forward(method, x, W, params, config, bias)        -> y (..., d_out); bias is None or (d_out,)
    merge(method, W, params, config)                   -> W + ΔW(W)
    unmerge(method, W_merged, params, config)          -> W
    vjp(method, x, W, params, config, gy)              -> (∂L/∂x, {trainable name: ∂L/∂p})
    num_trainable(method, shape, config)               -> int
    locations(seed, d_out, d_in, n)                    -> (2, n) int FourierFT locations, PEFT's convention

Invalid input (a bad config for the shape, a wrong parameter shape, NaN values, duplicate or out-of-range indices, a singular
Bat block at unmerge) must raise ``ValueError`` (or a subclass). A candidate may declare ``methods`` (an iterable of method
ids) and ``name``; an operation it lacks, a method it does not declare, or a call that raises :class:`Unsupported`
(any ``NotImplementedError``) is reported as *skipped*, never as passed.
"""

from __future__ import annotations

#: The operations a candidate may implement, in report order.
CANDIDATE_OPERATIONS = ("delta_weight", "forward", "merge", "unmerge", "vjp", "num_trainable", "locations")

#: Report rows: the candidate operations, plus "rejects" (invalid input raises ValueError) and "live" (Hypothesis cases).
OPERATIONS = CANDIDATE_OPERATIONS + ("rejects", "live")


class Unsupported(NotImplementedError):
    """Raised by a candidate for a case it cannot run (e.g. FourierFT locations that are not PEFT's): the check is skipped."""


def declared_methods(candidate) -> frozenset | None:
    """The method ids a candidate declares, or None when it declares none (then every method is tried)."""
    methods = getattr(candidate, "methods", None)
    return None if methods is None else frozenset(methods)


def candidate_name(candidate) -> str:
    name = getattr(candidate, "name", None)
    if isinstance(name, str):
        return name
    return getattr(candidate, "__name__", type(candidate).__name__)
