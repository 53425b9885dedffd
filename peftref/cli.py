"""The ``peftref`` command line: ``peftref demo | export | conform | inspect``.

Each subcommand lives beside the code it drives and registers itself with ``add_parser(subparsers)``; errors a user can fix
(bad files, bad options) print one clear line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

#: module providing add_parser(subparsers) for each subcommand, in the order --help lists them.
SUBCOMMANDS = {
    "demo": "peftref.demo",
    "export": "peftref.export.cli",
    "inspect": "peftref.checkpoints.cli",
    "conform": "peftref.conformance.cli",
}


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftref", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"peftref {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (UserError, ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        print(f"peftref {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
