"""The engine's small-batch CPU path: the same RK4 in NumPy.

At a batch of a few rows the solve is nothing but dispatch overhead: ~20 tiny kernels per
RK4 step, each ~3 µs through torch's dispatcher against well under 1 µs as a NumPy call
(docs/engine.md, "small batches"). So on the CPU, for batches up to ``SMALL_BATCH_MAX``
rows and circuits up to ``SMALL_MAX_NODES`` nodes (any device family), the engine runs
this loop instead, in the model's dtype.

Each layer is built directly from the circuit's dense operator with the activation's
*direct* form from the device table (``models.devices``; NumPy's tanh is as fast as its
alternatives) by the same weight folding as the torch dense form
(:func:`models.engine_layers.dense_weights`), on the state layout of
``models.engine_state``. One evaluation is ``y = act(Wz·S)``, ``g = feature(y)``,
``dS/dt = W·[y; g; 1]``: four NumPy calls for tanh (y², slope 1 − y² folded into W).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .circuit import LayerOperator
from .devices import FusedForm
from .engine_layers import dense_weights
from .solvers import Budget

SMALL_BATCH_MAX = 16  # rows; above ~32 torch's vectorised kernels win (docs/engine.md)
SMALL_MAX_NODES = 128  # the dense matrices are (E, N+2); beyond this, leave it to torch


@dataclass(frozen=True)
class SmallLayer:
    """``Wz (E, N+2)`` and ``W (N+2, 2E+1)`` (see ``dense_weights``) as NumPy arrays, with
    the form's NumPy kernel and feature."""

    Wz: np.ndarray
    W: np.ndarray
    n_edges: int
    kernel: Callable
    feature: Callable | None

    @classmethod
    def from_operator(cls, op: LayerOperator, fused: FusedForm, reverse: bool, dtype=np.float32) -> SmallLayer:
        """From a dense operator, in ``dtype`` (the model's precision: NumPy's float32 tanh
        is ~3× faster than float64)."""
        Wz, W = dense_weights(op, fused, -1.0 if reverse else 1.0)
        as_np = lambda t: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)  # noqa: E731
        return cls(as_np(Wz), as_np(W), op.c.shape[0], *fused.numpy_ops())


def supports(model) -> bool:
    """At most ``SMALL_MAX_NODES`` nodes (the dense matrices grow as nodes × edges)."""
    return model.data_dim <= SMALL_MAX_NODES


def rk4_layer(L: SmallLayer, S: np.ndarray, duration: float, n_steps: int, budget: Budget) -> None:
    """Advance ``S (N+2, batch)`` in place by ``n_steps`` RK4 steps over ``duration``."""
    e = L.n_edges
    h = duration / n_steps
    X = np.zeros((2 * e + 1,) + S.shape[1:], dtype=S.dtype)  # [y; g; 1]; g stays 0 without a feature
    X[2 * e] = 1.0
    y, g = X[:e], X[e:2 * e]
    K = np.empty((4,) + S.shape, dtype=S.dtype)
    K_flat = K.reshape(4, -1)
    tmp = np.empty_like(S)
    acc = np.empty_like(S)
    acc_flat = acc.reshape(-1)
    Wz, W, kernel, feature = L.Wz, L.W, L.kernel, L.feature
    dot, mul, add = np.dot, np.multiply, np.add
    weights = np.array([h / 6, h / 3, h / 3, h / 6], dtype=S.dtype)

    if feature is None:
        def f(state: np.ndarray, out: np.ndarray) -> None:
            dot(Wz, state, out=y)
            kernel(y, y)
            dot(W, X, out=out)
    else:
        def f(state: np.ndarray, out: np.ndarray) -> None:
            dot(Wz, state, out=y)
            kernel(y, y)
            feature(y, g)
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


_blas_threads: int | None = None


def match_blas_threads() -> None:
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
