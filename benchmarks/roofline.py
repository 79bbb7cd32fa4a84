"""How far a solve is from the machine's limit: nominal FLOPs of a fixed-step RK4 solve, one core's
float32 peak, the activation's throughput, and the bound they set together (``knet bench``'s
GFLOP/s and "of bound" columns, docs/engine.md "How far from the machine's limit").

FLOPs are counted from the circuit, not from the path that ran (the dense, gather and NumPy
paths do the same arithmetic differently), per row and field evaluation:

- per device (edge): a·v_src + b·v_dst + c (4), the activation (counted as 1, though a tanh
  costs more), the two scattered currents (2), and for the log-density the activation's slope
  times the device weight, accumulated (3): 10;
- per node: RK4's stage combination (8: four scaled adds, amortised per evaluation).

So a layer of E devices and N nodes, solved with s steps (4 evaluations each) on B rows, costs
4·s·B·(10·E + 8·N). Three rates of one core, measured here in CPU time (steady on a shared box):

- :func:`fma_peak_gflops`: a register-resident stream of independent fused multiply-adds in the
  compiled path's own vector width (models._rk4.fma_loop): the core's float32 peak;
- :func:`activation_rate`: activations per second of the fastest tanh at hand on an L1/L2-resident
  array: the compiled path's own (models._rk4.activate), torch's and, where installed, XLA's;
- :func:`peak_gflops`: torch's 1024³ GEMM, the attainable rate of dense linear algebra (the
  column's reference before the FMA microbenchmark; kept for comparison).

:func:`bound_s` is the time a solve cannot beat on one core: its non-activation FLOPs at the FMA
peak plus its activations at the activation rate (they share the same vector pipes).
"""
from __future__ import annotations

import functools
import time

import numpy as np
import torch

from models.flow import KirchhoffNet

FLOPS_PER_DEVICE = 10
FLOPS_PER_NODE = 8


def nominal_flops(model: KirchhoffNet, steps: list[int], rows: int) -> float:
    """Nominal FLOPs of one solve of ``rows`` rows with ``steps`` RK4 steps per layer."""
    return float(sum(4 * s * rows * (FLOPS_PER_DEVICE * len(layer.edges) + FLOPS_PER_NODE * layer.nodes)
                     for s, layer in zip(steps, model.spec.layers)))


def activations(model: KirchhoffNet, steps: list[int], rows: int) -> float:
    """Device activations evaluated by one solve (one per device, row and field evaluation)."""
    return float(sum(4 * s * rows * len(layer.edges) for s, layer in zip(steps, model.spec.layers)))


def bound_s(model: KirchhoffNet, steps: list[int], rows: int) -> float | None:
    """Seconds one core needs at least: the FLOPs other than activations at :func:`fma_peak_gflops`,
    plus the activations at :func:`activation_rate`; None without the compiled extension."""
    peak, rate = fma_peak_gflops(), activation_rate()
    if peak is None or rate is None:
        return None
    acts = activations(model, steps, rows)
    return (nominal_flops(model, steps, rows) - acts) / (peak * 1e9) + acts / rate


@functools.lru_cache(maxsize=1)
def peak_gflops(n: int = 1024, repeats: int = 3) -> float:
    """One core's float32 GEMM rate in GFLOP/s, as torch reaches it with the current threads."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n**3 / best / 1e9


def _rk4():
    try:
        from models import _rk4
    except ImportError:
        return None
    return _rk4


@functools.lru_cache(maxsize=1)
def fma_peak_gflops(rounds: int = 20_000_000, repeats: int = 3) -> float | None:
    """One core's float32 FMA rate in GFLOP/s (best of ``repeats``, CPU time), or None without the
    compiled extension."""
    rk4 = _rk4()
    if rk4 is None:
        return None
    best = 0.0
    for _ in range(repeats):
        t = time.process_time()
        _, flops = rk4.fma_loop(rounds)
        best = max(best, flops / (time.process_time() - t) / 1e9)
    return best


def _rate(fn, n: int, calls: int) -> float:
    fn()
    t = time.process_time()
    for _ in range(calls):
        fn()
    return n * calls / (time.process_time() - t)


@functools.lru_cache(maxsize=1)
def activation_rates(n: int = 8192) -> dict[str, float]:
    """tanh evaluations per second on one core, by implementation, over float32 values in [-5, 5]
    (``n`` for the compiled path, 16 n for the others; arrays that stay in the L2 cache)."""
    z = np.random.default_rng(0).uniform(-5.0, 5.0, n).astype(np.float32)
    y = np.empty_like(z)
    rates = {}
    rk4 = _rk4()
    if rk4 is not None:
        kernel, zp, yp = rk4.KERNELS.index("tanh"), z.ctypes.data, y.ctypes.data
        rounds = 2000
        rates["compiled path"] = _rate(lambda: rk4.activate(kernel, 0, 0.0, zp, yp, 0, n, rounds), n * rounds, 3)
    # torch and XLA over 16× more values (still in L2): their per-call dispatch stays negligible
    big = np.tile(z, 16)
    zt, yt = torch.from_numpy(big), torch.empty(big.size)
    rates["torch"] = _rate(lambda: torch.tanh(zt, out=yt), big.size, 200)
    from benchmarks.xla import jax_status
    jax, _ = jax_status()
    if jax is not None:
        f = jax.jit(jax.numpy.tanh)
        zj = jax.numpy.asarray(big)
        rates["XLA"] = _rate(lambda: f(zj).block_until_ready(), big.size, 200)
    return rates


def activation_rate() -> float | None:
    """The fastest measured tanh rate (per second), or None without the compiled extension."""
    return max(activation_rates().values()) if _rk4() is not None else None
