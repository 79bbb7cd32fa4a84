"""Bounded ODE solvers for autonomous vector fields with an optional divergence channel.

A *field* maps ``v (batch, nodes) -> (dv/dt (batch, nodes), div (batch,) | None)``.
The augmented state is ``(v, ell)`` with ``d ell/dt = div``; ``ell`` is ``(batch,)``.

Failure is data: every call returns :class:`SolveStats` with a :class:`Status`; budgets
(steps, wall-clock seconds) are enforced inside the solve, so no call can hang.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from torch import Tensor

from .config import SolverConfig

Field = Callable[[Tensor], tuple[Tensor, Tensor | None]]


class Status(IntEnum):
    """Outcome of a solve; the service maps these to HTTP answers in one place."""

    SUCCESS = 0
    MAX_STEPS = 1  # step budget exhausted before the end time
    TIMEOUT = 2  # wall-clock budget exhausted
    NONFINITE = 3  # NaN or Inf in the state
    SOLVER_ERROR = 4  # step-size underflow or another solver failure


@dataclass
class SolveStats:
    """Bookkeeping of one solve (summed over layers)."""

    status: Status = Status.SUCCESS
    nfe: int = 0
    steps: int = 0
    wall_s: float = 0.0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS


class BudgetExceeded(Exception):
    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Budget:
    """Steps and wall-clock allowance shared by all layers of one solve."""

    max_steps: int
    max_wall_s: float
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    nfe: int = 0

    def take_step(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise self.exceeded(Status.MAX_STEPS)
        self.check_time()

    def check_time(self) -> None:
        if time.perf_counter() - self.started > self.max_wall_s:
            raise self.exceeded(Status.TIMEOUT)

    def exceeded(self, status: Status) -> BudgetExceeded:
        """The error of this budget running out of steps (MAX_STEPS) or time (TIMEOUT); a solver that
        charges steps elsewhere (the compiled path counts them in C) reports through it too."""
        if status == Status.MAX_STEPS:
            return BudgetExceeded(status, f"step budget of {self.max_steps} steps exhausted")
        return BudgetExceeded(status, f"wall-clock budget of {self.max_wall_s:g} s exhausted")

    @property
    def wall_left_s(self) -> float:
        """Seconds of the wall-clock allowance left (negative once it is spent)."""
        return self.max_wall_s - (time.perf_counter() - self.started)

    @property
    def steps_left(self) -> int:
        return max(self.max_steps - self.steps, 1)


_TABLEAUS = {  # fixed-step explicit Runge–Kutta: (stage nodes' weights a, output weights b)
    "euler": ([], [1.0]),
    "midpoint": ([[0.5]], [0.0, 1.0]),
    "rk4": ([[0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6]),
}


def fixed_step(fn: Field, v: Tensor, ell: Tensor | None, duration: float, n_steps: int,
               method: str, budget: Budget) -> tuple[Tensor, Tensor | None]:
    """Integrate ``n_steps`` equal steps of ``method`` over ``duration`` (model time)."""
    stages, weights = _TABLEAUS[method]
    dt = duration / n_steps
    for _ in range(n_steps):
        budget.take_step()
        kv, kl = [], []
        for s in range(len(weights)):
            vs = v
            if s > 0:
                for j, a in enumerate(stages[s - 1]):
                    if a:
                        vs = vs + (a * dt) * kv[j]
            dv, dl = fn(vs)
            budget.nfe += 1
            kv.append(dv)
            kl.append(dl)
        for wgt, dv, dl in zip(weights, kv, kl):
            if wgt:
                v = v + (wgt * dt) * dv
                if ell is not None:
                    ell = ell + (wgt * dt) * dl
    return v, ell


def adaptive(fn: Field, v: Tensor, ell: Tensor | None, duration: float, cfg: SolverConfig,
             budget: Budget) -> tuple[Tensor, Tensor | None]:
    """Integrate over ``duration`` with a torchdiffeq adaptive method, bounded by ``budget``."""
    from torchdiffeq import odeint

    def counted(_t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        budget.nfe += 1
        budget.check_time()
        dv, dl = fn(state[0])
        return (dv,) if ell is None else (dv, dl)

    t = torch.tensor([0.0, duration], dtype=v.dtype, device=v.device)
    y0 = (v,) if ell is None else (v, ell)
    nfe_before = budget.nfe
    try:
        out = odeint(counted, y0, t, method=cfg.method, rtol=cfg.rtol, atol=cfg.atol,
                     options=dict(max_num_steps=budget.steps_left))
    except AssertionError as err:
        if "max_num_steps" in str(err):
            raise BudgetExceeded(Status.MAX_STEPS, f"step budget of {budget.max_steps} steps exhausted") from err
        raise BudgetExceeded(Status.SOLVER_ERROR, f"solver failed: {err}") from err
    # torchdiffeq hides its accepted-step count; approximate from evaluations per step
    per_step = {"dopri5": 6, "dopri8": 12, "bosh3": 3, "adaptive_heun": 2, "fehlberg2": 3}[cfg.method]
    budget.steps += max(1, (budget.nfe - nfe_before) // per_step)
    return out[0][-1], (None if ell is None else out[1][-1])
