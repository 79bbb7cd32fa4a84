"""``knet loadtest``: served latency beside the circuit's projected timing, as a report."""
from __future__ import annotations

import argparse
import importlib.util
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

from .settings import REPO_ROOT


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


def pinning(no_pin: bool, started: bool, n: int | None = None) -> tuple[str | None, str | None]:
    """(server CPUs, client CPUs) as taskset lists: the load generator gets the lower half of
    the CPUs (CPU 0 on a 2-CPU box), the server the upper half, so neither steals the other's
    cores; None where not pinned (one CPU, --no-pin, or a server we did not start)."""
    n = n or os.cpu_count() or 1
    if no_pin or n < 2:
        return None, None
    half = n // 2
    client = "0" if half == 1 else f"0-{half - 1}"
    server = f"{half}" if n - half == 1 else f"{half}-{n - 1}"
    return (server if started else None), client


def cores_statement(server_cpus: str | None, client_cpus: str | None, started: bool, ncpu: int) -> str:
    from loadtest.target import cpu_count
    if started and server_cpus and client_cpus:
        return (f"The load generator (locust, and the open-loop generator) ran on this same machine, pinned with "
                f"`taskset` to CPU {client_cpus}; the server was pinned to CPU {server_cpus}, so it had "
                f"{cpu_count(server_cpus)} of the {ncpu} logical CPUs. Other processes on the machine were not "
                "pinned and could run on either CPU (see the load average).")
    if client_cpus:
        return (f"The load generator ran on this machine pinned to CPU {client_cpus}; the server was started "
                f"elsewhere on this machine (CPUs: {server_cpus or 'unknown'}).")
    return (f"The load generator and the server shared all {ncpu} logical CPUs of this machine (not pinned): "
            "the figures include their contention.")


def build_plan(args: argparse.Namespace, models: tuple[str, ...]):
    """The :class:`loadtest.plan.Plan` the flags ask for."""
    from dataclasses import replace

    from loadtest.plan import Plan, quick_plan
    plan = quick_plan(models[0], step_s=args.step_s or 3.0) if args.quick else Plan().with_models(models)
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in {
        "step_s": args.step_s, "max_requests": args.max_requests, "rows": args.rows,
        "concurrency": args.concurrency, "endpoints": args.endpoints}.items() if v is not None}
    if args.no_open_loop:
        changes["open_loop"] = None
    return replace(plan, **changes) if changes else plan


def trim_log(path: Path, head: int = 60, tail: int = 60) -> None:
    """Keep the first and last lines of the server log (one access-log line per request
    would make a committed report megabytes long)."""
    if not path.is_file():
        return
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) > head + tail:
        cut = len(lines) - head - tail
        kept = [*lines[:head], f"[… {cut} lines cut by knet loadtest …]", *lines[-tail:]]
        path.write_text("\n".join(kept) + "\n")


def cmd_loadtest(args: argparse.Namespace) -> int:
    from loadtest import machine, report, runner
    from loadtest.circuit import resolve_models
    from loadtest.plan import DEFAULT_MODELS
    from loadtest.target import ServedService, check_loopback
    from service.config import ServiceSettings

    from .cli import UserError

    if not args.render_only and importlib.util.find_spec("locust") is None:
        raise UserError("locust is not installed; install it with: pip install -e '.[loadtest]'")
    service_settings = ServiceSettings.from_env()
    device = service_settings.torch_device()
    out = (args.out or REPO_ROOT / "reports" / ("gpu" if device.startswith("cuda") else "cpu")).resolve()
    if args.render_only:
        print(report.rerender(out))
        return 0
    resolved = resolve_models(tuple(args.models) if args.models else DEFAULT_MODELS)
    plan = build_plan(args, tuple(resolved))
    started = args.url is None
    server_cpus, client_cpus = pinning(args.no_pin, started)
    url = None if started else check_loopback(args.url)
    print(f"[loadtest] {len(plan.closed_steps())} closed-loop steps"
          f"{' + open loop' if plan.open_loop else ''}, about {plan.estimated_s() / 60:.1f} min of load"
          f"{'' if args.no_simulate else ' + knet simulate per model'} → {out}",
          file=sys.stderr)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for old in [*raw.glob("step*"), *raw.glob("body_*.json"), raw / "server.log"]:
        old.unlink(missing_ok=True)  # a previous run's files, so raw/ matches this report
    threads = service_settings.threads
    t0 = time.monotonic()
    started_utc = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "knet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["loadtest"] \
        else "knet loadtest"

    def measure(base_url: str, server_desc: str, server_cpus_now: str | None) -> dict:
        devices = machine.served_devices(base_url)
        info = machine.describe(server_cpus_now, client_cpus, threads, ",".join(devices) or device)
        info["service_settings"] = {k: v for k, v in service_settings.model_dump().items()
                                    if k in ("workers", "threads", "batching", "max_batch_rows", "slice_rows",
                                             "max_concurrency", "device")}
        info["service_settings_source"] = ("KNET_SERVICE_* environment of the started server" if started else
                                           "this shell's KNET_SERVICE_* environment (the running server may differ)")
        ctx = runner.RunContext(base_url, raw, client_cpus=client_cpus, simulate=not args.no_simulate,
                                simulate_timeout_s=args.simulate_timeout, models=resolved)
        try:
            result = runner.run_plan(plan, ctx)
        except RuntimeError as err:
            raise UserError(str(err)) from None
        info["loadavg_end"] = os.getloadavg()
        return {**result, "machine": info, "server": server_desc,
                "cores_statement": cores_statement(server_cpus_now, client_cpus, started, os.cpu_count() or 1)}

    if started:
        try:
            with ServedService(cpus=server_cpus, extra_args=args.serve_arg, ready_timeout_s=args.ready_timeout,
                               log_path=raw / "server.log") as svc:
                desc = (f"`knet serve --port {svc.port}{''.join(' ' + a for a in args.serve_arg)}`, started by the "
                        "load test and stopped after it")
                result = measure(svc.url, desc, svc.cpus)
        except RuntimeError as err:
            raise UserError(f"could not start the service: {err} (log: {raw / 'server.log'})") from None
        finally:
            trim_log(raw / "server.log")
    else:
        result = measure(url, f"already running at {url}", None)
    result.update(started_utc=started_utc, command=command, wall_s=time.monotonic() - t0,
                  plan={"step_s": plan.step_s, "max_requests": plan.max_requests, "models": plan.models,
                        "rows": plan.rows, "concurrency": plan.concurrency, "endpoints": plan.endpoints})
    path = report.write(result, out)
    h = report.headline(result)
    print(report.headline_text(h, report.device_label(result["machine"])).replace("**", ""), file=sys.stderr)
    print(path)
    return 0 if result["rows"] else 1
