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
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks import roofline
from benchmarks.baseline import PublishedBaseline
from benchmarks.bench_table import Row, environment, format_row, format_table, plot_ratios, write_csv, write_json
from models import calibration
from models.checkpoint import load_model
from models.config import TrainConfig
from models.errors import UserInputError
from models.flow import KirchhoffNet

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # a source checkout's root (configs/ lives there)
DEFAULT_MODELS = ("twomoon", "potential1", "digits")
DEFAULT_BATCHES = (1, 64, 1024, 16384)
KINDS = ("sample", "logprob")
RATIO_TARGETS = {"published accuracy": 20.0, "tier 0.001": 15.0}  # at batch 1024 (docs/engine.md)
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


def _settings(model: KirchhoffNet, tiers, name: str, published: bool) -> list[tuple[str, KirchhoffNet]]:
    """The settings ours is timed at: the steps calibrated against the published method (when
    ``published``), then each verified tier named in ``tiers`` (nats), as ``(label, model)``; the
    models share their parameters."""
    import copy

    from models.accuracy import tier_solver
    out = [("published accuracy", model)] if published else []
    for tolerance in tiers:
        tier = next((t for t in model.spec.accuracy_tiers if t.tolerance_nats == tolerance), None)
        if tier is None:
            have = ", ".join(f"{t.tolerance_nats:g}" for t in model.spec.accuracy_tiers) or "none"
            raise UserInputError(f"{name}: no accuracy tier {tolerance:g} (tiers: {have}; `knet calibrate --tiers`)")
        at = copy.copy(model)  # shallow: same modules and parameters, its own spec
        at.spec = model.spec.model_copy(update={"solver": tier_solver(model.spec.solver, tier)})
        out.append((f"tier {tolerance:g}", at))
    return out


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
        progress: Callable[[str], None] = print, tiers=(), published: bool = True, xla: bool = True) -> list[Row]:
    """Benchmark every model × kind × batch × setting; returns the rows (see :class:`Row`). The
    settings are ours at the steps calibrated against the published method (``published``) and
    at each verified accuracy tier in ``tiers`` (nats; models/accuracy.py), every one against the
    same baseline timing and the same tight reference.

    The baseline runs at least once per model × kind × batch and repeats until
    ``baseline_budget_s``, at most ``baseline_max_repeats`` times; a batch whose single
    baseline run is estimated (linearly from the previous batch of ≥ 256 rows) above
    ``baseline_max_s`` gets no baseline and says so.
    """
    rows = []
    dev = torch.device(device)
    peak = (roofline.fma_peak_gflops() or roofline.peak_gflops()) if dev.type == "cpu" else None
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    for name in models:
        model, source = bench_model(name, progress)
        model = model.to(dev)
        settings = [(label, m, _ort_sessions(m) if dev.type == "cpu" else {})
                    for label, m in _settings(model, tiers, name, published)]
        peers = {label: _xla_peers(m, dev) if xla else "not measured (--no-xla)" for label, m, _ in settings}
        base = PublishedBaseline(model, device=dev)  # same device as ours
        base.sample(torch.zeros(1, model.data_dim))  # warm the published code path once
        last_baseline: dict[str, tuple[int, float]] = {}  # kind -> (batch, ms), to bound run time
        for batch in sorted(set(batches)):
            gen = torch.Generator().manual_seed(batch)
            # batch 1: accuracy over several single requests (one row says little)
            n_ref = SINGLE_REQUESTS if batch == 1 else min(batch, REFERENCE_ROWS)
            z_all = torch.randn(max(batch, n_ref), model.data_dim, generator=gen, dtype=torch.float64)
            progress(f"{name} batch {batch}: tight float64 reference on {n_ref} rows")
            ref = calibration.tight_reference(model, z_all[:n_ref])  # float64, on the CPU
            x_in = ref.x.repeat(math.ceil(batch / n_ref), 1)[:batch]
            for kind in kinds:
                # (inputs of the accuracy rows, their exact outputs x and log p, the timed input)
                if kind == "sample":
                    inputs, want_x, want_lp = z_all, ref.x, ref.logp
                    inp = z_all[:batch]
                else:
                    inputs, want_x, want_lp = ref.x, ref.z, ref.logp
                    inp = x_in
                inp = inputs[:1] if batch == 1 else inp
                timed_baseline = _baseline(base, kind, batch, inp, inputs, n_ref, last_baseline,
                                           skip_baseline_above, baseline_max_s, baseline_budget_s,
                                           baseline_max_repeats, sync, progress, name)
                b_ms, b_cpu, b_n, b_nfe, b_outs, note = timed_baseline
                bx = None if b_outs is None else _err(torch.cat([o[0] for o in b_outs]), want_x)
                bl = None if b_outs is None else _err(torch.cat([o[1] for o in b_outs]), want_lp)
                for label, m, sessions in settings:
                    ours_fn = functools.partial(_sample_from_latents, m) if kind == "sample" else m.log_prob
                    with torch.no_grad():
                        ours_ms, ours_cpu, ours_n, res = _time(functools.partial(ours_fn, inp), ours_budget_s,
                                                               200, 3, 2, sync)
                        outs = [ours_fn(inputs[i:i + 1]) for i in range(n_ref)] if batch == 1 else [res]
                    ox = _err(torch.cat([o.x for o in outs]), want_x)
                    ol = _err(torch.cat([o.logp for o in outs]), want_lp)
                    ort_ms = None
                    if kind in sessions:
                        sess = sessions[kind]
                        feed = {sess.get_inputs()[0].name: inp.to(torch.float32).numpy()}
                        ort_ms = _time(functools.partial(sess.run, None, feed), ours_budget_s, 200, 3, 2, sync)[0]
                    xla_ms, xla_form, xla_note = _time_xla(peers[label], kind, inp, res, ours_budget_s, sync)
                    steps = m.spec.solver.steps_per_layer
                    row = Row(model=name, kind=kind, batch=batch, baseline_ms=b_ms, ours_ms=ours_ms,
                              ratio=None if b_ms is None else b_ms / ours_ms,
                              baseline_cpu_ms=b_cpu, ours_cpu_ms=ours_cpu,
                              ratio_cpu=None if b_cpu is None else b_cpu / max(ours_cpu, 1e-6),
                              baseline_error=None if bx is None else max(bx, bl), ours_error=max(ox, ol),
                              baseline_error_x=bx, baseline_error_logp=bl, ours_error_x=ox, ours_error_logp=ol,
                              accurate=None if bx is None else (ox <= bx and ol <= bl),
                              baseline_nfe=b_nfe, ours_nfe=res.stats.nfe, baseline_repeats=b_n,
                              ours_repeats=ours_n, error_rows=n_ref, source=source,
                              steps_per_layer=",".join(map(str, steps)) if isinstance(steps, tuple) else str(steps),
                              setting=label, note=note, ort_ms=ort_ms,
                              ours_over_ort=None if ort_ms is None else ours_ms / ort_ms,
                              xla_ms=xla_ms, ours_over_xla=None if xla_ms is None else ours_ms / xla_ms,
                              xla_form=xla_form, xla_note=xla_note)
                    if m.spec.solver.method == "rk4":
                        n_layers = len(m.spec.layers)
                        flops = roofline.nominal_flops(m, [m.spec.solver.steps_for(k, n_layers)
                                                           for k in range(n_layers)], inp.shape[0])
                        # CPU time, as the bound below: steady where other work shares the cores
                        row.ours_gflops = flops / (max(ours_cpu, 1e-6) * 1e-3) / 1e9
                        row.peak_fraction = row.ours_gflops / peak if peak else None
                        steps_now = [m.spec.solver.steps_for(k, n_layers) for k in range(n_layers)]
                        bound = roofline.bound_s(m, steps_now, inp.shape[0]) if dev.type == "cpu" else None
                        row.bound_fraction = None if bound is None else bound / (ours_cpu * 1e-3)
                    rows.append(row)
                    progress(format_row(row))
    return rows


