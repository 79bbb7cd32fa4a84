"""Pictures of what a real chip would produce: robustness panels and the design space."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LOG_X_EFFECTS = ("switching", "noise")


def robustness_figure(report: dict, path: Path) -> None:
    """One column per effect: quality (NLL or E[log q + U]) on top, energy distance below,
    each against the ideal model (and, for the distance, the data-vs-data floor)."""
    effects = list(dict.fromkeys(r["effect"] for r in report["rows"]))
    fig, axes = plt.subplots(2, len(effects), figsize=(3.2 * len(effects), 5.2), squeeze=False)
    ideal, floor = report["ideal"], report["floor"]
    metric = "test NLL (nats)" if report["metric"] == "nll" else "E[log q + U] (nats)"
    for j, effect in enumerate(effects):
        rows = [r for r in report["rows"] if r["effect"] == effect]
        x = np.array([r["level"] for r in rows], dtype=float)
        top, bottom = axes[0, j], axes[1, j]
        q = [(r["level"], r["nll"], r["nll_se"], r["nll_worst"]) for r in rows if r["nll"] is not None]
        if q:
            lv, mean, se, worst = (np.array(v, dtype=float) for v in zip(*q))
            top.errorbar(lv, mean, yerr=se, marker="o", ms=3, capsize=2, label="mean ± s.e.")
            if any(r["instances"] > 1 for r in rows):
                top.plot(lv, worst, ls=":", marker="v", ms=3, color="tab:red", label="worst instance")
            top.axhline(ideal["nll"], color="grey", lw=0.8, ls="--", label="ideal")
            top.legend(fontsize=7)
        else:
            top.text(0.5, 0.5, "no tractable density\n(samples only)", ha="center", va="center",
                     transform=top.transAxes, fontsize=8, color="grey")
            top.set_xticks([])
            top.set_yticks([])
        d = np.array([r["distance"] for r in rows])
        lo = np.array([r["distance_ci"][0] for r in rows])
        hi = np.array([r["distance_ci"][1] for r in rows])
        bottom.errorbar(x, d, yerr=[np.maximum(d - lo, 0), np.maximum(hi - d, 0)], marker="o", ms=3, capsize=2,
                        color="tab:purple", label="chip")
        bottom.axhline(ideal["distance"], color="grey", lw=0.8, ls="--", label="ideal")
        bottom.axhspan(*floor["distance_ci"], color="tab:green", alpha=0.15, label="data vs data")
        bottom.legend(fontsize=7)
        unit = report.get("level_units", {}).get(effect, "level")
        for ax in (top, bottom) if q else (bottom,):
            if effect in LOG_X_EFFECTS and (x > 0).all():
                ax.set_xscale("log")
            ax.tick_params(labelsize=7)
        top.set_title(effect, fontsize=9)
        bottom.set_xlabel(unit, fontsize=8)
        if j == 0:
            top.set_ylabel(metric, fontsize=8)
            bottom.set_ylabel("energy distance", fontsize=8)
    fig.suptitle(f"{report['model']}: what a real chip would produce", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def design_space_figure(report: dict, path: Path) -> None:
    """Latency against energy per sample, coloured by quality (the switched chip's NLL
    increase, or the energy distance for models without data), designs that lose quality
    hollow, infeasible ones crossed, the Pareto front among quality-keeping designs circled."""
    pts = report["points"]
    ok = [p for p in pts if p["feasible"]]
    bad = [p for p in pts if not p["feasible"]]
    use_nll = report.get("ideal_nll") is not None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = (("latency_s", "energy_j", "projected latency per sample (s)", "energy per sample (J)",
               "with converters"),
              ("settle_s", "analog_energy_j", "analog settle time T·τ (s)", "analog energy per sample (J)",
               "the analog core alone"))
    for ax, (xk, yk, xl, yl, what) in zip(axes, panels):
        if ok:
            colour = np.array([p["nll"] - report["ideal_nll"] if use_nll else p["distance"] for p in ok])
            keep = np.array([p["keeps_quality"] for p in ok])
            x = np.array([p[xk] for p in ok])
            y = np.array([p[yk] for p in ok])
            sc = ax.scatter(x[keep], y[keep], c=colour[keep], cmap="viridis", s=28, edgecolors="none",
                            vmin=colour.min(), vmax=colour.max())
            if (~keep).any():
                ax.scatter(x[~keep], y[~keep], s=28, facecolors="none", edgecolors="tab:orange", linewidths=1,
                           label="loses quality")
            front = [p for p in ok if p["pareto"]]
            ax.scatter([p[xk] for p in front], [p[yk] for p in front], s=110, facecolors="none",
                       edgecolors="tab:red", linewidths=1.3, label="Pareto front (latency, energy) keeping quality")
        if bad:
            ax.scatter([p[xk] for p in bad], [p[yk] for p in bad], marker="x", color="grey", s=20,
                       label=f"switch ({report['switching_s']:g} s) outlasts a layer")
        ax.set(xscale="log", yscale="log", xlabel=xl, ylabel=yl, title=what)
        ax.legend(fontsize=7, loc="upper left")
    if ok:
        fig.colorbar(sc, ax=axes, label="NLL increase of the switched chip (nats)" if use_nll
                     else "energy distance to data")
    fig.suptitle(f"{report['model']}: design space over C, I0, V0")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
