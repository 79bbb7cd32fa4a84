"""Offline subcommands: sample, logprob, eval, train, import-circuit."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

from models.errors import UserInputError

from .common import add_model_arg, add_solver_args, finite_list, load, print_json, solver_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="draw samples (and log q) from a model; prints JSON")
    add_model_arg(p)
    p.add_argument("-n", type=int, default=8, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-logprob", action="store_true", help="skip the log-density channel")
    add_solver_args(p)
    _add_runtime_arg(p)
    _add_accuracy_arg(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("logprob", help="log-density of points; prints JSON")
    add_model_arg(p)
    p.add_argument("--points", required=True, help="JSON file with a list of points, or - for stdin")
    add_solver_args(p)
    _add_runtime_arg(p)
    _add_accuracy_arg(p)
    p.set_defaults(func=cmd_logprob)

    p = sub.add_parser("eval", help="evaluate a model on its task; prints JSON")
    add_model_arg(p)
    p.add_argument("-n", type=int, default=8192, help="fresh test points / samples")
    p.add_argument("--seed", type=int, default=20_240_101)
    p.add_argument("--write", action="store_true", help="also write eval.json into the checkpoint")
    add_solver_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a model from a YAML config (resumable)")
    p.add_argument("config", help="training config (YAML)")
    p.add_argument("--out", help="checkpoint directory (default: runs/<name>)")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument("--iterations", type=int, help="override the config's iteration count")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation and pictures at the end")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("import-circuit", help="turn a circuit JSON file into a checkpoint")
    p.add_argument("file", help="circuit JSON (see README, 'Importing circuits')")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.set_defaults(func=cmd_import)


def _add_accuracy_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tolerance", type=float, metavar="NATS",
                   help="largest acceptable log p error: the fewest-step verified accuracy tier within it "
                        "(default: the 1e-3 tier, else the most accurate one, when the model has tiers and no "
                        "solver flag is given)")


def _add_runtime_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=["engine", "onnxruntime"], default="engine",
                   help="onnxruntime: run the model's ONNX graph (RK4, float32, CPU), equal to the engine within "
                        "1e-5; the service picks per batch size by measurement (default: engine)")


def _tier_and_solver(model, args: argparse.Namespace):
    """``(tier or None, solver)``: the tier ``--tolerance`` picks, or the default tier when the
    model has tiers and no solver flag is given, else the solver the flags say."""
    from models.accuracy import choose_tier, tier_solver
    solver = solver_from_args(model, args)
    flags = any(getattr(args, k) is not None for k in ("method", "steps", "rtol", "atol"))
    if args.tolerance is not None and not args.tolerance > 0:
        raise UserInputError("--tolerance must be > 0 (nats)")
    if args.tolerance is None and flags:
        return None, solver
    try:
        tier = choose_tier(model.spec.accuracy_tiers, args.tolerance)
    except ValueError as err:
        raise UserInputError(f"--tolerance: {err}") from None
    return tier, solver if tier is None else tier_solver(solver, tier)


def _solve(model, args: argparse.Namespace, direction: str, x: torch.Tensor, with_logprob: bool = True):
    """The flow result for ``x`` (latents for sample, points for logprob) on the chosen runtime
    and accuracy tier, and its ``error_bound`` / ``in_verified_region``."""
    from models.accuracy import answer_accuracy
    tier, solver = _tier_and_solver(model, args)
    accuracy = answer_accuracy(tier, with_logprob, **({"latents": x} if direction == "sample" else {"points": x}))
    return _run(model, args, direction, x, solver, with_logprob), accuracy


def _run(model, args: argparse.Namespace, direction: str, x: torch.Tensor, solver, with_logprob: bool):
    from models.flow import FlowResult
    if args.runtime == "onnxruntime":
        if solver.method != "rk4" or model.dtype != torch.float32 or model.device.type != "cpu":
            raise UserInputError("--runtime onnxruntime runs the RK4 graph in float32 on the CPU: "
                                 "use --method rk4, --dtype float32 and the CPU")
        from export.ort_runtime import OrtRuntime
        out, logp, stats = OrtRuntime.for_solver(model, solver).run(direction, x, solver)
        return FlowResult(out, logp if with_logprob else None, stats)
    with torch.no_grad():
        if direction == "sample":
            return model.sample(len(x), solver=solver, with_logprob=with_logprob, z=x)
        return model.log_prob(x, solver)


def _path(stats) -> str:
    """Which code solved: an engine path (models.engine_state.EngineStats), ``onnxruntime``, or
    ``generic`` (the tableau loop or an adaptive solver)."""
    return getattr(stats, "path", "") or "generic"


def cmd_sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserInputError("-n must be >= 1")
    model = load(args)
    # the latents as model.sample draws them from the seed, whichever runtime solves
    z = torch.randn(args.n, model.data_dim, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    res, accuracy = _solve(model, args, "sample", z, with_logprob=not args.no_logprob)
    out = {"samples": finite_list(res.x), "logprob": None if res.logp is None else finite_list(res.logp),
           "status": res.stats.status.name.lower(), "nfe": res.stats.nfe, "path": _path(res.stats), **accuracy}
    print_json(out)
    return 0 if res.stats.ok else 1


def read_points(source: str, dim: int) -> torch.Tensor:
    """A JSON list of points from a file or stdin → ``(n, dim)`` float64 tensor; ValueError if malformed."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"points: not valid JSON ({err})") from None
    if isinstance(data, dict) and "points" in data:
        data = data["points"]
    if not isinstance(data, list) or not data:
        raise UserInputError("points: expected a non-empty JSON list of points")
    for i, p in enumerate(data):
        if not isinstance(p, list) or len(p) != dim:
            raise UserInputError(f"points[{i}]: expected a list of {dim} numbers")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in p):
            raise UserInputError(f"points[{i}]: every coordinate must be a number")
    t = torch.tensor(data, dtype=torch.float64)
    bad = (~torch.isfinite(t)).any(dim=1).nonzero()
    if len(bad):
        raise UserInputError(f"points[{int(bad[0])}]: coordinates must be finite")
    return t