def _baseline(base: PublishedBaseline, kind: str, batch: int, inp, inputs, n_ref: int, last_baseline: dict,
              skip_above, max_s: float, budget_s: float, max_repeats: int, sync, progress, name: str):
    """The published method timed on ``inp`` (``kind``, ``batch`` rows): ``(ms, cpu ms, repeats,
    nfe per run, outputs of the accuracy rows, note)``; all None but the note where it is skipped
    (``--skip-baseline-above``, or one run estimated above ``max_s`` from the last big batch)."""
    prev = last_baseline.get(kind)
    # extrapolate linearly only from batches big enough to be throughput-bound
    estimate_s = None if prev is None or prev[0] < 256 else prev[1] / 1e3 * batch / prev[0]
    note = ""
    if skip_above is not None and batch > skip_above:
        note = "baseline skipped (--skip-baseline-above)"
    elif estimate_s is not None and estimate_s > max_s:
        note = f"baseline skipped: one run estimated at {estimate_s:.0f} s > {max_s:g} s"
    if note:
        progress(f"{name} {kind} batch {batch}: {note}")
        return None, None, 0, None, None, note
    progress(f"{name} {kind} batch {batch}: published baseline")
    fn = base.sample if kind == "sample" else base.log_prob
    base.nfe = 0
    ms, cpu, n, out = _time(functools.partial(fn, inp), budget_s, max_repeats, 1, 0, sync)
    nfe = base.nfe // n
    outs = [fn(inputs[i:i + 1]) for i in range(n_ref)] if batch == 1 else [out]
    last_baseline[kind] = (batch, ms)
    return ms, cpu, n, nfe, outs, note


