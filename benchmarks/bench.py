"""The inference benchmark: the published method against our engine, side by side.

For every model × kind (``sample`` with log q, ``logprob``) × batch it times both methods
on the same inputs (medians after warm-up) and measures both against a float64,
tight-tolerance (dopri5, 1e-9) solution of the same model. Run it as
``knet bench``; it prints the environment and a table,
and writes CSV/JSON when asked. Speed targets are read off this output, never asserted.

A model comes from the zoo (``models/zoo/<name>``) when it exists; otherwise it is freshly
initialised from ``configs/<name>.yaml`` (or a built-in spec of the same architecture), and
its RK4 steps are calibrated in the run. Each row says which (``source``).
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks import roofline
from benchmarks.baseline import PublishedBaseline
from models import calibration
from models.checkpoint import load_model
from models.config import TrainConfig
from models.errors import UserInputError
from models.flow import KirchhoffNet

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # a source checkout's root (configs/ lives there)
DEFAULT_MODELS = ("twomoon", "potential1", "digits")
DEFAULT_BATCHES = (1, 64, 1024, 16384)
KINDS = ("sample", "logprob")
REFERENCE_ROWS = 1024  # accuracy is measured on the first rows of each batch (tight solves are slow)
SINGLE_REQUESTS = 8  # batch-1 rows: accuracy is the max over this many one-row requests

# Architectures of the zoo, used only when neither the zoo model nor its config exists yet.
BUILTIN_CONFIGS = {
    "twomoon": dict(name="twomoon", task="twomoon", architecture=dict(
        device="affine-tanh", layers=2, end_time=1.0, topology=dict(kind="full", repeat=50))),
    "potential1": dict(name="potential1", task="potential1", objective="density_matching", architecture=dict(
        device="affine-tanh", layers=16, end_time=1.0, topology=dict(kind="full", repeat=10))),
    "digits": dict(name="digits", task="digits", architecture=dict(
        device="affine-tanh", layers=4, end_time=1.0, nodes=64,
        topology=dict(kind="mixed", grid=(1, 8, 8), kernel=3, hubs=2))),
}


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
    note: str = ""
    # the same graph (same RK4 steps, float32) in onnxruntime, one thread (CPU rows only)
    ort_ms: float | None = None
    ours_over_ort: float | None = None  # > 1: onnxruntime is faster (the service then uses it)
    ours_gflops: float | None = None  # nominal FLOPs (benchmarks/roofline.py) / ours_ms
    peak_fraction: float | None = None  # ours_gflops over one core's float32 GEMM rate


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
    # the GFLOP/s column's reference: one core's float32 GEMM rate (benchmarks/roofline.py)
    env["peak_gflops_float32_gemm"] = round(roofline.peak_gflops(), 2)
    try:
        env["load_average"] = os.getloadavg()[0]
    except OSError:
        pass
    return env


def _at_tier(spec, tolerance: float, name: str):
    """``spec`` serving at its verified tier named ``tolerance`` (nats)."""
    from models.accuracy import tier_solver
    tier = next((t for t in spec.accuracy_tiers if t.tolerance_nats == tolerance), None)
    if tier is None:
        have = ", ".join(f"{t.tolerance_nats:g}" for t in spec.accuracy_tiers) or "none"
        raise UserInputError(f"{name}: no accuracy tier {tolerance:g} (tiers: {have}; `knet calibrate --tiers`)")
    return spec.model_copy(update={"solver": tier_solver(spec.solver, tier)})


def bench_model(name: str, progress: Callable[[str], None] = print) -> tuple[KirchhoffNet, str]:
    """The model to benchmark (float32) and where it came from. Fresh models are
    calibrated here, so 'ours' always runs with calibrated steps."""
    from models.zoo import ZOO_DIR, resolve
    zoo_dir = ZOO_DIR / name
    try:
        directory = resolve(name)
    except ValueError:
        directory = None
    if directory is not None:
        model = load_model(directory, torch.float32)
        source = "zoo" if directory == zoo_dir else str(directory)
        if model.spec.calibration is None:
            progress(f"{name}: checkpoint has no calibration record; calibrating in this run")
            model.spec = calibration.apply(model.spec, calibration.calibrate(model))
            source += ", calibrated in this run"
        return model, source
    from models.train import build_spec
    cfg_path = SOURCE_ROOT / "configs" / f"{name}.yaml"
    if cfg_path.is_file():
        import yaml
        cfg = TrainConfig(**yaml.safe_load(cfg_path.read_text()))
        source = f"fresh init from configs/{name}.yaml"
    elif name in BUILTIN_CONFIGS:
        cfg = TrainConfig(**BUILTIN_CONFIGS[name])
        source = "fresh init, built-in spec"
    else:
        raise UserInputError(f"unknown model {name!r}: not in the zoo, no configs/{name}.yaml, no built-in spec")
    model = KirchhoffNet(build_spec(cfg), init_scale=cfg.architecture.init_scale, seed=cfg.seed)
    model.requires_grad_(False)
    progress(f"{name}: not in the zoo yet; {source}; calibrating RK4 steps")
    model.spec = calibration.apply(model.spec, calibration.calibrate(model))
    return model, source + ", calibrated in this run"


def _time(fn: Callable[[], object], budget_s: float, max_repeats: int, min_repeats: int,
          warmup: int, sync: Callable[[], None]) -> tuple[float, float, int, object]:
    """Median wall and CPU (process) time in ms of ``fn`` after ``warmup`` calls; repeats
    until ``budget_s`` of wall time is spent. CPU time is the steadier figure on a shared
    machine (it excludes time spent waiting for a core)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times: list[float] = []
    cpu: list[float] = []
    spent = 0.0
    while len(times) < max_repeats and (len(times) < min_repeats or spent < budget_s):
        sync()
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        spent += times[-1]
    return statistics.median(times) * 1e3, statistics.median(cpu) * 1e3, len(times), out


