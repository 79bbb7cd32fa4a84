"""The engine's state layout and layer loop, written once for every engine path.

State ``S (N+2, batch)``, batch-last, for a layer of N nodes:

- row 0 (:data:`BIAS_ROW`) is held at 1, so biases ride on the weights of that row;
- rows 1..N are the node voltages (model volts);
- row N+1 is ℓ = ∫ tr(∂f/∂v) dt, the divergence integral (nats).

One RK4 update moves voltages and ℓ together. :func:`pack` and :func:`unpack` are the only
code that knows this layout; the torch paths (``models.engine``), the NumPy path
(``models.engine_small``), the CUDA graphs (``models.engine_cuda``) and the calibration
(``models.calibration``) all go through them. :func:`run_layers` is the one loop over
layers with the budget and non-finite checks, shared by every path.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from .solvers import Budget, BudgetExceeded, SolveStats, Status

BIAS_ROW = 0


@dataclass
class EngineStats(SolveStats):
    """:class:`~models.solvers.SolveStats` plus the path that solved: ``native-dense``, ``native-gather``,
    ``numpy-dense``, ``torch-dense``, ``torch-gather``, ``cuda-graph-dense`` or ``cuda-graph-gather``."""

    path: str = ""


def pack(v: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """``v (batch, N)`` → a fresh state ``S (N+2, batch)`` = [1; vᵀ; 0] of the same kind,
    dtype and device."""
    rows, n = v.shape
    shape = (state_rows(n), rows)
    S = np.zeros(shape, dtype=v.dtype) if isinstance(v, np.ndarray) else v.new_zeros(shape)
    S[BIAS_ROW] = 1.0
    S[voltage_rows(n)] = v.T
    return S


def unpack(S: Tensor | np.ndarray) -> tuple[Tensor | np.ndarray, Tensor | np.ndarray]:
    """``S (N+2, batch)`` → copies ``(v (batch, N), ℓ (batch,))``."""
    n = S.shape[0] - 2
    v, ell = S[voltage_rows(n)], S[divergence_row(n)]
    if isinstance(S, np.ndarray):
        return np.ascontiguousarray(v.T), ell.copy()
    return v.t().contiguous(), ell.clone()


def state_rows(n_nodes: int) -> int:
    """Rows of the state of an ``n_nodes``-node layer: bias, voltages, ℓ."""
    return n_nodes + 2


def voltage_rows(n_nodes: int) -> slice:
    """The rows of the node voltages."""
    return slice(1, n_nodes + 1)


def divergence_row(n_nodes: int) -> int:
    """The row of ℓ in the state of an ``n_nodes``-node layer."""
    return n_nodes + 1


def layer_order(n_layers: int, reverse: bool) -> range:
    """Layers in solve order: last to first when integrating data → latent."""
    return range(n_layers - 1, -1, -1) if reverse else range(n_layers)


def run_layers(order: Iterable[int], advance: Callable[[int], None], finite: Callable[[], bool],
               budget: Budget) -> tuple[Status, str]:
    """Advance layer by layer; returns ``(status, message)`` and never raises a budget error.

    ``advance(k)`` runs layer k's steps (charging ``budget``, and may raise
    :class:`BudgetExceeded` mid-layer); after every layer the state must be ``finite()``
    and the wall clock within ``budget`` (this is where a path that cannot check inside a
    layer, such as a CUDA graph replay, honours ``max_wall_s``). On failure the state
    stays where the failing layer left it.
    """
    try:
        for k in order:
            advance(k)
            if not finite():
                raise nonfinite(k)
            budget.check_time()
    except BudgetExceeded as exc:
        return exc.status, str(exc)
    return Status.SUCCESS, ""


def nonfinite(k: int) -> BudgetExceeded:
    """The failure of a state that is not finite after layer ``k``."""
    return BudgetExceeded(Status.NONFINITE, f"non-finite voltages after layer {k}")


def charge_steps(budget: Budget, n_steps: int) -> None:
    """Charge ``n_steps`` RK4 steps (4 evaluations each) at once, for a layer that runs
    without per-step checks; MAX_STEPS if that exceeds the budget."""
    if budget.steps + n_steps > budget.max_steps:
        budget.steps = budget.max_steps + 1
        raise BudgetExceeded(Status.MAX_STEPS, f"step budget of {budget.max_steps} steps exhausted")
    budget.steps += n_steps
    budget.nfe += 4 * n_steps
