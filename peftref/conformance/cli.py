"""``peftref conform``: check an implementation against the reference's vectors, or regenerate the vectors.

    peftref conform run --impl IMPL [--methods m1,m2] [--dtype float64|float32] [--json PATH] [--live N] [--seed S] [--vectors DIR]
    peftref conform generate [--out DIR]

IMPL is ``reference``, ``torch`` (``torch-cpu``, ``torch-cuda``), ``peft`` or ``package.module:object``. ``run`` prints a
method × operation table and exits with status 1 when any check fails (0 otherwise, 2 on a usage error).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import refimpl
from .candidates import BUILTIN
from .tolerance import DTYPES
from .vectors import write_atomically


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in refimpl.METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown or text!r}; expected a comma-separated subset of {','.join(refimpl.METHODS)}")
    return methods


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("conform", help="check an implementation against the reference (conformance suite)",
                                   description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="run a candidate through the vectors (and live cases)",
                             description="Run a candidate implementation through the conformance vectors and report per method and operation.")
    run.add_argument("--impl", required=True, metavar="IMPL",
                     help=f"candidate: {', '.join(BUILTIN)}, or package.module:object (a class is instantiated without arguments)")
    run.add_argument("--methods", type=_methods, default=list(refimpl.METHODS), metavar="M1,M2",
                     help=f"comma-separated method ids (default: all of {','.join(refimpl.METHODS)})")
    run.add_argument("--dtype", choices=DTYPES, default="float64",
                     help="dtype of the inputs given to the candidate, and the tolerance class (default float64)")
    run.add_argument("--json", type=Path, metavar="PATH", help="also write the full report (every check) as JSON to PATH")
    run.add_argument("--live", type=_count, default=0, metavar="N", help="also check N fresh Hypothesis cases per method (default 0)")
    run.add_argument("--seed", type=int, metavar="S", help="seed of the live search (default: random; the report records it)")
    run.add_argument("--vectors", type=Path, metavar="DIR", help="read the vectors from DIR instead of the packaged ones")
    run.set_defaults(run=_run)

    generate = actions.add_parser("generate", help="regenerate the vectors from the reference (float64, deterministic)",
                                  description="Regenerate the conformance vectors from the reference; the same bytes every time.")
    generate.add_argument("--out", type=Path, help="directory to write manifest.json and vectors.safetensors into "
                                                   "(default: the packaged vectors directory)")
    generate.set_defaults(run=_generate)


def _run(args) -> int:
    from .suite import run

    report = run(args.impl, methods=args.methods, dtype=args.dtype, live=args.live, seed=args.seed,
                 vectors_dir=args.vectors, progress=None)
    print(report.format_table())
    if args.json is not None:
        if not args.json.parent.is_dir():
            raise ValueError(f"--json {args.json}: directory {args.json.parent} does not exist")
        write_atomically(args.json, (json.dumps(report.to_json(), indent=1) + "\n").encode())
    return 1 if report.failed else 0


def _generate(args) -> int:
    from .vectors import VECTORS_DIR, generate, load

    manifest, data = generate(VECTORS_DIR if args.out is None else args.out)
    loaded = load(manifest.parent)
    print(f"wrote {len(loaded.cases)} cases: {manifest} ({manifest.stat().st_size} bytes), {data} ({data.stat().st_size} bytes, "
          f"sha256 {loaded.sha256})")
    return 0