def _sample_from_latents(model: KirchhoffNet, z: torch.Tensor):
    return model.sample(0, z=z)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a[: b.shape[0]].double().cpu() - b).abs().max())


def run(models=DEFAULT_MODELS, batches=DEFAULT_BATCHES, kinds=KINDS, baseline_budget_s: float = 5.0,
        baseline_max_repeats: int = 5, ours_budget_s: float = 1.0, skip_baseline_above: int | None = None,
        device: str = "cpu", baseline_max_s: float = 120.0,
        progress: Callable[[str], None] = print, tier: float | None = None) -> list[Row]:
    """Benchmark every model × kind × batch; returns the rows (see :class:`Row`). ``tier``: time
    ours at that verified accuracy tier's steps (models/accuracy.py) instead of the steps
    calibrated against the published method.

    The baseline runs at least once per row and repeats until ``baseline_budget_s``, at
    most ``baseline_max_repeats`` times; a row whose single baseline run is estimated
    (linearly from the previous batch of ≥ 256 rows) above ``baseline_max_s`` gets no
    baseline and says so.
    """
    rows = []
    dev = torch.device(device)
    peak = roofline.peak_gflops() if dev.type == "cpu" else None
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    for name in models:
        model, source = bench_model(name, progress)
        if tier is not None:
            model.spec, source = _at_tier(model.spec, tier, name), f"{source}; accuracy tier {tier:g} nats"
        model = model.to(dev)
        steps = model.spec.solver.steps_per_layer
        steps_s = ",".join(map(str, steps)) if isinstance(steps, tuple) else str(steps)
        sessions = _ort_sessions(model) if dev.type == "cpu" else {}
        base = PublishedBaseline(model, device=dev)  # same device as ours
        base.sample(torch.zeros(1, model.data_dim))  # warm the published code path once
        last_baseline: dict[str, tuple[int, float]] = {}  # kind -> (batch, ms), to bound run time
        for batch in sorted(set(batches)):
            gen = torch.Generator().manual_seed(batch)
            # batch 1: accuracy over several single requests (one row says little)
            n_ref = SINGLE_REQUESTS if batch == 1 else min(batch, REFERENCE_ROWS)
            z_all = torch.randn(max(batch, n_ref), model.data_dim, generator=gen, dtype=torch.float64)
            z = z_all[:batch]
            progress(f"{name} batch {batch}: tight float64 reference on {n_ref} rows")
            ref = calibration.tight_reference(model, z_all[:n_ref])  # float64, on the CPU
            x_in = ref.x.repeat(math.ceil(batch / n_ref), 1)[:batch]
            for kind in kinds:
                if kind == "sample":
                    ours_fn = functools.partial(_sample_from_latents, model)
                    base_fn = base.sample
                    inputs, want_x, want_lp = z_all, ref.x, ref.logp
                else:
                    ours_fn = model.log_prob
                    base_fn = base.log_prob
                    inputs, want_x, want_lp = ref.x, ref.z, ref.logp
                inp = inputs[:1] if batch == 1 else (z if kind == "sample" else x_in)
                with torch.no_grad():
                    timed = functools.partial(ours_fn, inp)
                    ours_ms, ours_cpu, ours_n, res = _time(timed, ours_budget_s, 200, 3, 2, sync)
                    outs = [ours_fn(inputs[i:i + 1]) for i in range(n_ref)] if batch == 1 else [res]
                ox = _err(torch.cat([o.x for o in outs]), want_x)
                ol = _err(torch.cat([o.logp for o in outs]), want_lp)
                b_ms = b_cpu = bx = bl = b_nfe = None
                b_n = 0
                note = ""
                prev = last_baseline.get(kind)
                # extrapolate linearly only from batches big enough to be throughput-bound
                estimate_s = None if prev is None or prev[0] < 256 else prev[1] / 1e3 * batch / prev[0]
                if skip_baseline_above is not None and batch > skip_baseline_above:
                    note = "baseline skipped (--skip-baseline-above)"
                elif estimate_s is not None and estimate_s > baseline_max_s:
                    note = f"baseline skipped: one run estimated at {estimate_s:.0f} s > {baseline_max_s:g} s"
                else:
                    progress(f"{name} {kind} batch {batch}: published baseline")
                    base.nfe = 0
                    b_ms, b_cpu, b_n, b_out = _time(functools.partial(base_fn, inp), baseline_budget_s,
                                                    baseline_max_repeats, 1, 0, sync)
                    b_nfe = base.nfe // b_n
                    b_outs = [base_fn(inputs[i:i + 1]) for i in range(n_ref)] if batch == 1 else [b_out]
                    bx = _err(torch.cat([o[0] for o in b_outs]), want_x)
                    bl = _err(torch.cat([o[1] for o in b_outs]), want_lp)
                    last_baseline[kind] = (batch, b_ms)
                ort_ms = None
                if kind in sessions:
                    sess = sessions[kind]
                    feed = {sess.get_inputs()[0].name: inp.to(torch.float32).numpy()}
                    ort_ms = _time(functools.partial(sess.run, None, feed), ours_budget_s, 200, 3, 2, sync)[0]
                if note:
                    progress(f"{name} {kind} batch {batch}: {note}")
                row = Row(model=name, kind=kind, batch=batch, baseline_ms=b_ms, ours_ms=ours_ms,
                          ratio=None if b_ms is None else b_ms / ours_ms,
                          baseline_cpu_ms=b_cpu, ours_cpu_ms=ours_cpu,
                          ratio_cpu=None if b_cpu is None else b_cpu / max(ours_cpu, 1e-6),
                          baseline_error=None if bx is None else max(bx, bl), ours_error=max(ox, ol),
                          baseline_error_x=bx, baseline_error_logp=bl, ours_error_x=ox, ours_error_logp=ol,
                          accurate=None if bx is None else (ox <= bx and ol <= bl),
                          baseline_nfe=b_nfe, ours_nfe=res.stats.nfe, baseline_repeats=b_n, ours_repeats=ours_n,
                          error_rows=n_ref, source=source, steps_per_layer=steps_s, note=note,
                          ort_ms=ort_ms, ours_over_ort=None if ort_ms is None else ours_ms / ort_ms)
                if model.spec.solver.method == "rk4":
                    n_layers = len(model.spec.layers)
                    flops = roofline.nominal_flops(model, [model.spec.solver.steps_for(k, n_layers)
                                                           for k in range(n_layers)], inp.shape[0])
                    row.ours_gflops = flops / (ours_ms * 1e-3) / 1e9
                    row.peak_fraction = row.ours_gflops / peak if peak else None
                rows.append(row)
                progress(format_row(row))
    return rows


