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
                   help="keep the published solver (dopri5): no RK4 calibration and no accuracy tiers")
    p.add_argument("--calibration-points", type=int,
                   help="latents for calibration (default 512; 16 above 64 dimensions, where one "
                        "tight solve takes minutes)")
    p.add_argument("--calibration-timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                   help="wall-clock bound on calibration and the accuracy tiers together, seconds "
                        "(default %(default)s)")
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
    from models.accuracy import DEFAULT_TIER_NATS, default_tolerances
    from models.checkpoint import CIRCUIT_FILE, atomic_write, circuit_bytes, content_hash, save_model
    from models.data import TASKS
    from models.reference import read_folder

    from .common import print_json

    if args.calibration_points is not None and args.calibration_points < 1:
        raise UserInputError("--calibration-points must be >= 1")
    if not args.calibration_timeout_s > 0:
        raise UserInputError("--calibration-timeout-s must be > 0")
    if args.tiers and any(not t > 0 for t in args.tiers):
        raise UserInputError("--tiers: tolerances must be > 0 (nats)")
    if args.tiers and (args.no_tiers or args.no_calibrate):
        raise UserInputError(f"--tiers and {'--no-tiers' if args.no_tiers else '--no-calibrate'}: choose one")
    imported = read_folder(args.folder, args.name)
    spec = imported.spec
    tolerances = () if args.no_tiers or args.no_calibrate else tuple(args.tiers or default_tolerances(spec.data_dim))
    model = imported.model(torch.float64)
    out = Path(args.out)
    save_model(model, out)
    result = BoundedCalibration()
    if not args.no_calibrate:
        dtype = torch.float32 if args.dtype == "float32" else torch.float64
        points = args.calibration_points or (512 if spec.data_dim <= 64 else 16)
        # the tiers' diverse inputs depend on the task: the source's bench name, whatever --name says
        task = TASKS.get(spec.imported_from.test_bench or spec.name)
        result = calibrate_bounded(model.to(dtype), points, args.calibration_timeout_s, tolerances, task)
        if result.record is not None:
            spec = calibration.apply(spec, result.record)
            result.report["steps_per_layer"] = list(result.record.steps_per_layer)
        else:
            print(f"warning: calibration {result.report['status']} ({result.report['reason']}); {out} keeps the "
                  f"published solver ({spec.solver.method}); run `knet calibrate {out} --write` to calibrate later",
                  file=sys.stderr)
        spec = spec.model_copy(update={"accuracy_tiers": tuple(result.tiers)})
        atomic_write(out / CIRCUIT_FILE, circuit_bytes(spec))
    report = {"solver": spec.solver.method, **result.report}
    _warn_tiers(out, spec, tolerances, result.tiers_report, DEFAULT_TIER_NATS)
    print_json({"name": spec.name, "out": str(out), "sha256": content_hash(out), "device": spec.device,
                "device_class": spec.imported_from.device_class, "data_dim": spec.data_dim,
                "layers": len(spec.layers), "edges": spec.num_edges,
                "ignored_keys": list(spec.imported_from.ignored_keys), "calibration": report,
                "tiers": result.tiers_report})
    return 0


def _warn_tiers(out: Path, spec, tolerances, report: dict, default_nats: float) -> None:
    """The warnings an operator needs about the tiers: none verified (answers carry no bound), or
    some left out (timeout, unreachable), or no default tier (another one answers by default)."""
    from models.accuracy import choose_tier

    later = f"run `knet calibrate {out} --tiers --write` to verify them later"
    missing = report.get("missing") or {}
    why = "; ".join(filter(None, [report.get("reason"), *(f"{k} nats: {v}" for k, v in missing.items())]))
    if tolerances and not spec.accuracy_tiers:
        print(f"warning: no verified accuracy tiers ({report['status']}: {why or 'not run'}); {out} answers with "
              f"its {spec.solver.method} solver and no error bound (accuracy_tier null); {later}", file=sys.stderr)
        return
    if report.get("status") in ("timeout", "failed"):
        print(f"warning: accuracy tiers {report['status']} ({why}); kept the verified ones "
              f"({', '.join(f'{t.tolerance_nats:g}' for t in spec.accuracy_tiers)} nats); {later}", file=sys.stderr)
    default = choose_tier(spec.accuracy_tiers, None)  # the tier that answers requests naming no tolerance
    if default is not None and default.tolerance_nats != default_nats:
        print(f"warning: no {default_nats:g}-nats tier; requests without a tolerance get the most accurate one "
              f"({default.tolerance_nats:g} nats, verified to {default.max_error_logp:.3g})", file=sys.stderr)


