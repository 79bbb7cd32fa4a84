"""``knet``: the one command that wires models, export, service and load tests together.

Each group of subcommands lives in its own ``knet/cmd_*.py`` module exposing
``register(subparsers)``; a subcommand returns an exit code. Expected failures (bad input,
bad checkpoint) print ``error: …`` and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("cmd_core", "cmd_export", "cmd_service", "cmd_loadtest", "cmd_bench", "cmd_zoo")


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knet", description="KirchhoffNet Serve: analog-circuit neural networks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"knet.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"knet.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from . import settings
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings.apply()
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
