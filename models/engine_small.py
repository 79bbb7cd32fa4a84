"""The engine's small-batch CPU path: the same RK4 in NumPy.

At a batch of a few rows the solve is nothing but dispatch overhead: ~20 tiny kernels per
RK4 step, each ~3 µs through torch's dispatcher against well under 1 µs as a NumPy call
(docs/engine.md, "small batches"). So for ``tanh`` circuits on the CPU and batches up
to ``SMALL_BATCH_MAX`` rows (dense form, whatever the node count up to ``SMALL_MAX_NODES``) the engine runs this loop instead, in the model's dtype.

State layout as in :mod:`models.engine` (row 0 held at 1 carries the biases): ``S (N+2, batch)`` = [1; v_1..v_N; ℓ]. One evaluation is
``y = tanh(Wz·S)``, ``X = [y; y²; 1]``, ``dS/dt = W·X`` — four NumPy calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .engine import FastLayer
from .solvers import Budget, BudgetExceeded, Status

SMALL_BATCH_MAX = 16  # rows; above ~32 torch's vectorised kernels win (docs/engine.md)


@dataclass(frozen=True)
class SmallLayer:
    """``Wz (E, N+2)`` (column 0 holds the bias c) and ``W (N+2, 2E+1)`` for X = [y; y²; 1]."""

    Wz: np.ndarray
    W: np.ndarray
    n_edges: int


SMALL_MAX_NODES = 128  # the dense matrices are (E, N+2); beyond this, leave it to torch


def supports(model) -> bool:
    """tanh devices (the logistic trick is undone here) and at most ``SMALL_MAX_NODES`` nodes."""
    return model.layers[0].family.activation == "tanh" and model.data_dim <= SMALL_MAX_NODES


def small_layer(L: FastLayer, dtype=np.float32) -> SmallLayer:
    if L.form != "dense" or not L.tanh_trick:
        raise ValueError("the small-batch path needs dense tanh layers")
    """Undo the engine's logistic scaling (tanh(z) = 2σ(2z) − 1) into plain tanh weights,
    in ``dtype`` (the model's precision: NumPy's float32 tanh is ~3× faster than float64)."""
    e = L.n_edges
    Wz = L.Wz.detach().double().cpu().numpy() / 2.0  # column 0 holds the bias
    Wo = L.Wo.detach().double().cpu().numpy()
    n2 = Wo.shape[0]
    W = np.zeros((n2, 2 * e + 1))
    W[:, :e] = Wo[:, :e] / 2.0  # sign·K
    w = Wo[n2 - 1, e:2 * e] / 4.0  # divergence weights
    W[n2 - 1, e:2 * e] = -w  # div = Σ w (1 − y²)
    W[n2 - 1, 2 * e] = w.sum()
    return SmallLayer(np.ascontiguousarray(Wz, dtype=dtype), np.ascontiguousarray(W, dtype=dtype), e)


def rk4_layer(L: SmallLayer, S: np.ndarray, duration: float, n_steps: int, budget: Budget) -> np.ndarray:
    """``n_steps`` RK4 steps of one layer; returns the new state, ``(N+2, batch)`` or, for
    one row, ``(N+2,)`` (matrix–vector products are cheaper calls than 1-column GEMMs)."""
    e = L.n_edges
    h = duration / n_steps
    X = np.ones((2 * e + 1,) + S.shape[1:], dtype=S.dtype)
    y, y2 = X[:e], X[e:2 * e]
    K = np.empty((4,) + S.shape, dtype=S.dtype)
    K_flat = K.reshape(4, -1)
    tmp = np.empty_like(S)
    acc = np.empty_like(S)
    acc_flat = acc.reshape(-1)
    Wz, W = L.Wz, L.W
    dot, tanh, mul, add = np.dot, np.tanh, np.multiply, np.add
    weights = np.array([h / 6, h / 3, h / 3, h / 6], dtype=S.dtype)

    def f(state: np.ndarray, out: np.ndarray) -> None:
        dot(Wz, state, out=y)
        tanh(y, out=y)
        mul(y, y, out=y2)
        dot(W, X, out=out)

    for _ in range(n_steps):
        budget.take_step()
        f(S, K[0])
        add(S, mul(K[0], 0.5 * h, out=tmp), out=tmp)
        f(tmp, K[1])
        add(S, mul(K[1], 0.5 * h, out=tmp), out=tmp)
        f(tmp, K[2])
        add(S, mul(K[2], h, out=tmp), out=tmp)
        f(tmp, K[3])
        dot(weights, K_flat, out=acc_flat)
        add(S, acc, out=S)
        budget.nfe += 4
    return S


_blas_threads: int | None = None


def _match_blas_threads() -> None:
    """NumPy's OpenBLAS starts one thread per CPU; on a shared 2-vCPU box its small GEMMs
    then run ~25× slower than single-threaded. Keep it at torch's intra-op thread count
    (the process's configured parallelism, ``knet.settings``)."""
    global _blas_threads
    want = torch.get_num_threads()
    if _blas_threads == want:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return
    threadpool_limits(limits=want, user_api="blas")
    _blas_threads = want


def integrate(layers: list[SmallLayer], durations: list[float], steps: list[int], v: np.ndarray,
              reverse: bool, budget: Budget) -> tuple[np.ndarray, np.ndarray, Status, str]:
    """Solve all layers from ``v (batch, N)`` (in the layers' dtype); returns (v_end, ℓ, status, message)."""
    _match_blas_threads()
    n = v.shape[1]
    S = np.zeros((n + 2, v.shape[0]), dtype=v.dtype)
    S[0] = 1.0
    S[1:n + 1] = v.T
    order = range(len(layers) - 1, -1, -1) if reverse else range(len(layers))
    status, message = Status.SUCCESS, ""
    try:
        for k in order:
            S = rk4_layer(layers[k], S, durations[k], steps[k], budget)
            if not np.isfinite(S).all():
                raise BudgetExceeded(Status.NONFINITE, f"non-finite voltages after layer {k}")
    except BudgetExceeded as exc:
        status, message = exc.status, str(exc)
    return S[1:n + 1].T, S[n + 1], status, message
