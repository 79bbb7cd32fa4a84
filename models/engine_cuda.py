"""The engine's GPU path: whole fixed-step solves captured as CUDA graphs.

A KirchhoffNet solve at serving sizes is thousands of tiny kernels; on a GPU their launch
cost, not arithmetic, sets the latency. A fixed-step RK4 solve has static shapes and no
host-side control flow, so the whole solve (all layers, all steps) can be captured once
and replayed with a single launch. Batch sizes are padded up to a few buckets, so at most
``len(BUCKETS)`` graphs exist per (model, direction, divergence on/off, step counts).

Only used when ``torch.cuda.is_available()`` and the model lives on a CUDA device.
NOTE: written and reviewed without a GPU in this session; ``tests/test_engine_paths.py``
compares graph replays with the eager engine and runs wherever CUDA exists.
"""
from __future__ import annotations

import threading
import time

import torch
from torch import Tensor

from .engine import FastLayer, rk4_layer
from .solvers import Budget, SolveStats, Status

BUCKETS = (1, 8, 64, 512, 4096, 16384, 65536)
_GRAPH_LOCK = threading.Lock()


class GraphedSolve:
    """One captured solve: static input/output state ``(N+2, bucket)`` and its graph."""

    def __init__(self, layers: list[FastLayer], durations: list[float], steps: list[int], n: int,
                 bucket: int, reverse: bool, with_div: bool, dtype: torch.dtype, device: torch.device):
        self.bucket = bucket
        self.S_in = torch.zeros(n + 2, bucket, dtype=dtype, device=device)
        order = list(range(len(layers) - 1, -1, -1) if reverse else range(len(layers)))
        unlimited = Budget(10**12, float("inf"))

        def body() -> Tensor:
            S = self.S_in.clone()
            for k in order:
                rk4_layer(layers[k], S, durations[k], steps[k], with_div, unlimited)
            return S

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
            for _ in range(2):
                body()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.S_out = body()

    def __call__(self, S: Tensor) -> Tensor:
        """Replay on ``S (N+2, rows ≤ bucket)``; returns a view of the static output."""
        rows = S.shape[1]
        self.S_in[:, :rows].copy_(S)
        if rows < self.bucket:
            self.S_in[:, rows:].zero_()
        self.graph.replay()
        return self.S_out[:, :rows]


def bucket_for(rows: int) -> int | None:
    """The smallest bucket holding ``rows``, or None above the largest."""
    for b in BUCKETS:
        if rows <= b:
            return b
    return None


def integrate_graphed(cache: dict, layers: list[FastLayer], durations: list[float], steps: list[int],
                      v: Tensor, reverse: bool, with_div: bool, max_steps: int
                      ) -> tuple[Tensor, Tensor | None, SolveStats] | None:
    """Solve with a captured graph; None when the call does not fit one (caller falls back).

    ``cache`` maps (bucket, reverse, with_div, steps) to :class:`GraphedSolve`; the caller
    owns it and drops it when the parameters change.
    """
    total = sum(steps)
    bucket = bucket_for(v.shape[0])
    if bucket is None or total > max_steps:
        return None  # the eager engine reports MAX_STEPS at the right point
    started = time.perf_counter()
    key = (bucket, reverse, with_div, tuple(steps))
    n = v.shape[1]
    S = v.new_zeros(n + 2, v.shape[0])
    S[0] = 1.0  # the bias row (models.engine)
    S[1:n + 1] = v.t()
    stats = SolveStats(nfe=4 * total, steps=total)
    # graphs replay into shared static buffers: the service solves from several threads, so
    # capture, replay and the copy out of the static output happen under one lock
    with _GRAPH_LOCK:
        solve = cache.get(key)
        if solve is None:
            solve = cache[key] = GraphedSolve(layers, durations, steps, n, bucket, reverse, with_div,
                                              v.dtype, v.device)
        out = solve(S)
        v_end = out[1:n + 1].t().contiguous()
        ell = out[n + 1].clone() if with_div else None
        finite = bool(torch.isfinite(out).all())
    if not finite:
        stats.status, stats.message = Status.NONFINITE, "non-finite voltages"
    stats.wall_s = time.perf_counter() - started
    return v_end, ell, stats
