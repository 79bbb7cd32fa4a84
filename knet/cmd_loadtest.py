"""``knet loadtest``: served latency beside the circuit's projected timing, as a report.

Flags only; the run itself is :func:`loadtest.session.run`.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "loadtest", help="load-test the service and write a Markdown report (served vs chip latency)",
        description="Start `knet serve` on a free localhost port (or use --url), run bounded locust "
                    "scenarios per model, scrape /metrics, and write report.md, PNG plots, rows.csv and "
                    "results.json. The full default run took 10.3 minutes on 2 vCPUs.")
    p.add_argument("--url", help="a running service on this machine (loopback only); default: start one")
    p.add_argument("--models", nargs="+", help="models to load (default: twomoon potential1 digits)")
    p.add_argument("--quick", action="store_true", help="one scenario (/sample n=64, 2 clients) for a few seconds")
    p.add_argument("--out", type=Path,
                   help="report directory (default: reports/cpu, or reports/gpu when the service will run on CUDA)")
    p.add_argument("--step-s", type=float, help="seconds per step (default 5; --quick: 3)")
    p.add_argument("--max-requests", type=int, help="request cap per step (default 5000)")
    p.add_argument("--rows", type=int, nargs="+", help="rows per request (default 1 64 1024)")
    p.add_argument("--concurrency", type=int, nargs="+", help="closed-loop clients (default 1 2 4 8)")
    p.add_argument("--endpoints", nargs="+", choices=["sample", "logprob"], help="default: both")
    p.add_argument("--no-open-loop", action="store_true", help="skip the fixed-rate run past saturation")
    p.add_argument("--no-simulate", action="store_true", help="skip `knet simulate` (ngspice) per model")
    p.add_argument("--simulate-timeout", type=float, default=240.0, help="seconds allowed per `knet simulate`")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin server and load generator to different CPUs with taskset")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `knet serve` (repeatable), e.g. --serve-arg=--no-store; the "
                        "service's own settings come from KNET_SERVICE_* (e.g. KNET_SERVICE_DEVICE=cuda)")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite report.md and the plots from OUT/results.json without measuring")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for /readyz")
    p.set_defaults(func=cmd_loadtest)


def options_from_args(args: argparse.Namespace):
    """The flags as :class:`loadtest.session.LoadTestOptions`."""
    from loadtest.session import LoadTestOptions

    def tup(v):
        return tuple(v) if v is not None else None

    command = ("knet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["loadtest"]
               else "knet loadtest")
    return LoadTestOptions(
        url=args.url, models=tup(args.models), quick=args.quick, out=args.out, step_s=args.step_s,
        max_requests=args.max_requests, rows=tup(args.rows), concurrency=tup(args.concurrency),
        endpoints=tup(args.endpoints), open_loop=not args.no_open_loop, simulate=not args.no_simulate,
        simulate_timeout_s=args.simulate_timeout, pin=not args.no_pin, serve_args=tuple(args.serve_arg),
        ready_timeout_s=args.ready_timeout, command=command)


def cmd_loadtest(args: argparse.Namespace) -> int:
    from loadtest import report, session

    options = options_from_args(args)
    if args.render_only:
        print(session.rerender(options))
        return 0
    path, result = session.run(options)
    h = report.headline(result)
    print(report.headline_text(h, report.device_label(result.machine)).replace("**", ""), file=sys.stderr)
    print(path)
    return 0 if result.rows else 1
