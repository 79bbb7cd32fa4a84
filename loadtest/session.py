"""One whole ``knet loadtest`` run: check the target, start the server (or use ``--url``),
run the plan, describe the machine and write the report.

The command line only turns flags into :class:`LoadTestOptions`; everything else is here.
Errors about the input (a remote ``--url``, locust missing, a server that does not start)
are :class:`models.errors.UserInputError`.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import ipaddress
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from models.errors import UserInputError
from service.launch import ServerProcess, knet_serve_command

from . import machine, report, runner
from .circuit import resolve_models
from .plan import DEFAULT_MODELS, Endpoint, Plan, quick_plan
from .results import LoadTestResult

REPO_ROOT = Path(__file__).resolve().parent.parent
# the service settings that shape the figures, copied into the report
REPORTED_SETTINGS = ("workers", "threads", "batching", "max_batch_rows", "slice_rows", "max_concurrency", "device")


@dataclass(frozen=True)
class LoadTestOptions:
    """What to measure and where; None means the plan's default."""

    url: str | None = None  # a running service on this machine; None: start `knet serve`
    models: tuple[str, ...] | None = None
    quick: bool = False
    out: Path | None = None  # default: reports/cpu or reports/gpu
    step_s: float | None = None
    max_requests: int | None = None
    rows: tuple[int, ...] | None = None
    concurrency: tuple[int, ...] | None = None
    endpoints: tuple[Endpoint, ...] | None = None
    open_loop: bool = True
    simulate: bool = True
    simulate_timeout_s: float = 240.0
    pin: bool = True
    serve_args: tuple[str, ...] = ()
    ready_timeout_s: float = 180.0
    command: str = "knet loadtest"


def check_loopback(url: str) -> str:
    """Return ``url`` without a trailing slash if it points at this machine's loopback.

    Raises:
        UserInputError: not an http(s) URL, or a host other than localhost / 127.0.0.0/8 / ::1.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserInputError(f"--url must look like http://127.0.0.1:PORT, got {url!r}")
    host = parsed.hostname
    ok = host == "localhost"
    if not ok:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
    if not ok:
        raise UserInputError(f"--url host {host!r} is not loopback: load tests only target this machine "
                             "(localhost, 127.0.0.1 or ::1)")
    return url.rstrip("/")


def build_plan(options: LoadTestOptions, models: tuple[str, ...]) -> Plan:
    """The :class:`Plan` the options ask for (the quick plan or the full matrix, then overrides)."""
    plan = quick_plan(models[0], step_s=options.step_s or 3.0) if options.quick else Plan().with_models(models)
    changes = {k: v for k, v in {"step_s": options.step_s, "max_requests": options.max_requests,
                                 "rows": options.rows, "concurrency": options.concurrency,
                                 "endpoints": options.endpoints}.items() if v is not None}
    if not options.open_loop:
        changes["open_loop"] = None
    try:
        return replace(plan, **changes) if changes else plan
    except ValueError as err:
        raise UserInputError(str(err)) from None


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


def default_out_dir(device: str) -> Path:
    return REPO_ROOT / "reports" / ("gpu" if device.startswith("cuda") else "cpu")


def rerender(options: LoadTestOptions) -> Path:
    """Rewrite the report and plots from OUT/results.json without measuring."""
    from service.config import ServiceSettings
    out = (options.out or default_out_dir(ServiceSettings.from_env().torch_device())).resolve()
    try:
        return report.rerender(out)
    except ValueError as err:
        raise UserInputError(str(err)) from None


def run(options: LoadTestOptions) -> tuple[Path, LoadTestResult]:
    """Measure what ``options`` ask for and write the report; returns its path and the result.

    Raises:
        UserInputError: locust missing, a non-loopback ``url``, a server that does not start,
            or a plan the options make invalid.
    """
    from service.config import ServiceSettings

    if importlib.util.find_spec("locust") is None:
        raise UserInputError("locust is not installed; install it with: pip install -e '.[loadtest]'")
    service_settings = ServiceSettings.from_env()
    out = (options.out or default_out_dir(service_settings.torch_device())).resolve()
    started = options.url is None
    url = None if started else check_loopback(options.url)
    resolved = resolve_models(options.models or DEFAULT_MODELS)
    plan = build_plan(options, tuple(resolved))
    server_cpus, client_cpus = machine.pinning(not options.pin, started)
    print(f"[loadtest] {len(plan.closed_steps())} closed-loop steps"
          f"{' + open loop' if plan.open_loop else ''}, about {plan.estimated_s() / 60:.1f} min of load"
          f"{' + knet simulate per model' if options.simulate else ''} → {out}", file=sys.stderr)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for old in [*raw.glob("step*"), *raw.glob("body_*.json"), raw / "server.log"]:
        old.unlink(missing_ok=True)  # a previous run's files, so raw/ matches this report
    t0 = time.monotonic()
    started_utc = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def measure(base_url: str, server_desc: str, server_cpus_now: str | None) -> LoadTestResult:
        devices = machine.served_devices(base_url)
        info = machine.describe(server_cpus_now, client_cpus, service_settings.threads,
                                ",".join(devices) or service_settings.torch_device())
        info["service_settings"] = {k: v for k, v in service_settings.model_dump().items() if k in REPORTED_SETTINGS}
        info["service_settings_source"] = ("KNET_SERVICE_* environment of the started server" if started else
                                           "this shell's KNET_SERVICE_* environment (the running server may differ)")
        ctx = runner.RunContext(base_url, raw, client_cpus=client_cpus, simulate=options.simulate,
                                simulate_timeout_s=options.simulate_timeout_s, models=resolved)
        try:
            result = runner.run_plan(plan, ctx)
        except RuntimeError as err:
            raise UserInputError(str(err)) from None
        info["loadavg_end"] = os.getloadavg()
        result.machine = info
        result.server = server_desc
        result.cores_statement = machine.cores_statement(server_cpus_now, client_cpus, started, os.cpu_count() or 1)
        return result

    if started:
        log = raw / "server.log"
        server = ServerProcess(lambda port: knet_serve_command(port, options.serve_args), cpus=server_cpus,
                               ready_timeout_s=options.ready_timeout_s, log_path=log)
        try:
            server.__enter__()
        except RuntimeError as err:
            trim_log(log)
            raise UserInputError(f"could not start the service: {str(err)[:500]} (log: {log})") from None
        try:
            desc = (f"`knet serve --port {server.port}{''.join(' ' + a for a in options.serve_args)}`, "
                    "started by the load test and stopped after it")
            result = measure(server.url, desc, machine.affinity(server.pid))
        finally:
            server.stop()
            trim_log(log)
    else:
        result = measure(url, f"already running at {url}", None)
    result.started_utc, result.command, result.wall_s = started_utc, options.command, time.monotonic() - t0
    result.plan = {"step_s": plan.step_s, "max_requests": plan.max_requests, "models": plan.models,
                   "rows": plan.rows, "concurrency": plan.concurrency, "endpoints": plan.endpoints}
    return report.write(result, out), result
