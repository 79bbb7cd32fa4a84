"""The benchmark's table: one :class:`Row` per model × kind × batch × setting, the environment
printed above it, and its Markdown, CSV and JSON renderings (``knet bench``, benchmarks/bench.py)."""
from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks import roofline


@dataclass
class Row:
    """One line of the table. Times in milliseconds (medians of wall time; ``*_cpu_ms`` of
    process CPU time); errors are max absolute
    errors against the tight float64 solution (x in model volts, log p in nats);
    ``*_error`` is the larger of the two."""

    model: str
    kind: str
    batch: int
    baseline_ms: float | None
    ours_ms: float
    ratio: float | None
    baseline_cpu_ms: float | None
    ours_cpu_ms: float
    ratio_cpu: float | None
    baseline_error: float | None
    ours_error: float
    baseline_error_x: float | None
    baseline_error_logp: float | None
    ours_error_x: float
    ours_error_logp: float
    accurate: bool | None  # ours ≤ baseline on both x and log p
    baseline_nfe: int | None
    ours_nfe: int
    baseline_repeats: int
    ours_repeats: int
    error_rows: int
    source: str
    steps_per_layer: str
    setting: str = "published accuracy"  # ours' steps: calibrated against the published method, or "tier 1e-3"
    note: str = ""
    # the same graph (same RK4 steps, float32) in onnxruntime, one thread (CPU rows only)
    ort_ms: float | None = None
    ours_over_ort: float | None = None  # > 1: onnxruntime is faster (the service then uses it)
    # the same circuit and steps jit-compiled by JAX/XLA, one thread (benchmarks/xla.py): the faster of
    # its dense and gather forms, checked against ours first; xla_note says why a row has none
    xla_ms: float | None = None
    ours_over_xla: float | None = None  # > 1: XLA is faster
    xla_form: str = ""
    xla_note: str = ""
    ours_gflops: float | None = None  # nominal FLOPs (benchmarks/roofline.py) / ours_cpu_ms
    peak_fraction: float | None = None  # ours_gflops over one core's float32 FMA peak (benchmarks/roofline.py)
    bound_fraction: float | None = None  # the roofline's bound (FMA peak + tanh rate) over ours' CPU time


def environment() -> dict:
    """CPU/GPU, library versions and threads, printed above the table."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torchdiffeq
    env = dict(cpu=cpu, cpus=os.cpu_count(), torch=torch.__version__, torchdiffeq=torchdiffeq.__version__,
               python=platform.python_version(), threads=torch.get_num_threads(),
               cpu_capability=torch.backends.cpu.get_cpu_capability(),
               cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    # the GFLOP/s column's references (benchmarks/roofline.py): one core's float32 FMA peak (the
    # column's peak), its GEMM rate, and tanh evaluations per second by implementation
    env["peak_gflops_float32_gemm"] = round(roofline.peak_gflops(), 2)
    fma = roofline.fma_peak_gflops()
    env["peak_gflops_float32_fma"] = None if fma is None else round(fma, 2)
    env["tanh_per_s"] = {k: round(v / 1e9, 3) for k, v in roofline.activation_rates().items()}  # billions
    try:
        env["load_average"] = os.getloadavg()[0]
    except OSError:
        pass
    return env


def _f(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


HEADER = ("model", "kind", "batch", "ours at", "baseline ms", "ours ms", "ratio", "ratio (CPU time)", "baseline err",
          "ours err", "ours≤base", "NFE base/ours", "ORT ms", "ours/ORT", "XLA ms", "ours/XLA",
          "GFLOP/s (% of peak)", "of bound")


def format_row(r: Row) -> str:
    cells = (r.model, r.kind, str(r.batch), r.setting, _f(r.baseline_ms, ".2f"), _f(r.ours_ms, ".3f"),
             _f(r.ratio, ".1f") + ("×" if r.ratio else ""), _f(r.ratio_cpu, ".1f") + ("×" if r.ratio_cpu else ""),
             _f(r.baseline_error, ".1e"), _f(r.ours_error, ".1e"),
             "—" if r.accurate is None else ("yes" if r.accurate else "NO"),
             f"{_f(r.baseline_nfe, 'd')}/{r.ours_nfe}", _f(r.ort_ms, ".3f"), _f(r.ours_over_ort, ".2f"),
             _f(r.xla_ms, ".3f") + (f" ({r.xla_form})" if r.xla_form else ""), _f(r.ours_over_xla, ".2f"),
             "—" if r.ours_gflops is None else
             f"{r.ours_gflops:.2f}" + ("" if r.peak_fraction is None else f" ({100 * r.peak_fraction:.1f} %)"),
             "—" if r.bound_fraction is None else f"{100 * r.bound_fraction:.0f} %")
    return "| " + " | ".join(cells) + " |"


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows (the one docs/engine.md quotes)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [format_row(r) for r in rows]
    sources = sorted({f"{r.model} ({r.setting}): {r.source}; RK4 steps per layer {r.steps_per_layer}" for r in rows})
    lines += [""] + [f"- {s}" for s in sources]
    lines += sorted({f"- {r.model} {r.kind} {r.batch}: {r.note}" for r in rows if r.note})
    lines += sorted({f"- XLA column: {r.xla_note}" for r in rows if r.xla_note})
    return "\n".join(lines)


def write_csv(rows: list[Row], path: str | Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))


def write_json(rows: list[Row], env: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps({"environment": env, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")




def plot_ratios(rows: list[Row], path: str | Path, batch: int | None = None,
                targets: dict[str, float] | None = None) -> None:
    """Bars of the speed-up over the published method (wall time, ``ratio``) per model, one bar per
    kind × setting, at ``batch`` (default: the largest with a baseline); ``targets`` maps a setting to
    the ratio it should reach, drawn as a dashed line in its colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.ratio is not None]  # rows whose baseline was skipped have no ratio
    if not rows:
        raise ValueError("no row has a baseline to compare with")
    batch = batch or max(r.batch for r in rows)
    rows = [r for r in rows if r.batch == batch]
    if not rows:
        raise ValueError(f"no row at batch {batch} has a baseline to compare with")
    models = list(dict.fromkeys(r.model for r in rows))
    series = list(dict.fromkeys((r.kind, r.setting) for r in rows))
    settings = list(dict.fromkeys(s for _, s in series))
    colours = {s: plt.get_cmap("tab10")(i) for i, s in enumerate(settings)}
    by = {(r.model, r.kind, r.setting): r.ratio for r in rows}
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(12.0, 3.0 + 0.8 * len(models)), 4.5))
    for i, (kind, setting) in enumerate(series):
        xs = [m + (i - (len(series) - 1) / 2) * width for m in range(len(models))]
        ax.bar(xs, [by.get((name, kind, setting), 0.0) for name in models], width, color=colours[setting],
               hatch="" if kind == "sample" else "//", edgecolor="white", label=f"{kind}, {setting}")
    for setting, target in (targets or {}).items():
        if setting in colours:
            ax.axhline(target, color=colours[setting], linestyle="--", linewidth=1)
            ax.annotate(f"target {target:g}×", (ax.get_xlim()[0], target), ha="left", va="bottom", fontsize=8,
                        color=colours[setting])
    ratios = [r.ratio for r in rows]
    if max(ratios) > 20 * min(ratios):  # a 64-D model hundreds of times faster: keep the 2-D bars readable
        ax.set_yscale("log")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_ylabel("speed-up over the published method (×)")
    ax.set_title(f"batch {batch}, one thread: time of the published method ÷ ours", fontsize=10)
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
