"""Engine subcommands: ``knet bench`` (published method vs engine) and ``knet calibrate``."""
from __future__ import annotations

import argparse
import sys

from .settings import REPO_ROOT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time the published method against the engine, with accuracy")
    _bench_module().add_args(p) if _bench_importable() else None
    p.set_defaults(func=cmd_bench)

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
    p.set_defaults(func=cmd_calibrate)


def _bench_importable() -> bool:
    if str(REPO_ROOT) not in sys.path:  # benchmarks/ lives beside the packages, not inside one
        sys.path.insert(0, str(REPO_ROOT))
    try:
        import benchmarks.bench  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def _bench_module():
    import benchmarks.bench as bench
    return bench


def cmd_bench(args: argparse.Namespace) -> int:
    if not _bench_importable():
        raise ValueError(f"benchmarks/ not found beside the package (looked in {REPO_ROOT})")
    return _bench_module().main_from_args(args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from models import calibration
    from models.checkpoint import CIRCUIT_FILE, atomic_write, circuit_bytes, load_model
    from models.zoo import resolve

    from .common import print_json

    if args.points < 1:
        raise ValueError("--points must be >= 1")
    if not 0 < args.safety <= 1:
        raise ValueError("--safety must be in (0, 1]")
    directory = resolve(args.model)
    model = load_model(directory, torch.float32 if args.dtype == "float32" else torch.float64)

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