def _ort_sessions(model: KirchhoffNet) -> dict:
    """onnxruntime sessions of the model's graphs with its serving RK4 steps (export/onnx_graphs.py),
    by kind; none for a model served otherwise."""
    from export.onnx_graphs import onnx_graph, session
    if model.spec.solver.method != "rk4":
        return {}
    kinds = ("sample", "logprob") if model.spec.bijective else ("sample",)
    return {kind: session(onnx_graph(model, kind)) for kind in kinds}


def _f(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


HEADER = ("model", "kind", "batch", "baseline ms", "ours ms", "ratio", "ratio (CPU time)", "baseline err",
          "ours err", "ours≤base", "NFE base/ours", "ORT ms", "ours/ORT", "GFLOP/s (% of peak)")


def format_row(r: Row) -> str:
    cells = (r.model, r.kind, str(r.batch), _f(r.baseline_ms, ".2f"), _f(r.ours_ms, ".3f"),
             _f(r.ratio, ".1f") + ("×" if r.ratio else ""), _f(r.ratio_cpu, ".1f") + ("×" if r.ratio_cpu else ""),
             _f(r.baseline_error, ".1e"), _f(r.ours_error, ".1e"),
             "—" if r.accurate is None else ("yes" if r.accurate else "NO"),
             f"{_f(r.baseline_nfe, 'd')}/{r.ours_nfe}", _f(r.ort_ms, ".3f"), _f(r.ours_over_ort, ".2f"),
             "—" if r.ours_gflops is None else
             f"{r.ours_gflops:.2f}" + ("" if r.peak_fraction is None else f" ({100 * r.peak_fraction:.1f} %)"))
    return "| " + " | ".join(cells) + " |"


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows (the one docs/engine.md quotes)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [format_row(r) for r in rows]
    sources = sorted({f"{r.model}: {r.source}; RK4 steps per layer {r.steps_per_layer}" for r in rows})
    lines += [""] + [f"- {s}" for s in sources]
    lines += [f"- {r.model} {r.kind} {r.batch}: {r.note}" for r in rows if r.note]
    return "\n".join(lines)


def write_csv(rows: list[Row], path: str | Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))


