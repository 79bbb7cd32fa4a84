"""Run a :class:`~loadtest.plan.Plan` against a server and collect one row per step.

For every step: scrape ``/metrics``, run the load generator in its own process, scrape
again, and join the client's view (locust CSV or open-loop records) with the server's
(metric deltas) and the circuit's (projected chip latency).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from tqdm import tqdm

from service.launch import taskset_prefix

from . import circuit, prom
from .locust_run import LocustResult, run_closed
from .machine import PowerSampler
from .plan import Plan, Scenario, Step
from .results import LoadTestResult, StepRow


@dataclass
class RunContext:
    """Where to send load and where to write raw files."""

    url: str
    raw_dir: Path
    client_cpus: str | None = None
    simulate: bool = True
    simulate_timeout_s: float = 240.0
    models: dict = field(default_factory=dict)  # served name -> (MODEL argument, CircuitSpec | None)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` ∈ [0, 100] of ``values`` (None if empty)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def request_body(scenario: Scenario, points: list[list[float]] | None, with_logprob: bool) -> dict:
    """The JSON body of one request of ``scenario`` (the service contract's flat form)."""
    if scenario.endpoint == "sample":
        return {"model": scenario.model, "n": scenario.rows, "seed": 0, "with_logprob": with_logprob}
    if not points:
        raise ValueError(f"{scenario.key}: no points to score")
    reps = -(-scenario.rows // len(points))
    return {"model": scenario.model, "points": (points * reps)[: scenario.rows]}


def fetch_points(url: str, model: str, n: int, data_dim: int | None) -> tuple[list[list[float]], dict]:
    """Draw ``n`` points from the served model itself (in-distribution /logprob inputs).

    Falls back to standard-normal points of ``data_dim`` when /sample fails.
    Returns the points and the /sample response (without the arrays).
    """
    try:
        r = httpx.post(f"{url}/sample", json={"model": model, "n": n, "seed": 1, "with_logprob": False},
                       timeout=300)
        r.raise_for_status()
        body = r.json()
        pts = [p for p in body.get("samples") or [] if p and all(v is not None for v in p)]
        if pts:
            return pts, {k: v for k, v in body.items() if k not in ("samples", "logprob")}
    except (httpx.HTTPError, ValueError):
        pass
    if not data_dim:
        raise RuntimeError(f"{model}: /sample failed and the data dimension is unknown")
    import torch
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, data_dim, generator=g, dtype=torch.float64).tolist(), {}


def warm_up(url: str, scenario: Scenario, body: bytes, count: int) -> None:
    """A few sequential requests so the step does not measure first-call costs."""
    for _ in range(count):
        try:
            httpx.post(f"{url}/{scenario.endpoint}", content=body,
                       headers={"Content-Type": "application/json"}, timeout=300)
        except httpx.HTTPError:
            return


def run_open(step: Step, url: str, body_path: Path, out_path: Path, client_cpus: str | None,
             grace_s: float = 10.0) -> dict:
    """One open-loop step in a separate ``python -m loadtest.openloop`` process."""
    cmd = taskset_prefix(client_cpus) + [
        sys.executable, "-m", "loadtest.openloop", "--url", url, "--path", "/" + step.scenario.endpoint,
        "--body", str(body_path), "--rate", f"{step.rate_rps:.6g}", "--duration", f"{step.duration_s:g}",
        "--max-requests", str(step.max_requests), "--max-in-flight", str(step.max_in_flight),
        "--grace", f"{grace_s:g}", "--out", str(out_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=step.duration_s + grace_s + 30,
                              cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"open-loop generator overran on {step.label}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"open-loop generator exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return json.loads(out_path.read_text())


def ratios(p50_s: float | None, samples_per_s: float, chip_s: float | None) -> tuple[float | None, float | None]:
    """(per request, per sample): served p50 ÷ chip latency, and (1 ÷ samples/s) ÷ chip latency."""
    if not chip_s:
        return None, None
    per_request = p50_s / chip_s if p50_s else None
    per_sample = (1.0 / samples_per_s) / chip_s if samples_per_s > 0 else None
    return per_request, per_sample


def closed_client_row(res: LocustResult) -> dict:
    """Client-side figures of a closed-loop step as locust measured them (seconds, per second)."""
    s = res.stats
    return {"requests": s.requests, "failures": s.failures, "rps": s.rps, "mean_s": s.mean_s,
            "p50_s": s.p50_s, "p95_s": s.p95_s, "p99_s": s.p99_s, "max_s": s.max_s,
            "errors_by_status": res.errors_by_status, "ok_requests": s.requests - s.failures}


def open_client_row(step: Step, open_result: dict) -> dict:
    """Client-side figures of an open-loop step from its per-request records; throughput is
    200-answers over the whole firing + straggler time."""
    recs = open_result["records"]
    statuses: dict[str, int] = {}
    for _, _, st in recs:
        statuses[st] = statuses.get(st, 0) + 1
    ok = [lat for _, lat, st in recs if st == "200"]
    errors = {k: v for k, v in statuses.items() if k != "200"}
    if open_result["dropped"]:
        errors["dropped"] = open_result["dropped"]
    if open_result["timeouts"]:
        errors["timeout"] = open_result["timeouts"]
    lats = [lat for _, lat, _ in recs]
    n = len(recs) + open_result["dropped"] + open_result["timeouts"]
    return {"requests": n, "failures": n - len(ok), "rps": len(ok) / max(open_result["wall_s"], 1e-9),
            "mean_s": sum(lats) / len(lats) if lats else None,
            "p50_s": percentile(lats, 50), "p95_s": percentile(lats, 95), "p99_s": percentile(lats, 99),
            "max_s": max(lats) if lats else None, "errors_by_status": errors, "ok_requests": len(ok),
            "offered_rps": step.rate_rps}


def wait_idle(url: str, timeout_s: float = 90.0) -> float:
    """Wait until the server has no solve request in progress (requests a stopped client left
    behind would otherwise slow the next step down); returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        _, samples = _try_scrape(url)
        busy = prom.in_progress(samples) if samples is not None else None
        if not busy:
            break
        time.sleep(0.25)
    return time.monotonic() - t0


def run_step(step: Step, ctx: RunContext, body_path: Path, chip: circuit.CircuitFigures | None,
             projected_from_service: float | None, index: int, peak_closed_rps: float | None = None) -> StepRow:
    """Measure one step and return its report row."""
    sc = step.scenario
    drained_s = wait_idle(ctx.url)
    before_text, before = _try_scrape(ctx.url)
    sampler = PowerSampler()
    t0 = time.monotonic()
    with sampler:
        if step.mode == "closed":
            prefix = ctx.raw_dir / f"step{index:03d}"
            client = closed_client_row(run_closed(step, ctx.url, body_path, prefix, ctx.client_cpus))
        else:
            out = ctx.raw_dir / f"step{index:03d}_openloop.json"
            client = open_client_row(step, run_open(step, ctx.url, body_path, out, ctx.client_cpus))
    wall = time.monotonic() - t0
    after_text, after = _try_scrape(ctx.url)
    server = prom.delta(before, after, sc.model, sc.endpoint) if before is not None and after is not None else None
    chip_s = chip.chip_latency_s if chip else projected_from_service
    samples_per_s = client["rps"] * sc.rows
    ratio_request, ratio_sample = ratios(client["p50_s"], samples_per_s, chip_s)
    energy_j = sampler.energy_j()
    row = StepRow(
        model=sc.model, endpoint=sc.endpoint, rows=sc.rows, mode=step.mode,
        users=step.users if step.mode == "closed" else None,
        offered_rps=client.get("offered_rps"), duration_s=step.duration_s, wall_s=wall,
        drained_before_s=drained_s,
        **{k: v for k, v in client.items() if k != "offered_rps"},
        error_rate=client["failures"] / client["requests"] if client["requests"] else None,
        samples_per_s=samples_per_s,
        server_requests=server.requests if server else None,
        server_solves=server.solves if server else None,
        server_rows=server.rows if server else None,
        solve_mean_s=server.solve_mean_s if server else None,
        solve_p50_s=server.solve_p50_s if server else None,
        solve_p99_s=server.solve_p99_s if server else None,
        nfe_mean=server.nfe_mean if server else None,
        batch_mean=server.batch_mean if server else None,
        solver_failures=server.failures_by_status if server else None,
        chip_latency_s=chip_s, ratio_request=ratio_request, ratio_sample=ratio_sample,
        gpu_power_w=sampler.mean_w,
        gpu_j_per_sample=(energy_j / (client["ok_requests"] * sc.rows) if energy_j and client["ok_requests"]
                          else None),
        peak_closed_rps=peak_closed_rps,
    )
    # the knet_* series of this step's model (and BentoML's in-progress gauge): what the report uses
    for when, text in (("before", before_text), ("after", after_text)):
        (ctx.raw_dir / f"step{index:03d}_metrics_{when}.txt").write_text(prom.keep_families(text, model=sc.model))
    return row


def _try_scrape(url: str) -> tuple[str, prom.Samples | None]:
    """``(raw text, parsed)``; ``("# scrape failed: …", None)`` when /metrics is unusable."""
    try:
        return prom.scrape(url)
    except (httpx.HTTPError, ValueError) as err:
        return f"# scrape failed: {err}\n", None


def prepare_models(plan: Plan, ctx: RunContext, notes: list[str]) -> tuple[
        dict[str, circuit.CircuitFigures | None], dict[str, dict], dict[str, list]]:
    """Per model: the chip figures (with the ``knet simulate`` confirmation when asked), the
    service's first ``/sample`` answer (without arrays) and in-distribution points for
    ``/logprob``. Models that cannot be sampled get a note and no points (their steps are skipped)."""
    chips: dict[str, circuit.CircuitFigures | None] = {}
    service_info: dict[str, dict] = {}
    points: dict[str, list] = {}
    for m in plan.models:
        source, spec = ctx.models.get(m, (m, None))
        if spec is None:
            chips[m] = None
            notes.append(f"{m}: no local checkpoint, so the chip latency is the service's "
                         "`projected_chip_latency_s` and there is no circuit simulation")
        else:
            chips[m] = circuit.figures(spec, m)
        if ctx.simulate and chips[m] is not None:
            ctx.log(f"[loadtest] knet simulate {source} --json …")
            sim, why = circuit.simulate(source, ctx.simulate_timeout_s)
            if sim is None:
                notes.append(f"{m}: circuit simulation not available ({why})")
            else:
                chips[m] = replace(chips[m], simulated=sim)
        # one /sample per model: warms the model up, gives in-distribution /logprob points
        # and the service's own projected chip latency
        try:
            points[m], service_info[m] = fetch_points(ctx.url, m, max(plan.rows), spec.data_dim if spec else None)
        except RuntimeError as err:
            notes.append(f"{m}: skipped ({err})")
    return chips, service_info, points


def run_plan(plan: Plan, ctx: RunContext) -> LoadTestResult:
    """Run every step of ``plan``; returns the circuit figures, the rows and the notes (the
    caller adds where it ran). Progress goes to stderr."""
    ctx.raw_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    chips, service_info, points = prepare_models(plan, ctx, notes)
    closed = [s for s in plan.closed_steps() if s.scenario.model in points]
    rows: list[StepRow] = []
    bodies: dict[str, Path] = {}
    bar = tqdm(total=len(closed) + (len(plan.open_loop_factors) if plan.open_loop else 0),
               desc="load test", unit="step", file=sys.stderr)

    def body_for(sc: Scenario) -> Path:
        if sc.key not in bodies:
            path = ctx.raw_dir / f"body_{sc.model}_{sc.endpoint}_{sc.rows}.json"
            body = request_body(sc, points.get(sc.model), plan.with_logprob)
            data = json.dumps(body, separators=(",", ":")).encode()
            path.write_bytes(data)
            warm_up(ctx.url, sc, data, plan.warmup_requests)
            bodies[sc.key] = path
        return bodies[sc.key]

    def projected(m: str) -> float | None:
        return service_info.get(m, {}).get("projected_chip_latency_s")

    for step in closed:
        bar.set_postfix_str(step.label)
        try:
            rows.append(run_step(step, ctx, body_for(step.scenario), chips[step.scenario.model],
                                 projected(step.scenario.model), len(rows)))
        except RuntimeError as err:
            notes.append(f"{step.label}: {err}")
        bar.update()
    ol = plan.open_loop_scenario()
    if ol is not None:
        peak = max((r.rps for r in rows if r.mode == "closed" and r.model == ol.model
                    and r.endpoint == ol.endpoint and r.rows == ol.rows), default=0.0)
        if peak <= 0:
            notes.append(f"open loop skipped: no closed-loop throughput measured for {ol.key}")
        for step in plan.open_steps(peak):
            bar.set_postfix_str(step.label)
            try:
                rows.append(run_step(step, ctx, body_for(ol), chips.get(ol.model), projected(ol.model), len(rows),
                                     peak_closed_rps=peak))
            except RuntimeError as err:
                notes.append(f"{step.label}: {err}")
            bar.update()
    bar.close()
    for m, fig in chips.items():
        sp = projected(m)
        if fig is not None and sp is not None and not math.isclose(sp, fig.chip_latency_s, rel_tol=1e-6):
            notes.append(f"{m}: the service projects {sp:.4g} s, the local checkpoint {fig.chip_latency_s:.4g} s")
    return LoadTestResult(circuit=chips, service=service_info, rows=rows, notes=notes)
