"""Figures and the Markdown report of ``knet soak`` (``benchmarks.soak``): reliability.md,
reliability.png and reliability.json in the output directory."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.soak import MIX, Answer, Run  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``xs``; NaN when empty."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))] if xs else float("nan")


def _ms(x: float) -> str:
    return "–" if x != x else f"{1e3 * x:.0f}"


def _ok(a: Answer) -> bool:
    return a.outcome == 200


def throughput(run: Run) -> dict:
    """Requests/s and latency of the answers sent inside the run's load window."""
    lo, hi = run.window
    inside = [a for a in run.answers if lo <= a.sent_s < hi and a.sent_s + a.latency_s <= hi + 60]
    ok = [a.latency_s for a in inside if _ok(a)]
    return {"requests": len(inside), "ok": len(ok), "req_per_s": len(ok) / max(hi - lo, 1e-9),
            "p50_s": pct(ok, 0.5), "p99_s": pct(ok, 0.99)}


def crash(run: Run) -> dict | None:
    """What a SIGKILLed worker cost: outage (kill → first success of a request sent after
    it), the longest wait of a request pending at some moment between the SIGKILL and the
    replacement (connections queue in the listen backlog while no worker accepts), requests
    whose first attempt failed, requests lost after one retry, respawn time."""
    ev = run.events
    if "worker_killed" not in ev:
        return None
    k = ev["worker_killed"]
    back = ev.get("worker_back")
    end = ev.get("sigterm", math.inf)
    after = [a for a in run.answers if a.sent_s >= k and a.sent_s < end]
    first_ok = min((a.sent_s + a.latency_s for a in after if _ok(a)), default=math.nan)
    near = [a for a in run.answers if k - 1 <= a.sent_s <= (back if back is not None else end) + 1 and a.sent_s < end]
    # every request that was waiting at some moment between the SIGKILL and the replacement
    waits = [a.latency_s for a in run.answers
             if a.sent_s <= (back if back is not None else end) and a.sent_s + a.latency_s >= k]
    return {"outage_s": first_ok - k, "respawn_s": None if back is None else back - k,
            "longest_wait_s": max(waits, default=math.nan),
            "first_attempt_failed": sum(a.first != 200 for a in near),
            "failed_after_retry": sum(not _ok(a) for a in near), "requests_in_window": len(near)}


def shutdown(run: Run) -> dict | None:
    """SIGTERM with traffic running: requests in flight then, how they ended; those sent after."""
    ev = run.events
    if "sigterm" not in ev:
        return None
    t = ev["sigterm"]
    in_flight = [a for a in run.answers if a.sent_s < t < a.sent_s + a.latency_s]
    later = [a for a in run.answers if a.sent_s >= t]
    return {"in_flight": len(in_flight), "in_flight_outcomes": dict(Counter(str(a.outcome) for a in in_flight)),
            "sent_after": len(later), "sent_after_outcomes": dict(Counter(str(a.first) for a in later)),
            "exit_code": run.exit_code, "exit_s": ev["exited"] - t if "exited" in ev else None,
            "workers_left": int(ev.get("workers_left", -1))}


def per_minute(run: Run) -> list[dict]:
    end = run.events.get("sigterm", run.window[1])
    rows = []
    for m in range(max(1, math.ceil(end / 60))):
        lo, hi = 60 * m, min(60 * (m + 1), end)
        answers = [a for a in run.answers if lo <= a.sent_s < hi]
        ok = [a.latency_s for a in answers if _ok(a)]
        samples = [s for s in run.samples if lo <= s.at_s < hi]
        livez = [s.livez_s for s in samples if s.livez_s is not None]
        rows.append({"minute": m + 1, "requests": len(answers), "not_ok": len(answers) - len(ok),
                     "p50_s": pct(ok, 0.5), "p99_s": pct(ok, 0.99),
                     "rss_mib_max": max((s.rss_mib for s in samples), default=math.nan),
                     "livez_max_s": max(livez, default=math.nan), "livez_missed": len(samples) - len(livez)})
    return rows


