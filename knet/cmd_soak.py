"""``knet soak``: the bounded soak and fault run that writes reports/reliability.md
(``benchmarks.soak``): one vs two workers, a worker SIGKILL, mixed traffic, a SIGTERM."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    import benchmarks.soak as soak
    p = sub.add_parser("soak", help="soak and fault run against real servers; writes reports/reliability.md",
                       description=(soak.__doc__ or "").split("\n\n")[0])
    soak.add_args(p)
    p.set_defaults(func=soak.run_from_args)
