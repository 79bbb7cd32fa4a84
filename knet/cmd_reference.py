"""``knet import-reference``: serve circuits trained with the published KirchhoffNet code.

Reads a results folder (``config.yaml`` + ``model.pth``) through ``models.reference``, writes
our checkpoint, then calibrates the serving solver (``models.calibration``, as ``knet
calibrate --write`` does) in a child process under a wall-clock bound with a progress bar.
If calibration does not finish in time the checkpoint keeps the solver the model was trained
with (correct, slower) and a warning says how to calibrate later.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

from models.errors import UserInputError

DEFAULT_TIMEOUT_S = 600.0  # the bound for the 784-D genmnist model on 2 CPUs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-reference",
                       help="turn a results folder of the published KirchhoffNet code into a checkpoint")
    p.add_argument("folder", help="results folder holding config.yaml and model.pth")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--name", help="model name (default: the folder's test_bench, else its directory name)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="keep the published solver (dopri5) instead of calibrating RK4 step counts")
    p.add_argument("--calibration-points", type=int,
                   help="latents for calibration (default 512; 16 above 64 dimensions, where one "
                        "tight solve takes minutes)")
    p.add_argument("--calibration-timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                   help="wall-clock bound on calibration, seconds (default %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype the service runs the model in; calibration uses it (default %(default)s)")
    p.set_defaults(func=cmd_import_reference)


def cmd_import_reference(args: argparse.Namespace) -> int:
    import torch

    from models import calibration
    from models.checkpoint import CIRCUIT_FILE, atomic_write, circuit_bytes, content_hash, save_model
    from models.reference import read_folder

    from .common import print_json

    if args.calibration_points is not None and args.calibration_points < 1:
        raise UserInputError("--calibration-points must be >= 1")
    if not args.calibration_timeout_s > 0:
        raise UserInputError("--calibration-timeout-s must be > 0")
    imported = read_folder(args.folder, args.name)
    model = imported.model(torch.float64)
    out = Path(args.out)
    save_model(model, out)
    spec = model.spec
    report: dict = {"status": "skipped", "solver": spec.solver.method}
    if not args.no_calibrate:
        dtype = torch.float32 if args.dtype == "float32" else torch.float64
        points = args.calibration_points or (512 if spec.data_dim <= 64 else 16)
        record, report = calibrate_bounded(model.to(dtype), points, args.calibration_timeout_s)
        if record is not None:
            spec = calibration.apply(spec, record)
            atomic_write(out / CIRCUIT_FILE, circuit_bytes(spec))
            report["steps_per_layer"] = list(record.steps_per_layer)
        else:
            print(f"warning: calibration {report['status']} ({report['reason']}); {out} keeps the published "
                  f"solver ({spec.solver.method}); run `knet calibrate {out} --write` to calibrate later",
                  file=sys.stderr)
    print_json({"name": spec.name, "out": str(out), "sha256": content_hash(out), "device": spec.device,
                "device_class": spec.imported_from.device_class, "data_dim": spec.data_dim,
                "layers": len(spec.layers), "edges": spec.num_edges,
                "ignored_keys": list(spec.imported_from.ignored_keys), "calibration": report})
    return 0


def calibrate_bounded(model, points: int, timeout_s: float):
    """Run ``models.calibration.calibrate`` in a forked child, killed after ``timeout_s``.

    Returns ``(record or None, report)``; ``report`` holds ``status`` (``calibrated``,
    ``timeout`` or ``failed``), ``seconds`` and, on failure, ``reason``.
    """
    ctx = multiprocessing.get_context("fork")  # the child inherits the model; nothing to pickle
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_calibrate_child, args=(model, points, sender), daemon=True)
    started = time.perf_counter()
    child.start()
    sender.close()
    try:
        message = receiver.recv() if receiver.poll(timeout_s) else None
    except EOFError:  # the child died without a word (killed, out of memory)
        message = ("failed", f"calibration process exited with code {child.exitcode}")
    finally:
        if child.is_alive():
            child.terminate()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    seconds = round(time.perf_counter() - started, 1)
    if message is None:
        return None, {"status": "timeout", "seconds": seconds,
                      "reason": f"not finished within {timeout_s:g} s with {points} points"}
    if message[0] == "ok":
        from models.config import CalibrationRecord
        return CalibrationRecord.model_validate_json(message[1]), {"status": "calibrated", "seconds": seconds,
                                                                   "points": points}
    return None, {"status": "failed", "seconds": seconds, "reason": message[1]}


def _calibrate_child(model, points: int, sender) -> None:
    from tqdm import tqdm

    from models import calibration

    n_layers = len(model.spec.layers)
    bar = tqdm(total=n_layers, desc="calibrate: reference solve", unit="layer", file=sys.stderr)

    def progress(k: int, steps: int) -> None:
        if k == 0:  # a new search round starts over the layers
            bar.reset(total=n_layers)
            bar.set_description("calibrate: RK4 steps per layer")
        bar.set_postfix(layer=k, steps=steps)
        bar.update(1)

    try:
        record = calibration.calibrate(model, points=points, progress=progress)
        sender.send(("ok", record.model_dump_json()))
    except Exception as err:  # reported to the parent as data; the checkpoint stays usable
        sender.send(("failed", str(err)))
    finally:
        bar.close()
        sender.close()
