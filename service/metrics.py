"""The service's Prometheus series (names fixed by the cross-team contract).

prometheus-client is used directly: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` before its
workers import the service, so these series are aggregated across workers on ``/metrics``
next to BentoML's own request metrics. ``endpoint`` is ``sample`` or ``logprob``.
"""
from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

from models.solvers import SolveStats, Status

_NFE_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

REQUESTS = Counter("knet_requests_total", "Requests that reached a solve endpoint, per model",
                   ["model", "endpoint"])
SAMPLES = Counter("knet_samples_total", "Rows sampled or scored", ["model", "endpoint"])
SOLVER_NFE = Histogram("knet_solver_nfe", "Vector-field evaluations per solve", ["model", "endpoint"],
                       buckets=_NFE_BUCKETS)
SOLVE_SECONDS = Histogram("knet_solve_seconds", "Server-side solve wall time, seconds", ["model", "endpoint"],
                          buckets=_SECONDS_BUCKETS)
SOLVER_FAILURES = Counter("knet_solver_failures_total", "Solves that did not succeed, by status",
                          ["model", "endpoint", "status"])
BATCH_SIZE = Histogram("knet_batch_size", "Rows per solver batch", ["endpoint"], buckets=_ROWS_BUCKETS)
PROJECTED_CHIP_LATENCY = Gauge("knet_projected_chip_latency_seconds",
                               "Projected analog-chip latency of one pass, seconds", ["model"],
                               multiprocess_mode="max")


@functools.lru_cache(maxsize=1024)
def _series(model: str, endpoint: str):
    """The labelled children of one (model, endpoint): ``labels()`` takes a lock and hashes the
    labels on every call, which costs more than the observation itself."""
    return (SOLVER_NFE.labels(model, endpoint), SOLVE_SECONDS.labels(model, endpoint), BATCH_SIZE.labels(endpoint),
            REQUESTS.labels(model, endpoint), SAMPLES.labels(model, endpoint))


def count_request(model: str, endpoint: str, rows: int) -> None:
    """Count a request of ``rows`` rows that reached a solve endpoint."""
    *_, requests, samples = _series(model, endpoint)
    requests.inc()
    samples.inc(rows)


def observe_solve(model: str, endpoint: str, rows: int, stats: SolveStats) -> None:
    """Record one solver batch of ``rows`` rows."""
    nfe, seconds, batch, *_ = _series(model, endpoint)
    nfe.observe(stats.nfe)
    seconds.observe(stats.wall_s)
    batch.observe(rows)
    if stats.status != Status.SUCCESS:
        SOLVER_FAILURES.labels(model, endpoint, stats.status.name.lower()).inc()
