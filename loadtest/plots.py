"""PNG plots of a load test: latency vs concurrency, served vs chip latency, open loop."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from .results import StepRow, fmt_time  # noqa: E402

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _ms(x: float | None) -> float:
    return float("nan") if x is None else 1000.0 * x


def _plain_log_axis(ax) -> None:
    """Log-scaled y axis labelled 2, 5, 10, 20 … instead of 2×10^1."""
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def latency_vs_concurrency(rows: list[StepRow], model: str, path: Path) -> Path | None:
    """One panel per endpoint: p50 (solid) and p99 (dashed) latency against closed-loop users,
    one colour per request size; log-scaled latency."""
    mine = [r for r in rows if r.model == model and r.mode == "closed"]
    if not mine:
        return None
    endpoints = sorted({r.endpoint for r in mine}, key=["sample", "logprob"].index)
    fig, axes = plt.subplots(1, len(endpoints), figsize=(5.2 * len(endpoints), 3.8), squeeze=False)
    for ax, ep in zip(axes[0], endpoints):
        sizes = sorted({r.rows for r in mine if r.endpoint == ep})
        for i, n in enumerate(sizes):
            pts = sorted((r for r in mine if r.endpoint == ep and r.rows == n), key=lambda r: r.users)
            users = [r.users for r in pts]
            c = COLORS[i % len(COLORS)]
            ax.plot(users, [_ms(r.p50_s) for r in pts], "o-", color=c, label=f"n={n} p50")
            ax.plot(users, [_ms(r.p99_s) for r in pts], "s--", color=c, alpha=0.6, label=f"n={n} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log_axis(ax)
        ax.set_xticks(sorted({r.users for r in mine}))
        ax.set_xticklabels([str(u) for u in sorted({r.users for r in mine})])
        ax.set(xlabel="concurrent clients (closed loop)", ylabel="latency per request (ms)",
               title=f"{model} /{ep}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def served_vs_chip(rows: list[StepRow], chip_s: dict[str, float | None], path: Path) -> Path | None:
    """Log-scale bars per model and request size: served p50 per request at 1 client, served
    time per sample at the best closed-loop throughput, and the projected chip latency."""
    groups = []
    for model, chip in chip_s.items():
        mine = [r for r in rows if r.model == model and r.mode == "closed" and r.endpoint == "sample"]
        chip = chip or next((r.chip_latency_s for r in mine if r.chip_latency_s), None)
        for n in sorted({r.rows for r in mine}):
            sized = [r for r in mine if r.rows == n]
            one = min(sized, key=lambda r: r.users)
            best = max(sized, key=lambda r: r.samples_per_s or 0)
            per_sample = 1.0 / best.samples_per_s if best.samples_per_s else None
            groups.append((f"{model}\nn={n}", one.p50_s, per_sample, chip))
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.2))
    width = 0.27
    series = (("served p50 per request (1 client)", 1, "tab:blue"),
              ("served time per sample (best throughput)", 2, "tab:orange"),
              ("projected chip latency per sample", 3, "tab:green"))
    values = [g[i] for g in groups for i in (1, 2, 3) if g[i]]
    lo, hi = min(values) / 20, max(values) * 20
    for j, (label, idx, color) in enumerate(series):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        heights = [g[idx] if g[idx] else float("nan") for g in groups]
        ax.bar(xs, [h - lo for h in heights], width, bottom=lo, label=label, color=color)
        for x, h in zip(xs, heights):
            if h == h:
                ax.text(x, h * 1.3, fmt_time(h), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_yscale("log")
    ax.set_ylim(lo, hi * 30)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    ax.set_ylabel("seconds (log scale)")
    ax.set_title("/sample: served latency vs projected analog-chip latency")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def open_loop(rows: list[StepRow], path: Path) -> Path | None:
    """Achieved throughput and p50/p99 latency against the offered fixed rate."""
    pts = sorted((r for r in rows if r.mode == "open"), key=lambda r: r.offered_rps)
    if not pts:
        return None
    offered = [r.offered_rps for r in pts]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(offered, offered, ":", color="grey", label="offered")
    a1.plot(offered, [r.rps for r in pts], "o-", label="answered 200 per s")
    if pts[0].peak_closed_rps:
        a1.axhline(pts[0].peak_closed_rps, color="tab:red", ls="--", lw=1, label="closed-loop peak")
    a1.set(xlabel="offered rate (req/s)", ylabel="req/s", title="open loop: throughput")
    a1.legend(fontsize=8)
    a2.plot(offered, [_ms(r.p50_s) for r in pts], "o-", label="p50")
    a2.plot(offered, [_ms(r.p99_s) for r in pts], "s--", label="p99")
    a2.set_yscale("log")
    _plain_log_axis(a2)
    a2.set(xlabel="offered rate (req/s)", ylabel="latency from scheduled send (ms)", title="open loop: latency")
    a2.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    sc = pts[0]
    fig.suptitle(f"{sc.model} /{sc.endpoint} n={sc.rows}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
