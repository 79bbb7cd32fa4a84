"""Write a load-test result as ``report.md`` + PNG plots + raw ``rows.csv`` / ``results.json``.

Ratios (stated in the report):
- per request: served p50 latency of a request ÷ projected chip latency of one forward pass;
- per sample: served time per sample at the measured throughput (1 ÷ samples/s) ÷ chip
  latency, i.e. how many single-sample chip passes fit in the time the server spends per sample.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from . import plots
from .circuit import ENERGY_FORMULA, TIMING_FORMULA, CircuitFigures
from .results import LoadTestResult, StepRow, fmt_errors, fmt_num, fmt_ratio, fmt_time


def headline(result: LoadTestResult) -> dict | None:
    """The one figure to quote: the first model's /sample n=1 at one client, per-request ratio,
    and the best per-sample ratio over all closed-loop /sample rows of that model."""
    rows = [r for r in result.rows if r.mode == "closed" and r.endpoint == "sample"
            and r.ratio_request is not None]
    if not rows:
        return None
    model = rows[0].model
    mine = [r for r in rows if r.model == model]
    single = min(mine, key=lambda r: (r.rows, r.users))
    best = min(mine, key=lambda r: r.ratio_sample if r.ratio_sample is not None else math.inf)
    return {"model": model, "request_rows": single.rows, "request_users": single.users,
            "p50_s": single.p50_s, "chip_s": single.chip_latency_s, "ratio_request": single.ratio_request,
            "best_rows": best.rows, "best_users": best.users, "best_per_sample_s": 1 / best.samples_per_s,
            "ratio_sample": best.ratio_sample}


def _clients(n: int) -> str:
    return f"{n} client{'s' if n != 1 else ''}"


def headline_text(h: dict | None, device: str) -> str:
    if h is None:
        return "No successful /sample step, so no headline ratio."
    return (f"On {device}, {h['model']} `/sample` n={h['request_rows']} answers in {fmt_time(h['p50_s'])} "
            f"(p50, {_clients(h['request_users'])}) against a projected analog-chip latency of "
            f"{fmt_time(h['chip_s'])}: **{fmt_ratio(h['ratio_request'])} per request**. At its best throughput "
            f"(n={h['best_rows']}, {_clients(h['best_users'])}) the server spends "
            f"{fmt_time(h['best_per_sample_s'])} per sample: **{fmt_ratio(h['ratio_sample'])} the chip's time "
            "per sample**.")


def write_csv(rows: list[StepRow], path: Path) -> None:
    """``rows.csv``: one line per step, the columns of :class:`StepRow`."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=StepRow.columns())
        w.writeheader()
        for r in rows:
            w.writerow(r.csv_cells())


def device_label(machine: dict) -> str:
    dev = machine.get("server_device", "cpu")
    if dev.startswith("cuda") and machine.get("gpus"):
        return f"{machine['gpus'][0]} (CUDA)"
    return f"CPU ({machine.get('cpu_model', '?')})"


def _settings(machine: dict) -> str:
    st = machine.get("service_settings")
    if not st:
        return "unknown"
    return ", ".join(f"{k}={v}" for k, v in st.items()) + f" ({machine.get('service_settings_source', '')})"


