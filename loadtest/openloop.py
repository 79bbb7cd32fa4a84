"""Open-loop load: requests fired on a fixed clock, whether or not earlier ones have answered.

Closed-loop clients slow down when the server does, which hides saturation; an open-loop
client keeps the arrival rate, so past the server's capacity the queue and the latency
grow for as long as the step lasts. Latency is measured from each request's *scheduled*
send time, so client-side queueing counts too (no coordinated omission). Bounded: at most
``max_requests`` over ``duration_s``, at most ``max_in_flight`` outstanding (a request due
while that many are open is *dropped* and counted), and a final ``grace_s`` after which
open requests are cancelled and counted as ``timeout``.

Run as its own process (so it can be pinned to the client's CPUs)::

    python -m loadtest.openloop --url http://127.0.0.1:3000 --path /sample --body body.json \\
        --rate 40 --duration 5 --out result.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx


async def _fire(client: httpx.AsyncClient, url: str, body: bytes, due: float, t0: float, out: list) -> None:
    try:
        r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
        status = str(r.status_code)
    except httpx.HTTPError:
        status = "connection"
    out.append((due - t0, time.perf_counter() - due, status))


async def run(url: str, body: bytes, rate: float, duration_s: float, max_requests: int,
              max_in_flight: int, grace_s: float = 10.0) -> dict:
    """Fire ``POST url`` at ``rate`` per second; see the module docstring for the bounds.

    Returns a JSON-able dict: ``records`` as ``[scheduled offset s, latency s, status]``,
    plus ``sent``, ``dropped``, ``timeouts``, ``wall_s`` and the settings.
    """
    records: list = []
    tasks: set[asyncio.Task] = set()
    dropped = 0
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    timeout = httpx.Timeout(duration_s + grace_s)
    n = min(max_requests, max(1, int(rate * duration_s)))
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks = {t for t in tasks if not t.done()}
            if len(tasks) >= max_in_flight:
                dropped += 1
                continue
            tasks.add(asyncio.create_task(_fire(client, url, body, due, t0, records)))
        _, pending = await asyncio.wait(tasks, timeout=grace_s) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        wall = time.perf_counter() - t0
    return {"records": records, "sent": n - dropped, "dropped": dropped, "timeouts": len(pending),
            "wall_s": wall, "rate_rps": rate, "duration_s": duration_s, "max_in_flight": max_in_flight}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.openloop", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="base URL (loopback)")
    p.add_argument("--path", required=True, help="/sample or /logprob")
    p.add_argument("--body", required=True, type=Path, help="file with the JSON request body")
    p.add_argument("--rate", required=True, type=float, help="requests per second")
    p.add_argument("--duration", required=True, type=float, help="seconds of firing")
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--grace", type=float, default=10.0, help="seconds to wait for stragglers")
    p.add_argument("--out", required=True, type=Path, help="result JSON")
    a = p.parse_args(argv)
    from .target import check_loopback
    url = check_loopback(a.url) + a.path
    result = asyncio.run(run(url, a.body.read_bytes(), a.rate, a.duration, a.max_requests,
                             a.max_in_flight, a.grace))
    a.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
