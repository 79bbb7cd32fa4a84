"""Helpers shared by the ``knet`` subcommands: model loading, solver flags, JSON output."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from models.checkpoint import load_model
from models.config import SolverConfig
from models.errors import UserInputError
from models.flow import KirchhoffNet
from models.zoo import resolve

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name (twomoon, …) or checkpoint directory")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def add_solver_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("solver (default: the model's serving settings)")
    g.add_argument("--method", help="rk4, euler, midpoint, dopri5, bosh3, …")
    g.add_argument("--steps", type=int, help="fixed steps per layer")
    g.add_argument("--rtol", type=float)
    g.add_argument("--atol", type=float)
    g.add_argument("--max-steps", type=int)
    g.add_argument("--max-wall-s", type=float)


def solver_from_args(model: KirchhoffNet, args: argparse.Namespace) -> SolverConfig:
    """The model's serving solver with any flags given on the command line applied."""
    base = model.spec.solver.model_dump()
    overrides = {"method": args.method, "steps_per_layer": args.steps, "rtol": args.rtol,
                 "atol": args.atol, "max_steps": args.max_steps, "max_wall_s": args.max_wall_s}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return SolverConfig(**base)


def load(args: argparse.Namespace) -> KirchhoffNet:
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("CUDA requested but torch sees no GPU")
    return load_model(resolve(args.model), DTYPES[args.dtype], device)


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")


def finite_list(t: torch.Tensor) -> list:
    """Tensor → nested list of Python floats; NaN/Inf become None so the JSON stays valid."""
    return _none_nan(t.detach().double().cpu().tolist())


def _none_nan(x):
    if isinstance(x, list):
        return [_none_nan(y) for y in x]
    return x if x == x and abs(x) != float("inf") else None
