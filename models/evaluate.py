"""Evaluation: test NLL for generation models, ELBO and log-normaliser for energies."""
from __future__ import annotations

import math

import torch

from .config import SolverConfig
from .data import Task
from .flow import KirchhoffNet
from .solvers import Status

EVAL_CHUNK = 2048  # rows per solve: keeps (chunk, edges) intermediates small on big circuits


def evaluate(model: KirchhoffNet, task: Task, n: int = 8192, seed: int = 20_240_101,
             solver: SolverConfig | None = None) -> dict:
    """Evaluate ``model`` on ``task`` with ``n`` fresh points (or samples).

    Generation: ``nll`` = −mean log q(x) over fresh data (nats) and ``nll_se``, its standard
    error. Density matching: ``elbo`` = E[log q(x) + U(x)] over model samples and ``log_z``,
    the importance-sampled log-normaliser log mean exp(−U − log q). Both report the solver,
    total NFE and the worst status.
    """
    cfg = solver or model.spec.solver
    nfe, status = 0, Status.SUCCESS
    with torch.no_grad():
        if task.kind == "data":
            x = task.sample(n, seed, split="test")
            parts = []
            for chunk in x.split(EVAL_CHUNK):
                res = model.log_prob(chunk, cfg)
                nfe, status = nfe + res.stats.nfe, max(status, res.stats.status)
                parts.append(res.logp.double().cpu())
            lp = torch.cat(parts)
            out = {"task": task.name, "n": n, "nll": float(-lp.mean()),
                   "nll_se": float(lp.std() / math.sqrt(n))}
        else:
            gen = torch.Generator().manual_seed(seed)
            vals, inside = [], []
            for start in range(0, n, EVAL_CHUNK):
                res = model.sample(min(EVAL_CHUNK, n - start), gen, cfg)
                nfe, status = nfe + res.stats.nfe, max(status, res.stats.status)
                vals.append((res.logp.double() + task.energy(res.x.double())).cpu())
                if task.box_half_width is not None:
                    inside.append((res.x.abs() <= task.box_half_width).all(dim=1).cpu())
            v = torch.cat(vals)
            log_z = float(torch.logsumexp(-v, 0) - math.log(n))
            out = {"task": task.name, "n": n, "elbo": float(v.mean()),
                   "elbo_se": float(v.std() / math.sqrt(n)), "log_z": log_z}
            if task.box_half_width is not None:
                out["box"] = box_kl(task, torch.cat(inside), v)
    out.update({"solver": cfg.model_dump(mode="json"), "nfe": nfe, "status": status.name.lower(),
                "dtype": str(model.dtype).removeprefix("torch."), "seed": seed})
    return out


BOX_GRID = 4001  # points per axis of the box integral (midpoint rule; exact to ~1e-7 for potential2)


def box_log_normaliser(task: Task, grid: int = BOX_GRID) -> float:
    """log Z_box = log ∫ over [−b, b]² of exp(−U) (2-D energies), by the midpoint rule on ``grid``²
    cells, in float64."""
    if task.dim != 2 or task.box_half_width is None:
        raise ValueError(f"task {task.name!r} has no 2-D box")
    b = task.box_half_width
    h = 2 * b / grid
    axis = torch.linspace(-b + h / 2, b - h / 2, grid, dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for row in axis.split(256):  # rows of the grid at a time: (256·grid, 2) points
        pts = torch.cartesian_prod(row, axis)
        total = total + torch.exp(-task.energy(pts)).sum()
    return float(torch.log(total * h * h))


def box_kl(task: Task, inside: torch.Tensor, log_ratio: torch.Tensor) -> dict:
    """A defined score for an energy that does not normalise, from model samples x ~ q:
    ``kl``, KL(q restricted to the box ‖ exp(−U)/Z_box), nats, with its standard error, and
    ``mass_outside``, 1 − q(box). ``inside (n,)`` says which samples lie in the box,
    ``log_ratio (n,)`` is log q(x) + U(x) per sample.

    KL = E_q[1_box (log q + U)] / q(box) − log q(box) + log Z_box (importance-free: q is sampled).
    """
    n = inside.numel()
    mass = float(inside.double().mean())
    log_z_box = box_log_normaliser(task)
    if mass == 0:
        return {"half_width": task.box_half_width, "log_z_box": log_z_box, "kl": None, "kl_se": None,
                "mass_outside": 1.0}
    terms = log_ratio[inside]
    kl = float(terms.mean()) - math.log(mass) + log_z_box
    return {"half_width": task.box_half_width, "log_z_box": log_z_box, "kl": kl,
            "kl_se": float(terms.std() / math.sqrt(max(terms.numel(), 1))), "mass_outside": 1.0 - mass,
            "mass_outside_se": math.sqrt(mass * (1 - mass) / n)}