def plot(runs: list[Run], path: Path) -> None:
    soak = next(r for r in runs if r.name == "soak")
    compare = [r for r in runs if r.name != "soak"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    end = soak.events.get("exited", soak.window[1]) + 1
    bins = [5 * i for i in range(int(end // 5) + 2)]
    ax = axes[0, 0]
    for q, style in ((0.5, "-"), (0.99, "--")):
        xs, ys = [], []
        for lo in bins[:-1]:
            lat = [a.latency_s for a in soak.answers if lo <= a.sent_s < lo + 5 and _ok(a)]
            if lat:
                xs.append(lo + 2.5)
                ys.append(1e3 * pct(lat, q))
        ax.plot(xs, ys, style, color="tab:blue", label=f"p{int(q * 100)}")
    ax.set(yscale="log", xlabel="time (s)", ylabel="latency of 200 answers (ms)", title="soak: latency per 5 s")
    ax.legend()
    ax = axes[0, 1]
    term = soak.events.get("sigterm", math.inf)
    ok = Counter(int(a.sent_s) for a in soak.answers if _ok(a))
    bad = Counter(int(a.sent_s) for a in soak.answers if not _ok(a) and a.sent_s < term)
    refused = Counter(int(a.sent_s) for a in soak.answers if not _ok(a) and a.sent_s >= term)
    secs = list(range(int(end)))
    ax.bar(secs, [ok[s] for s in secs], width=1, color="tab:green", label="200")
    ax.bar(secs, [bad[s] for s in secs], bottom=[ok[s] for s in secs], width=1, color="tab:red",
           label="not 200 (after one retry)")
    ax.bar(secs, [refused[s] for s in secs], bottom=[ok[s] + bad[s] for s in secs], width=1, color="tab:gray",
           label="refused after SIGTERM")
    ax.set(xlabel="time (s)", ylabel="requests sent per second", title="soak: answers")
    ax.legend()
    ax = axes[1, 0]
    ax.plot([s.at_s for s in soak.samples], [s.rss_mib for s in soak.samples], color="tab:purple")
    ax.set(xlabel="time (s)", ylabel="RSS of all server processes (MiB)", title="soak: memory")
    for a in (axes[0, 0], axes[0, 1], axes[1, 0]):
        for name, color in (("worker_killed", "red"), ("worker_back", "green"), ("sigterm", "black")):
            if name in soak.events:
                a.axvline(soak.events[name], color=color, lw=0.8, ls=":", label=None)
    ax = axes[1, 1]
    if compare:
        figures = [throughput(r) for r in compare]
        ax.bar([r.name for r in compare], [f["req_per_s"] for f in figures], color="tab:blue")
        for i, f in enumerate(figures):
            ax.annotate(f"p99 {_ms(f['p99_s'])} ms", (i, f["req_per_s"]), ha="center", va="bottom", fontsize=8)
        ax.set(ylabel="one-row requests/s", title="workers × batching")
    else:
        ax.axis("off")
    fig.suptitle("dotted lines: worker SIGKILL (red), worker back (green), SIGTERM (black)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs: list[Run], args: argparse.Namespace, out: Path, load_before, load_after) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, out / "reliability.png")
    soak = next(r for r in runs if r.name == "soak")
    compare = [r for r in runs if r.name != "soak"]
    summary = {"runs": {r.name: {"workers": r.workers, "batching": r.batching, "throughput": throughput(r),
                                 "crash": crash(r), "shutdown": shutdown(r),
                                 "statuses": dict(Counter(str(a.outcome) for a in r.answers)),
                                 "events_s": r.events} for r in runs},
               "soak_per_minute": per_minute(soak),
               "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
               "load_average": {"before": load_before, "after": load_after}}
    (out / "reliability.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "reliability.md").write_text(_markdown(runs, soak, compare, summary, args, load_before, load_after))
    return out / "reliability.md"


def _num(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None or x != x else format(x, spec)


def _counts(counter: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "nothing"


def _markdown(runs, soak: Run, compare: list[Run], summary: dict, args, load_before, load_after) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Reliability: soak and fault run", "",
             f"`knet soak --compare-s {args.compare_s:g} --soak-s {args.soak_s:g} --clients {args.clients} "
             f"--compare-clients {args.compare_clients}`, {now}; {os.cpu_count()} CPUs "
             f"({platform.machine()}), load average {load_before[0]:.1f} before and {load_after[0]:.1f} after "
             "(the machine is shared; clients run on the same CPUs as the server). Every server is a real "
             "`bentoml serve` on 127.0.0.1; clients retry once, 100 ms later, on a connection error or 503.",
             "", "![soak run and one-vs-two workers](reliability.png)", ""]
    if compare:
        lines += _compare_section(compare, args)
    lines += _soak_section(soak, summary, args)
    return "\n".join(lines)


def _compare_section(compare: list[Run], args) -> list[str]:
    lines = ["## One vs two workers", "",
             f"{args.compare_clients} closed-loop clients of one-row `/sample` and `/logprob` (twomoon) for "
             f"{args.compare_s:g} s after 3 s of warm-up; then, with batching on, one worker SIGKILLed under two "
             "light clients.", "",
             "| workers | batching | req/s | p50 (ms) | p99 (ms) | batching gain | outage after a worker SIGKILL (s) "
             "| longest wait (s) | first attempts failed | lost after one retry | worker back after (s) |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rate = {(r.workers, r.batching): throughput(r)["req_per_s"] for r in compare}
    for r in compare:
        f, c = throughput(r), crash(r)
        unbatched = rate.get((r.workers, False))
        gain = rate[(r.workers, True)] / unbatched if r.batching and unbatched else None
        cells = [str(r.workers), "on" if r.batching else "off", f"{f['req_per_s']:.1f}", _ms(f["p50_s"]),
                 _ms(f["p99_s"]), "–" if gain is None else f"{gain:.2f}×"]
        cells += ["–"] * 5 if c is None else [_num(c["outage_s"], ".2f"), _num(c["longest_wait_s"], ".2f"),
                                              str(c["first_attempt_failed"]), str(c["failed_after_retry"]),
                                              _num(c["respawn_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Outage: from the SIGKILL to the first 200 answer of a request sent after it (with two workers "
              "the other one answers at once). Longest wait: of the requests pending at some moment between the "
              "SIGKILL and the replacement's start, retry included (with one worker, new connections wait in the "
              "listen backlog, which the main process keeps open, and are answered once the replacement accepts). "
              "Worker back: BentoML has started and initialised a replacement (it respawns workers unless "
              "`BENTOML_CONTAINERIZED` is set).",
              ""]
    return lines


def _soak_section(soak: Run, summary: dict, args) -> list[str]:
    c, s = crash(soak), shutdown(soak)
    before = [a for a in soak.answers if a.sent_s < soak.events.get("sigterm", math.inf)]
    mix = ", ".join(f"{m} `/{e}` {n} rows ×{w}" for m, e, n, w in MIX)
    lines = ["## Soak: two workers, mixed traffic, a worker kill and a SIGTERM", "",
             f"{args.clients} closed-loop clients for {args.soak_s:g} s, requests drawn in turn from: {mix}.", "",
             f"- requests sent before the SIGTERM: {len(before)}; final answers by status: "
             f"{_counts(Counter(str(a.outcome) for a in before))}."]
    if c is not None:
        lines.append(f"- worker SIGKILL at {soak.events['worker_killed']:.0f} s: "
                     f"outage {_num(c['outage_s'], '.2f')} s, longest wait {_num(c['longest_wait_s'], '.2f')} s, "
                     f"{c['first_attempt_failed']} first attempts failed, {c['failed_after_retry']} lost after one "
                     f"retry, worker back after {_num(c['respawn_s'])} s.")
    if s is not None:
        lines.append(f"- SIGTERM at {soak.events['sigterm']:.0f} s with {s['in_flight']} requests in flight: they "
                     f"ended {_counts(s['in_flight_outcomes'])}; the {s['sent_after']} sent afterwards got (first "
                     f"attempt) {_counts(s['sent_after_outcomes'])}; exit code {s['exit_code']} after "
                     f"{_num(s['exit_s'])} s, {s['workers_left']} workers left behind.")
    lines += ["", "| minute | requests | not 200 | p50 (ms) | p99 (ms) | RSS max (MiB) | /livez max (ms) "
              "| /livez missed |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in summary["soak_per_minute"]:
        lines.append(f"| {row['minute']} | {row['requests']} | {row['not_ok']} | {_ms(row['p50_s'])} | "
                     f"{_ms(row['p99_s'])} | {_num(row['rss_mib_max'], '.0f')} | {_ms(row['livez_max_s'])} | "
                     f"{row['livez_missed']} |")
    lines += ["", "RSS is the sum over the server's main process and its workers. Raw figures: "
              "[reliability.json](reliability.json).", ""]
    return lines
