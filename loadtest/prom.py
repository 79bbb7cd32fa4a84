"""Scrape the service's ``/metrics`` (Prometheus text) and turn two scrapes into per-step figures.

The metric names are the service contract (``.notes/contracts.md``):
``knet_solve_seconds`` and ``knet_solver_nfe`` histograms, ``knet_samples_total``,
``knet_requests_total`` and ``knet_solver_failures_total`` counters, ``knet_batch_size``
histogram, all labelled ``{model, endpoint}`` (batch size by ``endpoint`` only).
A step's server-side figures are differences between a scrape after and one before it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def parse(text: str) -> Samples:
    """Prometheus exposition text → ``{(sample name, sorted labels): value}``.

    Raises:
        ValueError: the text is not valid exposition format.
    """
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def scrape(base_url: str, timeout_s: float = 5.0) -> tuple[str, Samples]:
    """GET ``base_url/metrics``: the raw text and its parse. Raises httpx errors or ValueError."""
    r = httpx.get(base_url.rstrip("/") + "/metrics", timeout=timeout_s)
    r.raise_for_status()
    return r.text, parse(r.text)


def keep_families(text: str, prefixes: tuple[str, ...] = ("knet_", "bentoml_service_request_in_progress"),
                  model: str | None = None) -> str:
    """The exposition ``text`` restricted to metric families whose names start with ``prefixes``
    (their HELP/TYPE comments included) and, given ``model``, to series of that model or with no
    model label: still valid Prometheus text, a fraction of the size."""
    out = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# ") and len(line.split()) > 2 else line
        if not name.startswith(prefixes):
            continue
        if model is not None and not line.startswith("#") and 'model="' in line and f'model="{model}"' not in line:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of every sample called ``name`` whose labels include ``match``."""
    return sum(v for (n, labels), v in samples.items()
               if n == name and all((k, val) in labels for k, val in match.items()))


def in_progress(samples: Samples) -> float | None:
    """Requests the server is working on now: BentoML's ``bentoml_service_request_in_progress``
    gauge summed over the solve endpoints; None where the server does not expose it."""
    vals = [v for (n, labels), v in samples.items() if n == "bentoml_service_request_in_progress"
            and dict(labels).get("endpoint") in ("/sample", "/logprob")]
    return sum(vals) if vals else None


def buckets(samples: Samples, name: str, **match: str) -> list[tuple[float, float]]:
    """Cumulative ``(upper bound, count)`` pairs of histogram ``name`` (summed over other
    labels), sorted by bound; ``+Inf`` last."""
    acc: dict[float, float] = {}
    for (n, labels), v in samples.items():
        if n != f"{name}_bucket" or not all((k, val) in labels for k, val in match.items()):
            continue
        le = float(dict(labels)["le"])
        acc[le] = acc.get(le, 0.0) + v
    return sorted(acc.items())


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """Quantile ``q`` from cumulative bucket counts, interpolating linearly inside the bucket
    (what PromQL's ``histogram_quantile`` does). None when the histogram is empty; the
    highest finite bound when the quantile falls in the ``+Inf`` bucket."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in cumulative:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


@dataclass(frozen=True)
class ServerDelta:
    """What the server did for one (model, endpoint) between two scrapes."""

    requests: float
    rows: float
    solves: float
    solve_s_total: float
    nfe_total: float
    solve_p50_s: float | None
    solve_p99_s: float | None
    failures_by_status: dict[str, float]
    batches: float
    batch_rows_total: float

    @property
    def solve_mean_s(self) -> float | None:
        return self.solve_s_total / self.solves if self.solves else None

    @property
    def nfe_mean(self) -> float | None:
        return self.nfe_total / self.solves if self.solves else None

    @property
    def batch_mean(self) -> float | None:
        return self.batch_rows_total / self.batches if self.batches else None


def delta(before: Samples, after: Samples, model: str, endpoint: str) -> ServerDelta:
    """Differences ``after − before`` of the contract metrics for ``model``/``endpoint``."""
    def d(name: str, **m: str) -> float:
        return total(after, name, **m) - total(before, name, **m)

    lab = {"model": model, "endpoint": endpoint}
    b0, b1 = buckets(before, "knet_solve_seconds", **lab), buckets(after, "knet_solve_seconds", **lab)
    start = dict(b0)
    diff = [(le, c - start.get(le, 0.0)) for le, c in b1]
    failures: dict[str, float] = {}
    for (n, labels), v in after.items():
        ld = dict(labels)
        if n == "knet_solver_failures_total" and ld.get("model") == model and ld.get("endpoint") == endpoint:
            inc = v - before.get((n, labels), 0.0)
            if inc:
                failures[ld.get("status", "?")] = failures.get(ld.get("status", "?"), 0.0) + inc
    return ServerDelta(
        requests=d("knet_requests_total", **lab),
        rows=d("knet_samples_total", **lab),
        solves=d("knet_solve_seconds_count", **lab),
        solve_s_total=d("knet_solve_seconds_sum", **lab),
        nfe_total=d("knet_solver_nfe_sum", **lab),
        solve_p50_s=histogram_quantile(0.5, diff),
        solve_p99_s=histogram_quantile(0.99, diff),
        failures_by_status=failures,
        batches=d("knet_batch_size_count", endpoint=endpoint),
        batch_rows_total=d("knet_batch_size_sum", endpoint=endpoint),
    )
