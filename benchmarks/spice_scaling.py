"""Measure how ngspice's cost grows with circuit size: ``knet bench-ngspice``.

Builds random-parameter circuits on the ``mixed`` topology (an H×W pixel grid with k×k
neighbourhood edges, ground edges and two hub nodes, as an image model would use), runs
one input of the given netlist variant, and prints a markdown table of devices, accepted
time points, wall and CPU time and the CPU cost per (behavioural source × time point).
The figures in docs/export.md come from this script. Every run is bounded by
``--timeout`` seconds.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from export.netlist import build_deck
from export.simulate import estimate_seconds, source_count
from export.spice import SpiceError, run_deck
from models.config import CircuitSpec, LayerSpec
from models.errors import UserInputError
from models.flow import KirchhoffNet
from models.topology import mixed

CASES = {  # name: (grid height = width, kernel, repeat, layers)
    "4x4-k3-L2": (4, 3, 1, 2),
    "6x6-k3-L2": (6, 3, 1, 2),
    "8x8-k3-L1": (8, 3, 1, 1),
    "8x8-k3-L2": (8, 3, 1, 2),
    "8x8-k3-L4": (8, 3, 1, 4),
    "digits-8x8-k5-r2-L4": (8, 5, 2, 4),
}


def circuit(side: int, kernel: int, repeat: int, layers: int, seed: int = 0) -> KirchhoffNet:
    """A random ``mixed``-topology circuit on a side×side grid (init scale 0.3)."""
    edges = tuple(mixed((1, side, side), kernel, repeat, hubs=2))
    n = side * side
    layer = LayerSpec(duration=1.0 / layers, nodes=n, edges=edges)
    spec = CircuitSpec(name=f"scale{side}", device="affine-tanh", data_dim=n, layers=(layer,) * layers)
    model = KirchhoffNet(spec, init_scale=0.3, seed=seed)
    model.requires_grad_(False)
    return model


def measure(name: str, variant: str, timeout_s: float) -> dict:
    side, kernel, repeat, layers = CASES[name]
    model = circuit(side, kernel, repeat, layers)
    z = torch.randn(1, model.data_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    deck = build_deck(model, variant, z, measures=False)
    row = {"case": name, "variant": variant, "nodes": side * side, "layers": layers,
           "devices_per_layer": len(model.spec.layers[0].edges), "sources": source_count(model, variant),
           "projected_s": round(estimate_seconds(model, variant), 1)}
    try:
        run = run_deck(deck, timeout_s=timeout_s)
    except SpiceError as err:
        row.update(error=str(err)[:120])
        return row
    row.update(points=run.points, wall_s=round(run.wall_s, 2), cpu_s=round(run.cpu_s, 2),
               us_per_source_point=round(1e6 * run.cpu_s / (row["sources"] * run.points), 2))
    return row


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", default=",".join(list(CASES)[:-1]), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--variants", default="sample,logprob")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per ngspice run")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def run_from_args(args: argparse.Namespace) -> int:
    """Measure every case × variant the flags name and print a row per run; returns the exit code."""
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise UserInputError(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    cols = ["case", "variant", "layers", "devices_per_layer", "sources", "points", "wall_s", "cpu_s",
            "us_per_source_point", "projected_s"]
    if not args.json:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
    for name in cases:
        for variant in args.variants.split(","):
            print_row(measure(name, variant.strip(), args.timeout), cols, args.json)
    return 0


def print_row(row: dict, cols: list[str], as_json: bool) -> None:
    """One measured row: a JSON line, or a Markdown table row over ``cols`` (the error
    message stands in the ``points`` column of a failed run)."""
    if as_json:
        print(json.dumps(row))
    else:
        cells = [str(row.get(c, row.get("error", "") if c == "points" else "")) for c in cols]
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()
