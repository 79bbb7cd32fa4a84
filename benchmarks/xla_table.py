"""Ours against the JAX/XLA peer (benchmarks/xla.py), batch by batch: the table of docs/engine.md.

    knet bench-xla [--models twomoon ... genmnist-784] [--batches 1 2 4 8 16 64 1024 4096]
                   [--rounds 5] [--out-json benchmarks/results/bench-xla.json]

For every model × op (``logprob``; ``sample`` with log q) × batch: the peer's programs for that
batch's bucket are compiled (time kept apart), both of its forms are checked against our answer
on the same rows, then ours (``KirchhoffNet.log_prob`` / ``.sample``: the serving path, whatever
it picks), the dense peer and the gather peer are timed in interleaved rounds (each round: a few
calls of each, in turn; the figure is the median over rounds of each round's median), so a noisy
moment on a shared machine hits all three. The tables show ours / the faster peer form in wall ms
and in process-CPU ms (the steadier figure where other work shares the cores).

``genmnist-784`` is a circuit of the imported 784-D genmnist model's architecture (two
``_mix_connect`` layers of 50,240 diff-tanh devices on a 28×28 grid, RK4 9 and 4 steps, the
import's calibrated counts) with random weights: the published weights are not shipped, and the
cost of a solve depends on the circuit's shape, not on its weights; its cells stop at 1024 rows
(:data:`MAX_ROWS`). Wide models also get today's torch gather path timed at 1024 rows (the figure
the compiled path is measured against).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import xla
from models.config import CircuitSpec, LayerSpec, SolverConfig
from models.errors import UserInputError
from models.flow import KirchhoffNet

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 64, 1024, 4096)
ZOO_MODELS = ("twomoon", "circle", "swissroll", "2spirals", "pinwheel", "8gaussians", "potential1", "potential2",
              "twomoon-hw", "8gaussians-hw", "digits")
WIDE = "genmnist-784"
KINDS = ("logprob", "sample")
# one 4096-row solve of the 784-D circuit takes tens of seconds in XLA: its cells stop at 1024 rows
MAX_ROWS = {WIDE: 1024}
ROUND_S = 0.05  # each timed function runs at least this long (and 3 calls) per round


def genmnist_architecture(seed: int = 0) -> KirchhoffNet:
    """784 nodes, two layers of the published genmnist builder's 50,240 edges, diff-tanh, random
    weights (a, c ~ N(0, 0.1²): every node's ~64 devices keep RK4 at 9 and 4 steps stable)."""
    from models.reference_topology import mix_connect
    edges = tuple(mix_connect(1, 28, 28, 3, 0, [1, 1]))
    layer = LayerSpec(duration=0.5, nodes=784, edges=edges)
    spec = CircuitSpec(name=WIDE, device="diff-tanh", data_dim=784, layers=(layer, layer),
                       solver=SolverConfig(method="rk4", steps_per_layer=(9, 4)))
    model = KirchhoffNet(spec, init_scale=0.1, seed=seed)
    model.requires_grad_(False)
    return model


def load(name: str) -> KirchhoffNet:
    if name == WIDE:
        return genmnist_architecture()
    from models.checkpoint import load_model
    from models.zoo import resolve
    try:
        return load_model(resolve(name), torch.float32)
    except ValueError as err:
        raise UserInputError(f"{name}: {err}") from None


def _ours(model: KirchhoffNet, kind: str):
    if kind == "logprob":
        return lambda x: model.log_prob(torch.from_numpy(x))
    return lambda x: model.sample(0, z=torch.from_numpy(x))


def _round_ms(fn, x) -> tuple[float, float]:
    """Median wall and process-CPU ms of ``fn(x)`` over at least 3 calls and ROUND_S seconds (CPU
    time is the steadier figure on a shared machine: it leaves out time spent waiting for a core)."""
    times, cpu = [], []
    while len(times) < 3 or sum(times) < ROUND_S:
        t, c = time.perf_counter(), time.process_time()
        fn(x)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1e3 * statistics.median(times), 1e3 * statistics.median(cpu)


def measure(model: KirchhoffNet, kind: str, batch: int, peers: dict, rounds: int) -> dict:
    """One cell: ours and every peer form, checked, then timed in ``rounds`` interleaved rounds."""
    x = np.random.default_rng(batch).standard_normal((batch, model.data_dim)).astype(np.float32)
    ours = _ours(model, kind)
    with torch.no_grad():
        res = ours(x)
        if not res.stats.ok:
            raise RuntimeError(f"{model.spec.name} {kind} {batch}: ours failed: {res.stats.message}")
        cell = {"model": model.spec.name, "kind": kind, "batch": batch, "ours_path": res.stats.path,
                "bucket": xla.bucket(batch), "compile_s": {}, "agreement": {}}
        fns = {"ours": ours}
        for form, peer in peers.items():
            peer.prepare(kind, batch)
            cell["compile_s"][form] = peer.compile_s[(kind, xla.bucket(batch))]
            cell["agreement"][form] = peer.check(kind, x, res.x.numpy(), res.logp.numpy())
            fns[form] = lambda x, peer=peer: peer.run(kind, x)
        per_round = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                per_round[name].append(_round_ms(fn, x))
    cell["ms"] = {name: statistics.median(w for w, _ in v) for name, v in per_round.items()}
    cell["cpu_ms"] = {name: statistics.median(c for _, c in v) for name, v in per_round.items()}
    best = min(peers, key=lambda f: cell["ms"][f])
    cell["xla_form"], cell["xla_ms"] = best, cell["ms"][best]
    cell["xla_cpu_ms"] = min(cell["cpu_ms"][f] for f in peers)
    return cell


def torch_gather_ms(model: KirchhoffNet, kind: str, batch: int, rounds: int) -> float:
    """The torch gather path (the engine's path for wide circuits before the compiled gather
    kernels), same rows and steps."""
    from models import engine
    x = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, model.data_dim)).astype(np.float32))
    fn = lambda x: engine.integrate(model, x, model.spec.solver, kind == "logprob", native=False,  # noqa: E731
                                    small=False, form="gather")
    with torch.no_grad():
        return statistics.median(_round_ms(fn, x)[0] for _ in range(rounds))


