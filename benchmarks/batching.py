"""Side-by-side measurement of the micro-batcher on localhost (bounded, a few seconds).

    knet bench-batching [--model twomoon] [--clients 16] [--seconds 5]

Starts the service twice on the models already in the BentoML store — with
``KNET_SERVICE_BATCHING=true`` and ``=false`` — and for each: the latency of single
requests (one client, ``/sample`` n=1 and ``/logprob`` 1 point); ``--clients`` concurrent
closed-loop clients of one-row ``/logprob`` and ``/sample`` requests for ``--seconds``; the
same again next to one client sending ``--large``-row ``/logprob`` requests (starvation).
``--solver-only DIR`` instead compares the batcher in-process, without HTTP. Prints requests/s,
p50/p99 and the batched/unbatched throughput ratio. Client and server share this machine's
CPU, so the figures are a CPU smoke test, not a capacity statement.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from models.errors import UserInputError
from service.launch import require_stored, running_server


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def _single(url: str, model: str, dim: int, repeats: int) -> dict:
    out = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        for name, path, body in (("sample_n1", "/sample", {"model": model, "n": 1, "seed": 0}),
                                 ("logprob_1pt", "/logprob", {"model": model, "points": [[0.1] * dim]})):
            lat = []
            for _ in range(repeats):
                t = time.perf_counter()
                r = await c.post(path, json=body)
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
            out[name] = {"p50_ms": 1e3 * statistics.median(lat), "p90_ms": 1e3 * _pct(lat, 0.9)}
    return out


async def _load(url: str, model: str, dim: int, clients: int, seconds: float, large: int) -> dict:
    """``clients`` closed-loop one-row clients, plus one client of ``large``-row /logprob
    requests when ``large`` > 0."""
    lat: dict[str, list[float]] = {"small": [], "large": []}
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(c: httpx.AsyncClient, i: int, big: bool) -> None:
        nonlocal errors
        k = 0
        while time.perf_counter() < stop:
            k += 1
            if big:
                path, body = "/logprob", {"model": model, "points": [[0.01 * (j % 50)] * dim for j in range(large)]}
            elif (i + k) % 2:
                path, body = "/logprob", {"model": model, "points": [[0.1 * (i % 7)] * dim]}
            else:
                path, body = "/sample", {"model": model, "n": 1, "seed": i * 1000 + k}
            t = time.perf_counter()
            r = await c.post(path, json=body)
            (lat["large"] if big else lat["small"]).append(time.perf_counter() - t)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        t0 = time.perf_counter()
        bigs = [client(c, -1, True)] if large else []
        await asyncio.gather(*(client(c, i, False) for i in range(clients)), *bigs)
        wall = time.perf_counter() - t0
    small = lat["small"]
    return {"small_req_per_s": len(small) / wall, "small_p50_ms": 1e3 * _pct(small, 0.5),
            "small_p99_ms": 1e3 * _pct(small, 0.99), "large_requests": len(lat["large"]),
            "large_p50_ms": 1e3 * _pct(lat["large"], 0.5), "errors": errors}


def solver_only(model_dir: str, requests: int, rows: int) -> dict:
    """Without HTTP: ``requests`` concurrent ``rows``-row sample requests through the
    micro-batcher, enabled vs disabled (each request its own solve), in this process."""
    import torch

    from models.checkpoint import load_model
    from service.batching import MicroBatcher, SolveKey
    from service.config import current

    model = load_model(model_dir)
    key = SolveKey("sample", True, model.spec.solver)
    zs = [torch.randn(rows, model.data_dim, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
          for i in range(requests)]
    out = {}
    for enabled in (True, False):
        async def run(enabled: bool = enabled) -> float:
            b = MicroBatcher(model, current().max_batch_rows, current().slice_rows, enabled=enabled)
            t = time.perf_counter()
            await asyncio.gather(*(b.submit(key, z) for z in zs))
            b.close()
            return time.perf_counter() - t
        out["batched_s" if enabled else "unbatched_s"] = asyncio.run(run())
    out["ratio"] = out["unbatched_s"] / out["batched_s"]
    return out


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="twomoon")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--large", type=int, default=2048, help="rows of the large client's requests")
    ap.add_argument("--repeats", type=int, default=30, help="single-request latency samples")
    ap.add_argument("--solver-only", metavar="CHECKPOINT_DIR",
                    help="only the in-process batcher comparison on this checkpoint (no HTTP)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the comparison the flags ask for and print it as JSON; returns the exit code."""
    if args.clients < 1 or args.seconds <= 0 or args.repeats < 1 or args.large < 0:
        raise UserInputError("--clients and --repeats must be >= 1, --seconds > 0, --large >= 0")
    if args.solver_only:
        print(json.dumps({f"{args.clients}x{r}_rows": solver_only(args.solver_only, args.clients, r)
                          for r in (1, 16)}, indent=1))
        return 0
    require_stored(args.model)
    results = {}
    for batching in (True, False):
        env = {"KNET_SERVICE_BATCHING": str(batching).lower(), "KNET_SERVICE_MAX_CONCURRENCY": "1000"}
        with running_server(env) as url:
            dim = next(m["data_dim"] for m in httpx.get(url + "/models").json()["models"] if m["name"] == args.model)
            single = asyncio.run(_single(url, args.model, dim, args.repeats))
            small = asyncio.run(_load(url, args.model, dim, args.clients, args.seconds, 0))
            mixed = asyncio.run(_load(url, args.model, dim, args.clients, args.seconds, args.large))
        results["batched" if batching else "unbatched"] = {**single, "small_only": small, "with_large_client": mixed}
    b, u = results["batched"], results["unbatched"]
    results["throughput_ratio_small_only"] = b["small_only"]["small_req_per_s"] / u["small_only"]["small_req_per_s"]
    results["throughput_ratio_with_large_client"] = (b["with_large_client"]["small_req_per_s"]
                                                     / u["with_large_client"]["small_req_per_s"])
    print(json.dumps(results, indent=1))
    return 0