def _circuit_table(result: LoadTestResult) -> list[str]:
    out = ["| model | nodes / edges | T | τ = C·V0/I0 | T·τ | DAC + ADC | **chip latency** (behavioural "
           "projection) | energy / sample (cap + device) | ngspice: T·τ, projection | agreement (worst rel. error) "
           "| ngspice wall | measured at transistor level: latency, energy / sample |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, c in result.circuit.items():
        if c is None:
            out.append(f"| {m} | – | – | – | – | – | – | – | – | – | – | – |")
            continue
        sim, tr = c.simulated, c.transistor
        measured = (f"{tr['label']}: {fmt_time(tr['latency_s'])}, {tr['energy_per_sample_j']:.3g} J" if tr else "–")
        out.append(
            f"| {m} | {c.nodes} / {c.edges} | {c.end_time:g} | {fmt_time(c.tau_s)} | "
            f"{fmt_time(c.settle_s)} | {fmt_time(c.dac_s + c.adc_s)} | **{fmt_time(c.chip_latency_s)}** | "
            f"{c.energy_j:.3g} J ({c.capacitor_energy_j:.2g} + {c.device_energy_j:.2g}) | "
            f"{_sim_timing(c)} | {fmt_num(sim.worst_rel_error if sim else None)} | "
            f"{fmt_time(sim.ngspice_wall_s if sim else None)} | {measured} |")
    return out


def _sim_timing(c: CircuitFigures) -> str:
    """The simulation's circuit time and projection, marked ✓ when both equal ours."""
    if c.simulated is None:
        return "–"
    t, p = c.simulated.simulated_time_s, c.simulated.projected_latency_s
    same = math.isclose(t, c.settle_s, rel_tol=1e-6) and math.isclose(p, c.chip_latency_s, rel_tol=1e-6)
    return f"{fmt_time(t)}, {fmt_time(p)} {'✓' if same else '✗ differs'}"


def _summary_table(result: LoadTestResult) -> list[str]:
    """One line per model: the chip, the fastest single-sample answer, the solver alone, and
    the best throughput, each with its ratio to the chip."""
    out = ["| model | chip latency | /sample n=1, 1 client: p50 / p99 | ×chip | server solve alone (n=1) | ×chip | "
           "NFE | best samples/s (n, clients) | time per sample | ×chip |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result.circuit:
        mine = [r for r in result.rows if r.model == m and r.mode == "closed"
                and r.endpoint == "sample" and r.ok_requests]
        if not mine:
            continue
        one = min(mine, key=lambda r: (r.rows, r.users))
        best = max(mine, key=lambda r: r.samples_per_s)
        chip = one.chip_latency_s
        solve = one.solve_mean_s  # one client: every solve is this request alone
        out.append(f"| {m} | {fmt_time(chip)} | {fmt_time(one.p50_s)} / {fmt_time(one.p99_s)} | "
                   f"{fmt_ratio(one.ratio_request)} | {fmt_time(solve)} | "
                   f"{fmt_ratio(solve / chip if solve and chip else None)} | "
                   f"{fmt_num(one.nfe_mean)} | {fmt_num(best.samples_per_s)} ({best.rows}, {best.users}) | "
                   f"{fmt_time(1 / best.samples_per_s)} | {fmt_ratio(best.ratio_sample)} |")
    return out


def _closed_table(rows: list[StepRow], model: str) -> list[str]:
    out = [f"#### {model}", "",
           "| endpoint | n | clients | requests | p50 | p95 | p99 | req/s | samples/s | errors by status | "
           "server solve mean (p50) | NFE / solve | rows / batch | ×chip per request | ×chip per sample |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.model != model or r.mode != "closed":
            continue
        errs = fmt_errors(r.errors_by_status)
        if r.solver_failures:
            errs += f"; solver {fmt_errors(r.solver_failures)}"
        out.append(
            f"| /{r.endpoint} | {r.rows} | {r.users} | {r.requests} | {fmt_time(r.p50_s)} | "
            f"{fmt_time(r.p95_s)} | {fmt_time(r.p99_s)} | {fmt_num(r.rps)} | {fmt_num(r.samples_per_s)} | "
            f"{errs} | {fmt_time(r.solve_mean_s)} ({fmt_time(r.solve_p50_s)}) | {fmt_num(r.nfe_mean)} | "
            f"{fmt_num(r.batch_mean)} | {fmt_ratio(r.ratio_request)} | {fmt_ratio(r.ratio_sample)} |")
    return out + [""]


def _open_table(rows: list[StepRow]) -> list[str]:
    pts = [r for r in rows if r.mode == "open"]
    if not pts:
        return ["No open-loop run in this report."]
    r0 = pts[0]
    out = [f"`{r0.model}` /{r0.endpoint} n={r0.rows}, fixed arrival rate for {r0.duration_s:g} s each, "
           f"at multiples of the closed-loop peak ({fmt_num(r0.peak_closed_rps)} req/s). Latency counts from "
           "each request's scheduled send time; requests due while the in-flight cap was full are `dropped`.", "",
           "| offered req/s | answered 200 /s | requests | p50 | p95 | p99 | max | errors | server solves | "
           "rows / batch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(pts, key=lambda r: r.offered_rps):
        out.append(f"| {fmt_num(r.offered_rps)} | {fmt_num(r.rps)} | {r.requests} | {fmt_time(r.p50_s)} | "
                   f"{fmt_time(r.p95_s)} | {fmt_time(r.p99_s)} | {fmt_time(r.max_s)} | "
                   f"{fmt_errors(r.errors_by_status)} | {fmt_num(r.server_solves)} | "
                   f"{fmt_num(r.batch_mean)} |")
    return out


def render(result: LoadTestResult, images: dict[str, str]) -> str:
    """The Markdown report (image paths relative to the report)."""
    m = result.machine
    rows = result.rows
    dev = device_label(m)
    h = headline(result)
    gpu = [r.gpu_j_per_sample for r in rows if r.gpu_j_per_sample]
    lines = [f"# Load test: {dev}", "", f"*{result.started_utc} · `{result.command}` · "
             f"{result.wall_s / 60:.1f} min wall*", "", headline_text(h, dev), "",
             "## Summary", "", *_summary_table(result), "",
             "*×chip* = served time ÷ projected chip latency of one forward pass. The solver column is the "
             "server-side solve time (`knet_solve_seconds`) of a one-sample request: what is left after HTTP, "
             "JSON and batching.", "",
             "## Where it ran", "",
             "| | |", "|---|---|",
             f"| server device | {dev} |",
             f"| CPU | {m['cpu_model']}, {m['logical_cpus']} logical CPUs |",
             f"| GPU | {', '.join(m['gpus']) or 'none'} |",
             f"| torch | {m['torch']}, {m['torch_threads_server']} intra-op thread(s) in the server |",
             f"| server | {result.server} |",
             f"| service settings | {_settings(m)} |",
             f"| server CPUs | {m['server_cpus'] or 'unknown'} |",
             f"| load generator CPUs | {m['client_cpus'] or 'all (not pinned)'} (same machine) |",
             f"| load average at start / end | {' '.join(f'{x:.2f}' for x in m['loadavg_start'])} / "
             f"{' '.join(f'{x:.2f}' for x in m.get('loadavg_end', ()))} |",
             f"| Python / OS | {m['python']} / {m['platform']} |", "",
             result.cores_statement, "",
             "## The circuit side", "",
             f"Projected latency of one forward pass (one sample): `{TIMING_FORMULA}`; the hardware "
             "constants come from each model's `circuit.json`. Energy per forward pass: "
             f"`{ENERGY_FORMULA}`. The ngspice columns come from `knet simulate MODEL -n 1 --variants sample "
             "--json`: the transient's circuit time T·τ and the projection it checks (✓: equal to ours), and the "
             "worst relative error of the simulated circuit against the model's own solve.",
             "", *_circuit_table(result), "",
             "Caveat: an analog chip answers with 0.5–5 % error and device noise (docs/design.md §3, "
             "what the chip projection leaves out); the ratios below compare time, not accuracy. "
             "The chip computes samples; the "
             "log-density channel of `/sample` (requested here, the contract default) and `/logprob` "
             "have no analog counterpart beyond the same T·τ transient.", "",
             "## Served vs chip", ""]
    if "served_vs_chip" in images:
        lines += [f"![served vs chip]({images['served_vs_chip']})", ""]
    lines += ["Per request = served p50 ÷ chip latency. Per sample = (1 ÷ samples/s) ÷ chip latency, "
              "i.e. the server's time per sample at that load against one chip pass per sample.", "",
              "## Closed loop: latency vs concurrency", "",
              f"Each step: `locust --headless`, clients sending back to back, {rows[0].duration_s:g} s "
              "or the request cap, whichever first; clients then finish the request in flight (up to 30 s) "
              "and the next step waits until the server has none in progress. Locust percentiles are "
              "bucketed (1 ms below 100 ms, 10 ms below 1 s), and a p99 over fewer than 100 requests is "
              "close to the maximum. Server columns are `/metrics` deltas over the step "
              "(`knet_solve_seconds`, `knet_solver_nfe`, `knet_batch_size`); with batching one solve can "
              "serve several requests." if rows else "No rows.", ""]
    for model in result.circuit:
        if f"lat_{model}" in images:
            lines += [f"![{model} latency vs concurrency]({images[f'lat_{model}']})", ""]
        lines += _closed_table(rows, model)
    lines += ["## Open loop: past saturation", "", *_open_table(rows), ""]
    if "open_loop" in images:
        lines += [f"![open loop]({images['open_loop']})", ""]
    lines += ["## Energy", "",
              (f"GPU board power sampled with nvidia-smi: {min(gpu):.3g}–{max(gpu):.3g} J per sample."
               if gpu else "No GPU power measurement here (no NVIDIA GPU / nvidia-smi on this machine; "
               "the CPU has no readable power counter in this VM). On a GPU the same command samples "
               "board power every 0.2 s and reports J per sample."),
              "The circuit's energy per sample is in the circuit table above.", ""]
    if result.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in result.notes], ""]
    lines += ["## Raw data", "", "- `rows.csv`: one row per step (times in seconds)",
              "- `results.json`: everything in this report, machine-readable",
              "- `raw/`: per step the locust CSVs and summary (or the open-loop records), the request body, "
              "and the `knet_*` families of `/metrics` before and after; `server.log` (middle cut)", ""]
    return "\n".join(lines)


def write(result: LoadTestResult, out_dir: Path) -> Path:
    """Write ``report.md``, PNGs, ``rows.csv`` and ``results.json`` into ``out_dir``; return the report path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result.rows
    images: dict[str, str] = {}
    for model in result.circuit:
        p = plots.latency_vs_concurrency(rows, model, out_dir / f"latency_{model}.png")
        if p:
            images[f"lat_{model}"] = p.name
    chip = {m: (c.chip_latency_s if c else None) for m, c in result.circuit.items()}
    for key, fn in (("served_vs_chip", lambda p: plots.served_vs_chip(rows, chip, p)),
                    ("open_loop", lambda p: plots.open_loop(rows, p))):
        p = fn(out_dir / f"{key}.png")
        if p:
            images[key] = p.name
    write_csv(rows, out_dir / "rows.csv")
    stored = {**result.to_json(), "headline": headline(result)}
    (out_dir / "results.json").write_text(json.dumps(stored, indent=1, default=str))
    report = out_dir / "report.md"
    report.write_text(render(result, images))
    return report


def rerender(out_dir: Path) -> Path:
    """Rewrite the report and plots of ``out_dir`` from its ``results.json`` (no new measurement).

    Raises:
        ValueError: no readable ``results.json`` there.
    """
    path = out_dir / "results.json"
    try:
        result = LoadTestResult.from_json(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a load-test result ({err})") from None
    return write(result, out_dir)
