"""Wall and CPU time against device count for both circuit simulators:
``python -m benchmarks.sim_scaling``.

Runs one input of each case's decks in ngspice (behavioural sources) and VACASK (compiled
Verilog-A devices, KLU), side by side in one process, and prints a markdown table (plus a
JSON line per run with ``--json``): devices, instances (devices plus divergence sources),
accepted time points, wall and CPU seconds, the projected CPU seconds of
``export.simulate``'s cost models, and how far the two simulators' read-outs are apart.
Cases: the zoo's twomoon (600 devices) and digits (3144 devices) models and a synthetic
~10 000-device digits-sized circuit (8×8 grid, 5×5 neighbourhoods, 2 repeats, 4 layers).

Bounded: every run has ``--timeout`` seconds; a run whose projection exceeds
``--skip-above`` seconds is not started (reported as skipped with its projection); no new
run starts once ``--budget`` seconds have passed. ``--plot FILE`` draws CPU time against
instance count for both simulators (docs/sim_scaling.png).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from export.netlist import build_deck
from export.simulate import estimate_seconds, estimate_seconds_vacask, source_count
from export.spice import SpiceError
from export.spice import run_deck as run_ngspice
from export.vacask import VacaskError
from export.vacask import run_deck as run_vacask
from models.checkpoint import load_model
from models.config import CircuitSpec, LayerSpec
from models.flow import KirchhoffNet
from models.topology import mixed
from models.zoo import resolve

from .spice_scaling import print_row

SIMULATORS = {"ngspice": (run_ngspice, estimate_seconds, SpiceError),
              "vacask": (run_vacask, estimate_seconds_vacask, VacaskError)}
CASES = ("twomoon", "digits", "synthetic-10k")
VARIANTS = ("sample", "logprob")


def synthetic_10k(seed: int = 0) -> KirchhoffNet:
    """A digits-sized random circuit: 64 nodes, 2530 devices per layer, 4 layers (10 120)."""
    edges = tuple(mixed((1, 8, 8), 5, 2, hubs=2))
    layer = LayerSpec(duration=0.25, nodes=64, edges=edges)
    spec = CircuitSpec(name="synthetic-10k", device="affine-tanh", data_dim=64, layers=(layer,) * 4)
    model = KirchhoffNet(spec, init_scale=0.3, seed=seed).to(torch.float64)
    model.requires_grad_(False)
    return model


def load_case(name: str) -> KirchhoffNet:
    if name == "synthetic-10k":
        return synthetic_10k()
    return load_model(resolve(name), torch.float64, "cpu")


def measure(model: KirchhoffNet, case: str, variant: str, simulators: list[str], timeout_s: float,
            skip_above_s: float) -> list[dict]:
    """One input of ``variant`` in each simulator; a row per simulator."""
    z = torch.randn(1, model.data_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    deck = build_deck(model, variant, z, measures=False)
    rows, values = [], {}
    for name in simulators:
        run, estimate, error = SIMULATORS[name]
        row = {"case": case, "variant": variant, "simulator": name, "devices": model.spec.num_edges,
               "instances": source_count(model, variant), "projected_s": round(estimate(model, variant), 2)}
        if row["projected_s"] > skip_above_s:
            row["error"] = f"skipped: projected {row['projected_s']:.0f} s > {skip_above_s:g} s"
        else:
            try:
                result = run(deck, timeout_s=timeout_s)
                values[name] = result.values
                row.update(points=result.points, wall_s=round(result.wall_s, 3), cpu_s=round(result.cpu_s, 3),
                           us_per_instance_point=round(1e6 * result.cpu_s / (row["instances"] * result.points), 3))
            except (SpiceError, VacaskError) as err:
                row["error"] = str(err)[:140]
        rows.append(row)
    if len(values) == 2:
        a, b = values.values()
        scale = max(abs(v) for v in a.values())
        apart = max(abs(a[k] - b[k]) for k in a) / scale
        for row in rows:
            row["rel_apart"] = float(f"{apart:.2e}")
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for sim, marker in (("ngspice", "o"), ("vacask", "s")):
        for variant, fill in (("sample", "full"), ("logprob", "none")):
            pts = sorted((r["instances"], r["cpu_s"]) for r in rows
                         if r["simulator"] == sim and r["variant"] == variant and "cpu_s" in r)
            if pts:
                ax.plot(*zip(*pts), marker=marker, fillstyle=fill, label=f"{sim} {variant}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("instances (devices + divergence sources)")
    ax.set_ylabel("CPU seconds per input")
    ax.set_title("Circuit simulation cost: ngspice vs VACASK")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sim_scaling", description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated netlist variants")
    p.add_argument("--simulators", default="ngspice,vacask")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per simulator run")
    p.add_argument("--skip-above", type=float, default=240.0, help="skip runs projected above this (CPU s)")
    p.add_argument("--budget", type=float, default=900.0, help="start no run after this many seconds")
    p.add_argument("--plot", help="write a PNG of CPU time against instances")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sims = [s.strip() for s in args.simulators.split(",") if s.strip()]
    unknown = [s for s in sims if s not in SIMULATORS]
    if unknown:
        p.error(f"unknown simulator {unknown[0]!r}; expected {', '.join(SIMULATORS)}")
    cols = ["case", "variant", "simulator", "devices", "instances", "points", "wall_s", "cpu_s",
            "us_per_instance_point", "projected_s", "rel_apart"]
    if not args.json:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
    started = time.monotonic()
    rows: list[dict] = []
    for case in args.cases.split(","):
        model = load_case(case.strip())
        for variant in args.variants.split(","):
            if time.monotonic() - started > args.budget:
                print(f"(budget of {args.budget:g} s spent: {case} {variant} not run)", file=sys.stderr)
                continue
            for row in measure(model, case.strip(), variant.strip(), sims, args.timeout, args.skip_above):
                rows.append(row)
                print_row(row, cols, args.json)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