def cmd_logprob(args: argparse.Namespace) -> int:
    model = load(args)
    if not model.spec.bijective:
        raise UserInputError(f"model {model.spec.name!r} changes node counts between layers, so it has no "
                             "log-density; `knet sample` still works")
    x = read_points(args.points, model.data_dim)
    res, accuracy = _solve(model, args, "logprob", x)
    print_json({"logprob": finite_list(res.logp), "status": res.stats.status.name.lower(), "nfe": res.stats.nfe,
                "path": _path(res.stats), **accuracy})
    return 0 if res.stats.ok else 1


TRAINING_KEYS = ("train_seconds", "iterations")  # written by `knet train` into eval.json


def cmd_eval(args: argparse.Namespace) -> int:
    from models.checkpoint import EVAL_FILE, atomic_write
    from models.data import get_task
    from models.evaluate import evaluate
    from models.zoo import resolve, task_name
    model = load(args)
    task = get_task(task_name(resolve(args.model), model.spec.name))
    result = evaluate(model, task, args.n, args.seed, solver_from_args(model, args))
    if args.write:
        path = resolve(args.model) / EVAL_FILE
        # the training record (train_seconds, iterations) is not re-measured here: keep it
        kept = {k: v for k, v in (json.loads(path.read_text()) if path.is_file() else {}).items()
                if k in TRAINING_KEYS}
        atomic_write(path, (json.dumps({**result, **kept}, indent=1) + "\n").encode())
    print_json(result)
    return 0


def load_train_config(path: str):
    from pydantic import ValidationError

    from models.config import TrainConfig
    try:
        raw = yaml.safe_load(Path(path).read_text())
        if isinstance(raw, dict) and isinstance(raw.get("cell"), str):
            # a characterized cell's law by file (`knet cells characterize` writes it), relative to the config
            law_path = Path(path).parent / raw["cell"]
            try:
                raw["cell"] = json.loads(law_path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise UserInputError(f"{path}: cell: cannot read the cell law {law_path}: {err}") from None
        return TrainConfig(**raw)
    except yaml.YAMLError as err:
        raise UserInputError(f"{path}: not valid YAML ({err})") from None
    except ValidationError as err:
        e = err.errors()[0]
        loc, msg = ".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, ")
        raise UserInputError(f"{path}: {loc}: {msg}" if loc else f"{path}: {msg}") from None
    except TypeError:
        raise UserInputError(f"{path}: expected a mapping of training settings") from None


def cmd_train(args: argparse.Namespace) -> int:
    import shutil

    import torch.distributed as dist

    from models.checkpoint import EVAL_FILE, atomic_write
    from models.data import get_task
    from models.evaluate import evaluate
    from models.train import train

    from .plots import loss_curve, samples_figure

    cfg = load_train_config(args.config)
    if args.iterations:
        cfg = cfg.model_copy(update={"iterations": args.iterations})
    out = Path(args.out or Path("runs") / cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    distributed = dist.is_torchelastic_launched()
    model, history = train(cfg, out, resume=not args.no_resume, distributed=distributed)
    if distributed and dist.get_rank() != 0:
        return 0
    if Path(args.config).resolve() != (out / "config.yaml").resolve():
        shutil.copyfile(args.config, out / "config.yaml")
    loss_curve(history.loss, out / "loss.png", cfg.name)
    if not args.no_eval:
        task = get_task(cfg.task)
        result = evaluate(model, task, cfg.eval_samples)
        result.update(zip(TRAINING_KEYS, (round(history.seconds, 1), cfg.iterations)))
        atomic_write(out / EVAL_FILE, (json.dumps(result, indent=1) + "\n").encode())
        samples_figure(model, task, out / "samples.png")
        print_json(result)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from models.checkpoint import circuit_from_json, save_model
    model = circuit_from_json(args.file, torch.float64)
    digest = save_model(model, args.out)
    print_json({"name": model.spec.name, "out": str(args.out), "sha256": digest,
                "layers": len(model.spec.layers), "edges": model.spec.num_edges})
    return 0