def format_table(cells: list[dict], batches: list[int], cpu: bool = False) -> str:
    """ours / XLA per model × op (rows) and batch (columns), wall ms (or process-CPU ms)."""
    ours_key, xla_key = ("cpu_ms", "xla_cpu_ms") if cpu else ("ms", "xla_ms")
    by = {(c["model"], c["kind"], c["batch"]): c for c in cells}
    models = list(dict.fromkeys(c["model"] for c in cells))
    lines = ["| model, op | " + " | ".join(f"B={b}" for b in batches) + " |", "|---|" + "---|" * len(batches)]
    for name in models:
        for kind in KINDS:
            row = []
            for b in batches:
                c = by.get((name, kind, b))
                if c is None:
                    row.append("—")
                    continue
                ours, peer = c[ours_key]["ours"], c[xla_key]
                mark = "" if ours <= peer else "**"  # bold where XLA is faster
                row.append(f"{mark}{ours:.3g} / {peer:.3g}{mark}")
            if any(r != "—" for r in row):
                lines.append(f"| {name} {kind} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(ZOO_MODELS) + [WIDE],
                   help=f"zoo names or checkpoint directories, and {WIDE} (default: every zoo model and {WIDE})")
    p.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--forms", nargs="+", choices=xla.FORMS, default=list(xla.FORMS), help="the peer's forms")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per cell")
    p.add_argument("--out-json", help="also write every cell (times, compile times, agreement) to this file")


def run_from_args(args: argparse.Namespace) -> int:
    jax, version = xla.jax_status()
    if jax is None:
        raise UserInputError(f"knet bench-xla needs JAX: {version}")
    if args.rounds < 1 or any(not 1 <= b <= xla.MAX_BUCKET for b in args.batches):
        raise UserInputError(f"--rounds must be >= 1 and batches in 1..{xla.MAX_BUCKET}")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    env = {"jax": version, "xla_flags": os.environ.get("XLA_FLAGS", ""), "torch_threads": torch.get_num_threads(),
           "load_average_start": os.getloadavg()[0]}
    log("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    cells, gather_rows = [], []
    for name in args.models:
        model = load(name)
        forms = [f for f in args.forms if f != "dense" or model.data_dim <= xla.DENSE_MAX_NODES] or ["gather"]
        peers = {form: xla.XlaPeer(model, form) for form in forms}
        for kind in args.kinds:
            for b in [b for b in args.batches if b <= MAX_ROWS.get(name, xla.MAX_BUCKET)]:
                cell = measure(model, kind, b, peers, args.rounds)
                cells.append(cell)
                log(f"{name} {kind} B={b}: ours {cell['ms']['ours']:.3f} ms ({cell['ours_path']}), "
                    + ", ".join(f"XLA {f} {cell['ms'][f]:.3f} ms" for f in peers))
            if model.data_dim > 8 and 1024 in args.batches:
                ms = torch_gather_ms(model, kind, 1024, args.rounds)
                ours = next(c for c in cells if (c["model"], c["kind"], c["batch"]) == (name, kind, 1024))
                gather_rows.append({"model": name, "kind": kind, "torch_gather_ms": ms,
                                    "ours_ms": ours["ms"]["ours"], "speedup": ms / ours["ms"]["ours"]})
    env["load_average_end"] = os.getloadavg()[0]
    print(format_table(cells, args.batches))
    print(f"\nwall ms, ours / JAX {version} (faster of its dense and gather forms); bold where XLA is faster; "
          f"load average {env['load_average_start']:.2f} → {env['load_average_end']:.2f}\n")
    print(format_table(cells, args.batches, cpu=True))
    print("\nthe same cells in process-CPU ms (steadier on a shared machine)")
    for g in gather_rows:
        print(f"- {g['model']} {g['kind']} 1024 rows: torch gather path {g['torch_gather_ms']:.1f} ms, "
              f"ours {g['ours_ms']:.1f} ms ({g['speedup']:.2f}×)")
    compile_s = [s for c in cells for s in c["compile_s"].values()]
    print(f"- XLA compile per program: {min(compile_s):.2f}–{max(compile_s):.2f} s (not in the times)")
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(json.dumps({"environment": env, "cells": cells, "torch_gather": gather_rows},
                                                  indent=1) + "\n")
    return 0