@dataclass
class BoundedCalibration:
    """What :func:`calibrate_bounded` got done in time. ``report`` / ``tiers_report``: ``status``
    (``calibrated``, ``timeout``, ``failed``, ``skipped``; tiers also ``none``: searched, none
    reached), ``seconds`` of that phase and, where it did not finish, ``reason``; the tiers
    report lists the verified tolerances (``tolerances``) and those that got none (``missing``)."""

    record: object | None = None  # models.config.CalibrationRecord
    report: dict = field(default_factory=lambda: {"status": "skipped"})
    tiers: list = field(default_factory=list)  # models.config.AccuracyTier, most tolerant first
    tiers_report: dict = field(default_factory=lambda: {"status": "skipped"})


def calibrate_bounded(model, points: int, timeout_s: float, tolerances=(), task=None) -> BoundedCalibration:
    """Calibrate ``model``'s RK4 steps, then verify its accuracy tiers for ``tolerances`` (nats;
    none: no tiers) with the diverse inputs of ``task``, in a forked child killed when
    ``timeout_s`` (both together) runs out. The child reports each result as it comes (the
    calibration, then each tier), so what was done before the time ran out is kept."""
    from models.config import AccuracyTier, CalibrationRecord

    ctx = multiprocessing.get_context("fork")  # the child inherits the model; nothing to pickle
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_calibrate_child, args=(model, points, tuple(tolerances), task, sender),
                        daemon=True)
    started = time.perf_counter()
    child.start()
    sender.close()

    def next_message() -> tuple:
        left = timeout_s - (time.perf_counter() - started)
        try:
            if left > 0 and receiver.poll(left):
                return receiver.recv()
        except EOFError:  # the child died without a word (killed, out of memory)
            child.join(1)
            return "failed", f"calibration process exited with code {child.exitcode}"
        return "timeout", f"not finished within {timeout_s:g} s with {points} points"

    def seconds(since: float) -> float:
        return round(time.perf_counter() - since, 1)

    result = BoundedCalibration()
    try:
        kind, payload = next_message()
        if kind == "calibration":
            result.record = CalibrationRecord.model_validate_json(payload)
            result.report = {"status": "calibrated", "seconds": seconds(started), "points": points}
        else:
            result.report = {"status": kind, "seconds": seconds(started), "reason": payload}
        if kind in ("calibration", "failed") and tolerances:  # tiers do not need the calibration
            phase = time.perf_counter()
            while (message := next_message())[0] == "tier":
                result.tiers.append(AccuracyTier.model_validate_json(message[1]))
            kind, payload = message
            status = ("calibrated" if result.tiers else "none") if kind == "tiers" else kind
            result.tiers_report = {"status": status, "seconds": seconds(phase), "points": points,
                                   "tolerances": [t.tolerance_nats for t in result.tiers]}
            result.tiers_report.update({"missing": payload} if kind == "tiers" else {"reason": payload})
        elif tolerances:
            result.tiers_report = {"status": "skipped", "reason": "the time bound ran out during calibration"}
    finally:
        if child.is_alive():
            child.terminate()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    return result


def _calibrate_child(model, points: int, tolerances: tuple, task, sender) -> None:
    """Messages to the parent, in order: ``("calibration", record JSON)`` or ``("failed",
    reason)``; then per verified tier ``("tier", tier JSON)``; then ``("tiers", {tolerance:
    why none})`` or ``("failed", reason)``."""
    from tqdm import tqdm

    from models import calibration
    from models.accuracy import calibrate_tiers

    n_layers = len(model.spec.layers)
    bar = tqdm(total=n_layers, desc="calibrate: reference solve", unit="layer", file=sys.stderr)

    def progress(k: int, steps: int) -> None:
        if k == 0:  # a new search round starts over the layers
            bar.reset(total=n_layers)
            bar.set_description("calibrate: RK4 steps per layer")
        bar.set_postfix(layer=k, steps=steps)
        bar.update(1)

    def tier_progress(line: str) -> None:
        if line.endswith("searching steps"):  # the reference, or the tier before, is done
            bar.update(1)
        bar.set_postfix_str(line)

    try:
        try:
            sender.send(("calibration", calibration.calibrate(model, points=points, progress=progress)
                         .model_dump_json()))
        except Exception as err:  # reported to the parent as data; the checkpoint stays usable
            sender.send(("failed", str(err)))
        if tolerances:
            bar.reset(total=len(tolerances) + 1)
            bar.set_description("accuracy tiers")
            try:
                _, missing = calibrate_tiers(model, task, tolerances, points=points, progress=tier_progress,
                                             on_tier=lambda t: sender.send(("tier", t.model_dump_json())))
                bar.update(1)
                sender.send(("tiers", {f"{k:g}": v for k, v in missing.items()}))
            except Exception as err:
                sender.send(("failed", str(err)))
    finally:
        bar.close()
        sender.close()
