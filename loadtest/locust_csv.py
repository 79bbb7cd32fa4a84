"""Read what ``locust --csv PREFIX`` writes: ``PREFIX_stats.csv`` and ``PREFIX_failures.csv``.

Locust keeps response times in rounded buckets (whole ms below 100 ms, 10 ms below 1 s,
100 ms above), so its percentiles have that resolution; the average is exact.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

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