def _xla_peers(model: KirchhoffNet, device: torch.device) -> dict | str:
    """The JAX/XLA peer of ``model`` in both forms (benchmarks/xla.py), or why there is none."""
    from benchmarks import xla
    if device.type != "cpu":
        return "CPU rows only"
    jax, why = xla.jax_status()
    if jax is None:
        return why
    try:
        return {form: xla.XlaPeer(model, form) for form in xla.FORMS
                if form != "dense" or model.data_dim <= xla.DENSE_MAX_NODES}
    except ValueError as err:
        return str(err)


def _time_xla(peers: dict | str, kind: str, inp: torch.Tensor, res, budget_s: float,
              sync) -> tuple[float | None, str, str]:
    """``(ms, form, note)``: the faster of the peer's forms on ``inp`` after checking it against our
    answer ``res``; ``(None, "", why)`` without JAX."""
    if isinstance(peers, str):
        return None, "", peers
    x = inp.to(torch.float32).numpy()
    best = None
    for form, peer in peers.items():
        peer.prepare(kind, x.shape[0])  # compile time stays out of the figure (peer.compile_s)
        peer.check(kind, x, res.x.numpy(), res.logp.numpy())
        ms = _time(functools.partial(peer.run, kind, x), budget_s, 200, 3, 2, sync)[0]
        if best is None or ms < best[0]:
            best = (ms, form)
    return best[0], best[1], ""


def _ort_sessions(model: KirchhoffNet) -> dict:
    """onnxruntime sessions of the model's graphs with its serving RK4 steps (export/onnx_graphs.py),
    by kind; none for a model served otherwise."""
    from export.onnx_graphs import onnx_graph, session
    if model.spec.solver.method != "rk4":
        return {}
    kinds = ("sample", "logprob") if model.spec.bijective else ("sample",)
    return {kind: session(onnx_graph(model, kind)) for kind in kinds}


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
    p.add_argument("--tiers", nargs="+", type=float, metavar="NATS", default=[],
                   help="also time ours at these verified accuracy tiers (e.g. 1e-2 1e-3), each against the "
                        "same baseline")
    p.add_argument("--plot", metavar="PNG", help="also draw the speed-ups at the largest batch (the issue's "
                   "targets: 20x at the published accuracy, 15x at the 1e-3 tier)")
    p.add_argument("--no-xla", action="store_true",
                   help="leave out the JAX/XLA peer's column (its programs compile per batch size: seconds each)")
    p.add_argument("--only-tiers", action="store_true",
                   help="time ours only at --tiers, not at the steps calibrated to the published accuracy")


def run_from_args(args: argparse.Namespace) -> int:
    """``knet bench``: run the flags' benchmark, print the table (or JSON); returns the exit code."""
    if args.only_tiers and not args.tiers:
        raise UserInputError("--only-tiers needs --tiers")
    if any(b < 1 for b in args.batches):
        raise UserInputError("batch sizes must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("CUDA requested but torch sees no GPU")
    env = environment()
    # progress (each row as it is measured) on stderr, the result on stdout: the table (or the
    # JSON) once, so `knet bench > table.md` holds the table alone
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    rows = run(args.models, args.batches, args.kinds, args.baseline_budget_s, args.baseline_repeats,
               args.ours_budget_s, args.skip_baseline_above, args.device, args.baseline_max_s, progress=log,
               tiers=args.tiers, published=not args.only_tiers, xla=not args.no_xla)
    if args.csv:
        write_csv(rows, args.csv)
    if args.out_json:
        write_json(rows, env, args.out_json)

    if args.json:
        json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_table(rows))
    if args.plot:  # after the table: a plot that cannot be drawn loses nothing measured
        try:
            plot_ratios(rows, args.plot, targets=RATIO_TARGETS)
        except ValueError as err:
            raise UserInputError(f"--plot: {err} (rows skipped their baseline)") from None
    return 0
