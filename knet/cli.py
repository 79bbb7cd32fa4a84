"""``knet``: the one command that wires models, export, service and load tests together.

Each group of subcommands lives in its own ``knet/cmd_*.py`` module exposing
``register(subparsers)``; a subcommand returns an exit code.

Exit codes: 0 success; 1 the command ran and its check failed (e.g. ngspice disagreed with
the model); 2 bad input (``error: …``, one line, never a traceback: a
:class:`models.errors.UserInputError`, a pydantic ``ValidationError``, a missing file, or a
domain error about input listed in :data:`USER_ERRORS`); 70 an internal error, i.e. a bug
(``internal error: …`` with a hint; ``KNET_TRACEBACK=1`` prints the traceback); 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from models.errors import UserInputError

COMMAND_MODULES = (  # one module per line: add yours at the end
    "cmd_core",
    "cmd_export",
    "cmd_service",
    "cmd_loadtest",
    "cmd_bench",
    "cmd_zoo",
    "cmd_reference",
    "cmd_soak",
    "cmd_chip",
    "cmd_silicon",
)


UserError = UserInputError  # the name the command modules use

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE of sysexits.h; 1 already means "ran, check failed"
# Domain errors about input, as (module, class): counted only when their module is loaded
# (an exception cannot come from a module that was never imported).
USER_ERRORS = (
    ("pydantic", "ValidationError"),
    ("export.netlist", "UnsupportedCircuit"),
    ("export.simulate", "TooLarge"),
    ("export.erc", "ERCError"),
    ("export.spice", "SpiceError"),
    ("models.reference", "ReferenceFormatError"),
    ("models.chip", "UnsupportedChip"),
    ("silicon.pdk", "MissingPDK"),
)


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is about the input (exit 2) rather than a bug (exit 70)."""
    if isinstance(err, UserInputError | FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return True
    for module_name, class_name in USER_ERRORS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("kirchhoffnet-serve")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knet", description="KirchhoffNet Serve: analog-circuit neural networks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if is_user_error(err):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        if os.environ.get("KNET_TRACEBACK"):
            traceback.print_exc()
        print(f"internal error: {type(err).__name__}: {err}\n"
              "This is a bug in knet, not in your input. Run again with KNET_TRACEBACK=1 for the "
              "traceback and include it in the report.", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
