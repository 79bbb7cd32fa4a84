"""Thermal noise in ngspice against the SDE of ``models.chip``: ``knet bench-noise``.

A small chip instance (3 nodes, 2 layers of 5 affine-tanh devices, unequal capacitors, 5 %
mismatch) at C = 1 fF, so the noise (√(kT/C) ≈ 2 mV) is far above the simulator's
tolerances, is simulated ``--runs`` times from one latent with a noise current on every
device (``export.noise_deck``: ngspice ``trnoise`` sources, and seeded ``pwl`` sources), and
the output mean and variance are compared with ``--sde-samples`` paths of the SDE. With 200
runs a variance ratio is known to about ±20 % at 95 % (χ²₁₉₉/199 ∈ [0.813, 1.206]); the
script prints that interval, and exits 1 when a ratio falls outside it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from models.config import ChipConfig, CircuitSpec, HardwareConstants, LayerSpec, SolverConfig
from models.errors import UserInputError
from models.flow import KirchhoffNet

LATENT = (0.5, -0.3, 1.0)  # the one input every run starts from (model units)
MAX_RUNS = 2000
SOURCES = ("trnoise", "pwl")  # export.noise_deck.SOURCES (imported lazily: `knet` loads this module at start-up)


def noise_circuit(capacitance_f: float = 1e-15, steps: int = 128) -> KirchhoffNet:
    """3 nodes, 2 layers of 5 affine-tanh devices (ground edges included), capacitors
    (1, 0.6, 1.7)·C; ``steps`` RK4 steps per layer (the SDE's Euler–Maruyama steps too)."""
    edges = ((1, 2), (2, 3), (3, 1), (0, 2), (1, 0))
    layers = tuple(LayerSpec(duration=0.5, nodes=3, edges=edges, capacitance=(1.0, 0.6, 1.7)) for _ in range(2))
    spec = CircuitSpec(name="chipsmall", device="affine-tanh", data_dim=3, layers=layers,
                       hardware=HardwareConstants(capacitance_f=capacitance_f),
                       solver=SolverConfig(method="rk4", steps_per_layer=steps))
    model = KirchhoffNet(spec, init_scale=0.9, seed=3).to(torch.float64)
    model.requires_grad_(False)
    return model


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=200, help="noisy ngspice runs per source (default 200)")
    p.add_argument("--sde-samples", type=int, default=20000, help="SDE paths (default 20000)")
    p.add_argument("--sources", default=",".join(SOURCES), help="comma-separated: trnoise (ngspice), pwl (seeded)")
    p.add_argument("--mismatch", type=float, default=0.05, help="chip instance mismatch sigma (default 0.05)")
    p.add_argument("--instance", type=int, default=2, help="chip instance seed")
    p.add_argument("--capacitance", type=float, default=1e-15, help="node capacitance C, farads (default 1e-15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the SDE noise and of the pwl samples")
    p.add_argument("--jobs", type=int, default=2, help="ngspice runs at once (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object per source instead of tables")


def run_from_args(args: argparse.Namespace) -> int:
    """Compare each source's noisy runs with the SDE; 0 when every variance ratio lies in the
    95 % interval, else 1."""
    from tqdm import tqdm

    from export.noise_deck import compare_noise

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if not sources or set(sources) - set(SOURCES):
        raise UserInputError(f"--sources: choose from {', '.join(SOURCES)}")
    if not 2 <= args.runs <= MAX_RUNS:
        raise UserInputError(f"--runs must be in 2..{MAX_RUNS}")
    if not 2 <= args.sde_samples <= 1_000_000:
        raise UserInputError("--sde-samples must be in 2..1000000")
    if args.jobs < 1:
        raise UserInputError("--jobs must be >= 1")
    if not 1e-18 <= args.capacitance <= 1e-9:
        raise UserInputError("--capacitance must be in [1e-18, 1e-9] F")
    chip = ChipConfig(mismatch=args.mismatch, instance=args.instance)  # ValidationError names the field
    model = noise_circuit(args.capacitance)
    z = torch.tensor(LATENT, dtype=torch.float64)
    ok = True
    for source in sources:
        started = time.perf_counter()
        with tqdm(total=args.runs, desc=source, unit="run", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
            r = compare_noise(model, chip, z, args.runs, args.sde_samples, source, args.seed, args.jobs, bar.update)
        elapsed = time.perf_counter() - started
        ok &= r.inside()
        if args.json:
            print(json.dumps({**r.__dict__, "elapsed_s": elapsed, "inside_95": r.inside()}))
            continue
        lo, hi = r.interval
        print(f"\n{source}: {r.runs} runs vs {r.sde_samples} SDE paths, chip {chip.effects()} "
              f"instance {chip.instance}, "
              f"C = {args.capacitance:g} F; 95 % interval of the variance ratio for {r.runs} runs: "
              f"[{lo:.3f}, {hi:.3f}]")
        print("| output | mean (ngspice) | mean (SDE) | noiseless | diff / s.e. | var (ngspice) | var (SDE) "
              "| ratio | inside |")
        print("|---|---|---|---|---|---|---|---|---|")
        for k in range(len(r.ratio)):
            print(f"| x{k + 1} | {r.mean_sim[k]:.6f} | {r.mean_sde[k]:.6f} | {r.noiseless[k]:.6f} | {r.mean_z[k]:+.2f} "
                  f"| {r.var_sim[k]:.3e} | {r.var_sde[k]:.3e} | {r.ratio[k]:.3f} "
                  f"| {'yes' if lo <= r.ratio[k] <= hi else 'NO'} |")
        print(f"distinct runs: {r.distinct_runs}/{r.runs}; ngspice wall (sum) {r.sim_wall_s:.1f} s, "
              f"SDE {r.sde_wall_s:.1f} s, elapsed {elapsed:.1f} s")
        sys.stdout.flush()
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.noise_ngspice", description=__doc__.split("\n\n")[0])
    add_args(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
