"""Per-request overhead of the service, side by side with a no-op endpoint on the same server.

    knet bench-overhead [--model twomoon] [--rounds 300]

Starts one server (one worker, the models already in the BentoML store) with
``KNET_SERVICE_NOOP_ROUTES=true``, so that ``POST /noop/sample`` and ``/noop/logprob`` take the
same request schemas as ``/sample`` and ``/logprob`` and solve nothing. One client sends, in
round-robin (so a noisy moment hits every kind alike): ``/sample`` n=1, ``/noop/sample``,
``/logprob`` one point, ``/noop/logprob`` and ``GET /livez``. For each solve endpoint:

    overhead = p50(latency) − p50(solve_s)          (solve_s: the server's own solve time)
    ratio    = overhead / p50(no-op latency)        (the target: ≤ 1.3)

and the overhead over the ``/livez`` p50. Client and server share the machine's CPUs, so the
figures are ratios measured in one run, never absolute promises; the batcher's throughput under
concurrency is ``knet bench-batching``'s job.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

from models.errors import UserInputError
from service.launch import require_stored, running_server

TARGET_RATIO = 1.3  # docs/service.md "Where a request's time goes"


def _requests(model: str, dim: int) -> dict[str, tuple[str, str, dict | None]]:
    sample = {"model": model, "n": 1, "seed": 0}
    logprob = {"model": model, "points": [[0.1] * dim]}
    return {"sample": ("POST", "/sample", sample), "noop_sample": ("POST", "/noop/sample", sample),
            "logprob": ("POST", "/logprob", logprob), "noop_logprob": ("POST", "/noop/logprob", logprob),
            "livez": ("GET", "/livez", None)}


def measure(url: str, model: str, rounds: int, warmup: int = 20) -> dict[str, dict[str, list[float]]]:
    """Latencies (s) of every request kind, and the server's ``solve_s`` where it reports one,
    over ``rounds`` round-robin rounds after ``warmup`` unrecorded ones."""
    with httpx.Client(base_url=url, timeout=30) as client:
        dim = next(m["data_dim"] for m in client.get("/models").json()["models"] if m["name"] == model)
        kinds = _requests(model, dim)
        seen: dict[str, dict[str, list[float]]] = {k: {"latency_s": [], "solve_s": []} for k in kinds}
        for i in range(warmup + rounds):
            for kind, (method, path, body) in kinds.items():
                t = time.perf_counter()
                r = client.request(method, path, json=body)
                elapsed = time.perf_counter() - t
                if r.status_code != 200:
                    raise RuntimeError(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
                if i >= warmup:
                    seen[kind]["latency_s"].append(elapsed)
                    if "solve_s" in (data := r.json() if method == "POST" else {}):
                        seen[kind]["solve_s"].append(data["solve_s"])
    return seen


def summarize(seen: dict[str, dict[str, list[float]]]) -> dict:
    """p50s (ms), overheads and the ratios of :func:`measure`'s samples."""
    p50 = {k: 1e3 * statistics.median(v["latency_s"]) for k, v in seen.items()}
    out: dict = {"p50_ms": p50}
    for kind in ("sample", "logprob"):
        solve_ms = 1e3 * statistics.median(seen[kind]["solve_s"])
        overhead = p50[kind] - solve_ms
        out[kind] = {"p50_ms": p50[kind], "solve_p50_ms": solve_ms, "overhead_ms": overhead,
                     "noop_p50_ms": p50["noop_" + kind], "overhead_over_noop": overhead / p50["noop_" + kind],
                     "overhead_over_livez": overhead / p50["livez"]}
    return out


def print_table(summary: dict) -> None:
    print(f"{'endpoint':<10}{'p50 ms':>9}{'solve p50':>11}{'overhead':>10}{'no-op p50':>11}"
          f"{'÷ no-op':>9}{'÷ /livez':>10}")
    for kind in ("sample", "logprob"):
        s = summary[kind]
        print(f"{kind:<10}{s['p50_ms']:>9.2f}{s['solve_p50_ms']:>11.2f}{s['overhead_ms']:>10.2f}"
              f"{s['noop_p50_ms']:>11.2f}{s['overhead_over_noop']:>9.2f}{s['overhead_over_livez']:>10.2f}")
    print(f"/livez p50 {summary['p50_ms']['livez']:.2f} ms; target: overhead ÷ no-op ≤ {TARGET_RATIO}")


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="twomoon")
    ap.add_argument("--rounds", type=int, default=300, help="round-robin rounds (each sends all five kinds)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")


def run_from_args(args: argparse.Namespace) -> int:
    """Start the server, measure, print; returns the exit code."""
    if args.rounds < 1:
        raise UserInputError("--rounds must be >= 1")
    require_stored(args.model)
    with running_server({"KNET_SERVICE_NOOP_ROUTES": "true", "KNET_SERVICE_WORKERS": "1"}) as url:
        summary = summarize(measure(url, args.model, args.rounds))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_table(summary)
    return 0
