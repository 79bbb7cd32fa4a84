"""PDK and cell subcommands: ``knet pdk list`` shows the open PDKs installed here, their
corners, simulator and licence terms (docs/silicon.md)."""
from __future__ import annotations

import argparse
from dataclasses import asdict

from .common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pdk", help="open PDKs: `knet pdk list` shows what is installed, corners and licences")
    pdk_sub = p.add_subparsers(dest="pdk_command", required=True)
    q = pdk_sub.add_parser("list", help="the supported PDKs, whether installed, their corners and licence terms")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=cmd_pdk_list)


def cmd_pdk_list(args: argparse.Namespace) -> int:
    from silicon.pdk import PDKS, pdk_status
    rows = pdk_status()
    if args.json:
        print_json({"pdks": [asdict(r) for r in rows]})
        return 0
    for r in rows:
        state = f"installed {r.installed}" if r.path else f"not installed (`{PDKS[r.name].pip_line}`)"
        print(f"{r.name:<12} {r.title}")
        print(f"{'':<12} {state}; simulator {r.simulator}; corners {', '.join(r.corners)}")
        if r.path:
            print(f"{'':<12} models: {r.path}")
        print(f"{'':<12} licence: {r.licence}")
        if r.note:
            print(f"{'':<12} note: {r.note}")
    return 0
