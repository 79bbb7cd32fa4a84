"""How far a solve is from the machine's limit: nominal FLOPs of a fixed-step RK4 solve and one
core's float32 peak, for ``knet bench``'s GFLOP/s column.

FLOPs are counted from the circuit, not from the path that ran (the dense, gather and NumPy
paths do the same arithmetic differently), per row and field evaluation:

- per device (edge): a·v_src + b·v_dst + c (4), the activation (counted as 1, though a tanh
  costs more), the two scattered currents (2), and for the log-density the activation's slope
  times the device weight, accumulated (3): 10;
- per node: RK4's stage combination (8: four scaled adds, amortised per evaluation).

So a layer of E devices and N nodes, solved with s steps (4 evaluations each) on B rows, costs
4·s·B·(10·E + 8·N). The peak is what torch reaches on this core in a 1024³ float32 matrix
product (2·1024³ FLOPs, best of three): the attainable rate of dense arithmetic here, which
the vector field's small matrices and transcendental activations cannot approach.
"""
from __future__ import annotations

import functools
import time

import torch

from models.flow import KirchhoffNet

FLOPS_PER_DEVICE = 10
FLOPS_PER_NODE = 8


def nominal_flops(model: KirchhoffNet, steps: list[int], rows: int) -> float:
    """Nominal FLOPs of one solve of ``rows`` rows with ``steps`` RK4 steps per layer."""
    return float(sum(4 * s * rows * (FLOPS_PER_DEVICE * len(layer.edges) + FLOPS_PER_NODE * layer.nodes)
                     for s, layer in zip(steps, model.spec.layers)))


@functools.lru_cache(maxsize=1)
def peak_gflops(n: int = 1024, repeats: int = 3) -> float:
    """One core's float32 GEMM rate in GFLOP/s, as torch reaches it with the current threads."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
