"""The conformance suite: check any implementation of the seven methods against the reference.

Versioned golden vectors (generated from the reference in float64, shipped as package data) plus a live mode that draws fresh
cases with Hypothesis; a candidate plugs in by naming an importable object (see :mod:`peftref.conformance.protocol`).

>>> from peftref import conformance
>>> report = conformance.run("reference", methods=["lora"])
>>> report.failed, report.counts()["fail"]
(False, 0)

Command line: ``peftref conform run --impl IMPL`` and ``peftref conform generate``.
"""

from .candidates import load as load_candidate
from .protocol import CANDIDATE_OPERATIONS, OPERATIONS, Unsupported
from .report import Report
from .runner import Result, check_case
from .suite import run
from .vectors import SPEC_VERSIONS, SUITE_VERSION, VECTORS_DIR, Vectors, generate
from .vectors import load as load_vectors

__all__ = [
    "CANDIDATE_OPERATIONS", "OPERATIONS", "Report", "Result", "SPEC_VERSIONS", "SUITE_VERSION", "Unsupported", "VECTORS_DIR",
    "Vectors", "check_case", "generate", "load_candidate", "load_vectors", "run",
]
