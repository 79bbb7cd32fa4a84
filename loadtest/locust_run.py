"""One closed-loop step: ``locust --headless`` in its own process, bounded in time and count,
and the reading of what it writes (``PREFIX_stats.csv`` and ``PREFIX_failures.csv``).

Locust keeps response times in rounded buckets (whole ms below 100 ms, 10 ms below 1 s,
100 ms above), so its percentiles have that resolution; the average is exact.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from service.launch import taskset_prefix

from .plan import Step

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# After -t, each client may finish the request it has in flight (so slow requests, e.g. 1024
# rows at 8 clients, are counted rather than cut off); longer ones are abandoned.
STOP_TIMEOUT_S = 30.0
PERCENTILE_COLUMNS = {"p50": "50%", "p95": "95%", "p99": "99%"}
_HTTP = re.compile(r"HTTP (\d{1,3})\b")


@dataclass(frozen=True)
class EndpointStats:
    """One row of ``_stats.csv``; times in seconds."""

    name: str
    requests: int
    failures: int
    rps: float
    mean_s: float
    min_s: float
    max_s: float
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None


@dataclass(frozen=True)
class LocustResult:
    """A closed-loop step as locust saw it: the aggregated row and failures by status."""

    stats: EndpointStats
    errors_by_status: dict[str, int] = field(default_factory=dict)


def _ms(value: str) -> float | None:
    """Locust writes ``N/A`` where it has no data."""
    value = (value or "").strip()
    if not value or value == "N/A":
        return None
    return float(value) / 1000.0


def read_stats(path: Path, name: str = "Aggregated") -> EndpointStats:
    """The row named ``name`` (default: the ``Aggregated`` row) of a locust ``_stats.csv``.

    Raises:
        ValueError: the file lacks the row or a required column.
    """
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row.get("Name") == name:
            break
    else:
        raise ValueError(f"{path}: no row named {name!r} (rows: {[r.get('Name') for r in rows]})")
    try:
        return EndpointStats(
            name=name,
            requests=int(row["Request Count"]),
            failures=int(row["Failure Count"]),
            rps=float(row["Requests/s"]),
            mean_s=_ms(row["Average Response Time"]) or 0.0,
            min_s=_ms(row["Min Response Time"]) or 0.0,
            max_s=_ms(row["Max Response Time"]) or 0.0,
            **{f"{k}_s": _ms(row[col]) for k, col in PERCENTILE_COLUMNS.items()},
        )
    except KeyError as err:
        raise ValueError(f"{path}: missing column {err}") from None


def read_failures(path: Path) -> dict[str, int]:
    """Failure counts keyed by HTTP status (``"503"``), ``"connection"`` for status 0
    (no answer), or the error text for anything else. A missing file means no failures."""
    if not path.is_file():
        return {}
    out: dict[str, int] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            error = row.get("Error", "")
            m = _HTTP.search(error)
            key = (m.group(1) if m.group(1) != "0" else "connection") if m else error.strip()[:80]
            out[key] = out.get(key, 0) + int(row.get("Occurrences", 0) or 0)
    return out


def read_result(prefix: Path) -> LocustResult:
    """``PREFIX_stats.csv`` + ``PREFIX_failures.csv`` → :class:`LocustResult`."""
    stats = read_stats(Path(f"{prefix}_stats.csv"))
    return LocustResult(stats, read_failures(Path(f"{prefix}_failures.csv")))


def locust_command(step: Step, url: str) -> list[str]:
    """The locust command line for ``step`` (all users spawned at once, no UI); the
    locustfile writes the final CSVs itself (see its docstring)."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-H", url,
            "-u", str(step.users), "-r", str(step.users), "-t", f"{step.duration_s:g}s",
            "--stop-timeout", f"{STOP_TIMEOUT_S:g}", "--only-summary",
            "--exit-code-on-error", "0", "--loglevel", "WARNING"]


def run_closed(step: Step, url: str, body_path: Path, csv_prefix: Path, client_cpus: str | None = None,
               grace_s: float = STOP_TIMEOUT_S + 30.0) -> LocustResult:
    """Run ``step`` against ``url`` with the JSON body in ``body_path``; CSVs at ``csv_prefix``.

    Raises:
        RuntimeError: locust failed or overran ``step.duration_s + grace_s`` (it is killed).
    """
    if step.mode != "closed":
        raise ValueError("run_closed takes closed-loop steps")
    path = "/" + step.scenario.endpoint
    env = {**os.environ, "KNET_LT_PATH": path, "KNET_LT_BODY": str(body_path),
           "KNET_LT_MAX_REQUESTS": str(step.max_requests), "KNET_LT_CSV": str(csv_prefix),
           "OMP_NUM_THREADS": "1"}
    cmd = taskset_prefix(client_cpus) + locust_command(step, url)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=step.duration_s + grace_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"locust overran {step.duration_s + grace_s:.0f} s on {step.label}") from None
    Path(f"{csv_prefix}_locust.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"locust exited {proc.returncode} on {step.label}:\n{tail}")
    if not Path(f"{csv_prefix}_stats.csv").is_file():
        raise RuntimeError(f"locust wrote no final stats on {step.label} (see {csv_prefix}_locust.txt)")
    return read_result(csv_prefix)
