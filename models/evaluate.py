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
            vals = []
            for start in range(0, n, EVAL_CHUNK):
                res = model.sample(min(EVAL_CHUNK, n - start), gen, cfg)
                nfe, status = nfe + res.stats.nfe, max(status, res.stats.status)
                vals.append((res.logp.double() + task.energy(res.x.double())).cpu())
            v = torch.cat(vals)
            log_z = float(torch.logsumexp(-v, 0) - math.log(n))
            out = {"task": task.name, "n": n, "elbo": float(v.mean()),
                   "elbo_se": float(v.std() / math.sqrt(n)), "log_z": log_z}
    out.update({"solver": cfg.model_dump(mode="json"), "nfe": nfe, "status": status.name.lower(),
                "dtype": str(model.dtype).removeprefix("torch."), "seed": seed})
    return out
