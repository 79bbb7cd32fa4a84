"""``knet import-reference``: serve circuits trained with the published KirchhoffNet code.

Reads a results folder (``config.yaml`` + ``model.pth``) through ``models.reference``, writes
our checkpoint, then, in one child process under one wall-clock bound with a progress bar:
calibrates the serving solver (``models.calibration``, as ``knet calibrate --write``) and
searches and verifies the accuracy tiers (``models.accuracy``, as ``knet calibrate --tiers
--write``). What does not finish in time is left out with a warning saying how to do it later:
without calibration the checkpoint keeps the solver the model was trained with (correct,
slower); without tiers it is served with that solver and its answers carry ``accuracy_tier``
and ``error_bound`` null (no verified bound), which the service also warns about.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from dataclasses import dataclass, field
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
    p.add_argument("--tiers", nargs="+", type=float, metavar="NATS",
                   help="log p tolerances of the accuracy tiers to verify (default 1e-2 1e-3 1e-4; 1 above "
                        "64 dimensions, where float32 log-densities cannot be more accurate)")
    p.add_argument("--no-tiers", action="store_true", help="skip the accuracy tiers (answers carry no error bound)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype the service runs the model in; calibration uses it (default %(default)s)")
    p.set_defaults(func=cmd_import_reference)


def cmd_import_reference(args: argparse.Namespace) -> int:
    import torch

    from models import calibration
    from models.accuracy import default_tolerances
    from models.checkpoint import CIRCUIT_FILE, atomic_write, circuit_bytes, content_hash, save_model
    from models.reference import read_folder

    from .common import print_json

    if args.calibration_points is not None and args.calibration_points < 1:
        raise UserInputError("--calibration-points must be >= 1")
    if not args.calibration_timeout_s > 0:
        raise UserInputError("--calibration-timeout-s must be > 0")
    if args.tiers and any(not t > 0 for t in args.tiers):
        raise UserInputError("--tiers: tolerances must be > 0 (nats)")
    imported = read_folder(args.folder, args.name)
    tolerances = () if args.no_tiers else tuple(args.tiers or default_tolerances(imported.spec.data_dim))
    model = imported.model(torch.float64)
    out = Path(args.out)
    save_model(model, out)
    spec = model.spec
    report: dict = {"status": "skipped", "solver": spec.solver.method}
    tiers_report: dict = {"status": "skipped"}
    if not args.no_calibrate:
        dtype = torch.float32 if args.dtype == "float32" else torch.float64
        points = args.calibration_points or (512 if spec.data_dim <= 64 else 16)
        result = calibrate_bounded(model.to(dtype), points, args.calibration_timeout_s, tolerances)
        report, tiers_report = result.report, result.tiers_report
        if result.record is not None:
            spec = calibration.apply(spec, result.record)
            report["steps_per_layer"] = list(result.record.steps_per_layer)
        else:
            print(f"warning: calibration {report['status']} ({report['reason']}); {out} keeps the published "
                  f"solver ({spec.solver.method}); run `knet calibrate {out} --write` to calibrate later",
                  file=sys.stderr)
        if result.tiers:
            spec = spec.model_copy(update={"accuracy_tiers": tuple(result.tiers)})
        atomic_write(out / CIRCUIT_FILE, circuit_bytes(spec))
    if tolerances and not spec.accuracy_tiers:
        missing = tiers_report.get("missing") or {}
        why = tiers_report.get("reason") or "; ".join(f"{k} nats: {v}" for k, v in missing.items()) or "not run"
        print(f"warning: no verified accuracy tiers ({tiers_report['status']}: {why}); {out} answers with its "
              f"{spec.solver.method} solver and no error bound (accuracy_tier null); run `knet calibrate {out} "
              "--tiers --write` to verify tiers later", file=sys.stderr)
    print_json({"name": spec.name, "out": str(out), "sha256": content_hash(out), "device": spec.device,
                "device_class": spec.imported_from.device_class, "data_dim": spec.data_dim,
                "layers": len(spec.layers), "edges": spec.num_edges,
                "ignored_keys": list(spec.imported_from.ignored_keys), "calibration": report,
                "tiers": tiers_report})
    return 0


@dataclass
class BoundedCalibration:
    """What :func:`calibrate_bounded` got done in time. ``report`` / ``tiers_report``: ``status``
    (``calibrated``, ``timeout``, ``failed``; tiers also ``skipped``), ``seconds`` and, on failure,
    ``reason``; the tiers report lists the tolerances that got no tier (``missing``)."""

    record: object | None  # models.config.CalibrationRecord
    report: dict
    tiers: list = field(default_factory=list)  # models.config.AccuracyTier, most tolerant first
    tiers_report: dict = field(default_factory=lambda: {"status": "skipped"})


def calibrate_bounded(model, points: int, timeout_s: float, tolerances=()) -> BoundedCalibration:
    """Calibrate ``model``'s RK4 steps, then verify its accuracy tiers for ``tolerances`` (nats;
    none: no tiers), in a forked child killed when ``timeout_s`` (both together) runs out. The
    calibration is kept when only the tiers run out of time."""
    from models.config import AccuracyTier, CalibrationRecord

    ctx = multiprocessing.get_context("fork")  # the child inherits the model; nothing to pickle
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_calibrate_child, args=(model, points, tuple(tolerances), sender), daemon=True)
    started = time.perf_counter()
    child.start()
    sender.close()

    def next_message(what: str):
        left = timeout_s - (time.perf_counter() - started)
        try:
            if left > 0 and receiver.poll(left):
                return receiver.recv()
        except EOFError:  # the child died without a word (killed, out of memory)
            return "failed", f"calibration process exited with code {child.exitcode}"
        return "timeout", f"{what} not finished within {timeout_s:g} s with {points} points"

    def report(message, **extra) -> dict:
        status = "calibrated" if message[0] == "ok" else message[0]
        out = {"status": status, "seconds": round(time.perf_counter() - started, 1), **extra}
        return out if status == "calibrated" else {**out, "reason": message[1]}

    try:
        first = next_message("calibration")
        result = BoundedCalibration(
            CalibrationRecord.model_validate_json(first[1]) if first[0] == "ok" else None,
            report(first, **({"points": points} if first[0] == "ok" else {})))
        if first[0] == "ok" and tolerances:
            second = next_message("accuracy tiers")
            if second[0] == "ok":
                tiers, missing = second[1]
                result.tiers = [AccuracyTier.model_validate_json(t) for t in tiers]
                result.tiers_report = report(second, points=points, tolerances=[t.tolerance_nats for t in
                                                                               result.tiers], missing=missing)
            else:
                result.tiers_report = report(second)
        elif tolerances:
            result.tiers_report = {"status": "skipped", "reason": "needs the calibration, which did not finish"}
    finally:
        if child.is_alive():
            child.terminate()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    return result


def _calibrate_child(model, points: int, tolerances: tuple, sender) -> None:
    from tqdm import tqdm

    from models import calibration
    from models.accuracy import calibrate_tiers
    from models.data import TASKS

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
        if tolerances:
            bar.reset(total=len(tolerances) + 1)
            bar.set_description("accuracy tiers")

            def tier_progress(line: str) -> None:
                if line.endswith("searching steps"):  # the reference, or the tier before, is done
                    bar.update(1)
                bar.set_postfix_str(line)

            tiers, missing = calibrate_tiers(model, TASKS.get(model.spec.name), tolerances, points=points,
                                             progress=tier_progress)
            bar.update(1)
            sender.send(("ok", ([t.model_dump_json() for t in tiers], {f"{k:g}": v for k, v in missing.items()})))
    except Exception as err:  # reported to the parent as data; the checkpoint stays usable
        sender.send(("failed", str(err)))
    finally:
        bar.close()
        sender.close()