def write_json(rows: list[Row], env: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps({"environment": env, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="zoo names (default: %(default)s)")
    p.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES), help="batch sizes")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--json", action="store_true", help="print one JSON object (environment + rows) on stdout")
    p.add_argument("--csv", help="also write the rows to this CSV file")
    p.add_argument("--out-json", help="also write environment + rows to this JSON file")
    p.add_argument("--baseline-budget-s", type=float, default=5.0,
                   help="stop repeating the baseline once this many seconds are spent (≥ 1 run)")
    p.add_argument("--baseline-repeats", type=int, default=5, help="at most this many baseline runs per row")
    p.add_argument("--ours-budget-s", type=float, default=1.0)
    p.add_argument("--skip-baseline-above", type=int, help="time only ours for batches above this")
    p.add_argument("--baseline-max-s", type=float, default=120.0,
                   help="skip the baseline where one run is estimated above this (default %(default)s s)")
    p.add_argument("--device", default="cpu", help="torch device for both methods, e.g. cuda")
    p.add_argument("--tier", type=float, metavar="NATS",
                   help="time ours at this verified accuracy tier (e.g. 1e-3) instead of the published accuracy")


def run_from_args(args: argparse.Namespace) -> int:
    """``knet bench``: run the flags' benchmark, print the table (or JSON); returns the exit code."""
    if any(b < 1 for b in args.batches):
        raise UserInputError("batch sizes must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("CUDA requested but torch sees no GPU")
    env = environment()
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    log("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    rows = run(args.models, args.batches, args.kinds, args.baseline_budget_s, args.baseline_repeats,
               args.ours_budget_s, args.skip_baseline_above, args.device, args.baseline_max_s, progress=log,
               tier=args.tier)
    if args.csv:
        write_csv(rows, args.csv)
    if args.out_json:
        write_json(rows, env, args.out_json)
    if args.json:
        json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_table(rows))
    return 0
