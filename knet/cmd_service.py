"""Service subcommands: ``knet store`` (checkpoints → BentoML model store) and ``knet serve``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from models.errors import UserInputError

from .settings import REPO_ROOT

SERVICE = "service.service:KirchhoffNetService"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="import zoo checkpoints (and any DIRS) into the BentoML model store")
    p.add_argument("dirs", nargs="*", metavar="DIR", help="checkpoint directories (default: every zoo model)")
    p.add_argument("--no-zoo", action="store_true", help="import only the DIRS given")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("serve", help="serve the stored models on 127.0.0.1 (BentoML)")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--no-store", action="store_true",
                   help="do not import new zoo checkpoints into the store first")
    p.set_defaults(func=cmd_serve)


def store_checkpoints(dirs: list[Path]) -> tuple[list[str], list[str]]:
    """Import each directory; returns (lines to print, errors). One bad checkpoint does not
    stop the others."""
    from service.store import import_checkpoint
    lines, errors = [], []
    for d in dirs:
        try:
            stored, created = import_checkpoint(d)
        except ValueError as err:  # CheckpointError is a ValueError
            errors.append(f"{d}: {err}")
            continue
        lines.append(f"{'stored' if created else 'unchanged'} {stored.tag} from {d}")
    return lines, errors


def _zoo_dirs() -> list[Path]:
    from models.zoo import ZOO_DIR, available
    return [ZOO_DIR / name for name in available()]


def cmd_store(args: argparse.Namespace) -> int:
    dirs = ([] if args.no_zoo else _zoo_dirs()) + [Path(d) for d in args.dirs]
    if not dirs:
        raise UserInputError("nothing to store: no zoo checkpoint is trained yet and no DIR was given")
    lines, errors = store_checkpoints(dirs)
    for line in lines:
        print(line)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    print(f"BentoML store: {os.environ['BENTOML_HOME']}")
    return 2 if errors else 0


def cmd_serve(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UserInputError(f"--port must be in 1..65535, got {args.port}")
    if not args.no_store:
        lines, errors = store_checkpoints(_zoo_dirs())
        for line in lines + [f"warning: {e}" for e in errors]:
            print(line, file=sys.stderr)
    from service.store import stored_models
    if not stored_models():
        raise UserInputError(f"no KirchhoffNet model in the BentoML store {os.environ['BENTOML_HOME']}; "
                         "train the zoo or run `knet store DIR`")
    bentoml_cli = Path(sys.executable).parent / "bentoml"
    cmd = [str(bentoml_cli), "serve", SERVICE, "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"serving on http://127.0.0.1:{args.port} (docs: /docs.json, metrics: /metrics)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(REPO_ROOT)
    # replace this process, so signals (Ctrl+C, SIGTERM from a supervisor) reach the server itself
    os.execv(cmd[0], cmd)
    return 0  # not reached
