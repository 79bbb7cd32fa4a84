"""Benchmark subcommands (thin wrappers over the ``benchmarks`` package) and ``knet calibrate``.

| command | module | what it measures |
| --- | --- | --- |
| ``knet bench`` | ``benchmarks.bench`` | the published method against the engine, with accuracy |
| ``knet bench-xla`` | ``benchmarks.xla_table`` | the engine against a jit-compiled JAX/XLA peer, batch by batch |
| ``knet bench-levers`` | ``benchmarks.levers`` | each engine lever on its own (CPU time) |
| ``knet bench-batching`` | ``benchmarks.batching`` | the service's micro-batcher on and off, over HTTP |
| ``knet bench-overhead`` | ``benchmarks.overhead`` | per-request overhead beside a no-op endpoint, one server |
| ``knet bench-peers`` | ``benchmarks.peers`` | Gaussian, mixtures and zuko flows on the digits split |
| ``knet bench-ngspice`` | ``benchmarks.spice_scaling`` | ngspice's cost against circuit size |
| ``knet bench-noise`` | ``benchmarks.noise_ngspice`` | thermal noise in ngspice (trnoise) against the SDE |
"""
from __future__ import annotations

import argparse
import importlib
import sys

from models.errors import UserInputError

BENCHMARKS = {  # command: (module, help)
    "bench": ("benchmarks.bench", "time the published method against the engine, with accuracy"),
    "bench-xla": ("benchmarks.xla_table", "the engine against the same circuits jit-compiled by JAX/XLA, 1 thread"),
    "bench-levers": ("benchmarks.levers", "time each engine lever on its own (CPU ms)"),
    "bench-batching": ("benchmarks.batching", "the micro-batcher on vs off, side by side over localhost HTTP"),
    "bench-overhead": ("benchmarks.overhead", "per-request overhead over a no-op endpoint's latency, one server"),
    "bench-peers": ("benchmarks.peers", "standard density models on the digits model's data, split and test points"),
    "bench-ngspice": ("benchmarks.spice_scaling", "ngspice wall and CPU time against circuit size"),
    "bench-noise": ("benchmarks.noise_ngspice", "thermal noise in ngspice (trnoise, 200 runs) against the SDE"),
}


def register(sub: argparse._SubParsersAction) -> None:
    for command, (module_name, help_text) in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(command, help=help_text, description=(module.__doc__ or help_text).split("\n\n")[0])
        module.add_args(p)
        p.set_defaults(func=module.run_from_args)

    p = sub.add_parser("calibrate", help="find the fewest RK4 steps per layer at the published accuracy")
    p.add_argument("model", help="zoo name (twomoon, …) or checkpoint directory")
    p.add_argument("--write", action="store_true",
                   help="store the steps and the calibration record in the checkpoint's circuit.json")
    p.add_argument("--points", type=int, default=512, help="calibration points (latents)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--safety", type=float, default=0.5,
                   help="target = SAFETY × the published method's error (default %(default)s)")
    p.add_argument("--tolerance", type=float, help="also cap the target at this absolute error")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype the service runs the model in")
    p.add_argument("--tiers", nargs="*", type=float, metavar="NATS",
                   help="instead: verified accuracy tiers for these log p tolerances (default 1e-2 1e-3 1e-4; 1 "
                        "above 64 dimensions), "
                        "searched on the model's samples and diverse inputs, verified on held-out ones")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from models import calibration
    from models.checkpoint import CIRCUIT_FILE, atomic_write, circuit_bytes, load_model
    from models.zoo import resolve

    from .common import print_json

    if args.points < 1:
        raise UserInputError("--points must be >= 1")
    if not 0 < args.safety <= 1:
        raise UserInputError("--safety must be in (0, 1]")
    directory = resolve(args.model)
    model = load_model(directory, torch.float32 if args.dtype == "float32" else torch.float64)

    if args.tiers is not None:
        return _calibrate_tiers(args, directory, model)

    def progress(k: int, steps: int) -> None:
        print(f"layer {k}: {steps} RK4 steps", file=sys.stderr)

    record = calibration.calibrate(model, points=args.points, seed=args.seed, safety=args.safety,
                                   tolerance_cap=args.tolerance, progress=progress)
    out = record.model_dump(mode="json")
    if args.write:
        atomic_write(directory / CIRCUIT_FILE, circuit_bytes(calibration.apply(model.spec, record)))
        out["written"] = str(directory / CIRCUIT_FILE)
    print_json(out)
    return 0


def _calibrate_tiers(args: argparse.Namespace, directory, model) -> int:
    """``knet calibrate MODEL --tiers [NATS ...] [--write]`` (models/accuracy.py)."""
    from models.accuracy import calibrate_tiers, default_tolerances
    from models.checkpoint import CIRCUIT_FILE, atomic_write, circuit_bytes
    from models.data import TASKS
    from models.zoo import task_name

    from .common import print_json

    tolerances = tuple(args.tiers) or default_tolerances(model.data_dim)
    if any(not t > 0 for t in tolerances):
        raise UserInputError("--tiers: tolerances must be > 0 (nats)")
    task = TASKS.get(task_name(directory, model.spec.name))
    try:
        tiers, missing = calibrate_tiers(model, task, tolerances, points=args.points, seed=args.seed,
                                         progress=lambda line: print(line, file=sys.stderr))
    except ValueError as err:
        raise UserInputError(f"{args.model}: {err}") from None
    out = {"tiers": [t.model_dump(mode="json") for t in tiers], "missing": {f"{k:g}": v for k, v in missing.items()},
           "task": None if task is None else task.name}
    if args.write:
        spec = model.spec.model_copy(update={"accuracy_tiers": tuple(tiers)})
        atomic_write(directory / CIRCUIT_FILE, circuit_bytes(spec))
        out["written"] = str(directory / CIRCUIT_FILE)
    print_json(out)
    return 0

