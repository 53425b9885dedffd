"""The verdict of a run: a method × operation table for people, JSON for machines."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata

from .. import refimpl
from ..demo import format_table
from .protocol import OPERATIONS
from .runner import Result

STATUSES = ("pass", "fail", "skip")


def versions() -> dict:
    """Versions of Python and of the packages a run may involve (None when not installed)."""
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("peftref", "numpy", "scipy", "torch", "peft"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


@dataclass
class Report:
    candidate: str
    dtype: str
    results: list[Result]
    suite_version: int
    vectors_sha256: str
    live_examples: int = 0
    live_seed: int | None = None
    versions: dict = field(default_factory=versions)

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.results)

    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.results) for status in STATUSES}

    def summary(self) -> list[dict]:
        """One row per (method, operation) with results: counts, worst errors, and the bound of the worst check."""
        rows = []
        for method in refimpl.METHODS:
            for operation in OPERATIONS:
                group = [r for r in self.results if r.method == method and r.operation == operation]
                if not group:
                    continue
                compared = [r for r in group if r.rel is not None]
                worst = max(compared, key=lambda r: r.rel / r.tolerance if r.tolerance else r.rel, default=None)
                rows.append(
                    {"method": method, "operation": operation}
                    | {status: sum(r.status == status for r in group) for status in STATUSES}
                    | {
                        "max_abs": max((r.max_abs for r in compared), default=None),
                        "max_rel": max((r.rel for r in compared), default=None),
                        "worst_tolerance": None if worst is None else worst.tolerance,
                    }
                )
        return rows

    def format_table(self, max_failures: int = 20) -> str:
        """The method × operation table, then the first failures with their messages, then the totals."""

        def number(value):
            return "-" if value is None else f"{value:.1e}"

        rows = [
            row | {"max_abs": number(row["max_abs"]), "max_rel": number(row["max_rel"]), "worst_tolerance": number(row["worst_tolerance"])}
            for row in self.summary()
        ]
        columns = [("method", "method", "s"), ("operation", "operation", "s"), ("pass", "pass", "d"), ("fail", "fail", "d"),
                   ("skip", "skip", "d"), ("max_abs", "max abs err", "s"), ("max_rel", "max rel err", "s"),
                   ("worst_tolerance", "tolerance", "s")]
        lines = [f"peftref conform: candidate {self.candidate}, {self.dtype}, suite version {self.suite_version}", format_table(rows, columns)]
        failures = [r for r in self.results if r.status == "fail"]
        if failures:
            lines.append(f"\nfailures ({len(failures)}):")
            lines += [f"  {r.case} [{r.operation}]: {r.message}" for r in failures[:max_failures]]
            if len(failures) > max_failures:
                lines.append(f"  ... and {len(failures) - max_failures} more (see --json)")
        counts = self.counts()
        lines.append(f"\n{len(self.results)} checks: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
                     " (the tolerance column is the bound of the check with the largest error / bound ratio)")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "suite_version": self.suite_version,
            "vectors_sha256": self.vectors_sha256,
            "candidate": self.candidate,
            "dtype": self.dtype,
            "live_examples": self.live_examples,
            "live_seed": self.live_seed,
            "versions": self.versions,
            "passed": not self.failed,
            "counts": self.counts(),
            "summary": self.summary(),
            "results": [r.to_dict() for r in self.results],
        }
