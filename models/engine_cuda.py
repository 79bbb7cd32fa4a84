"""The engine's GPU path: whole layers captured as CUDA graphs.

A KirchhoffNet solve at serving sizes is thousands of tiny kernels; on a GPU their launch
cost, not arithmetic, sets the latency. A fixed-step RK4 layer has static shapes and no
host-side control flow, so all its steps can be captured once and replayed with a single
launch. One graph per layer (not one for the whole solve) so that the shared layer loop
(``models.engine_state.run_layers``) checks the wall-clock budget and finiteness between
replays, exactly as on the eager paths. Batch sizes are padded up to a few buckets, so at
most ``len(BUCKETS)`` sets of graphs exist per (model, direction, divergence on/off, step
counts).

Only used when the model and input live on a CUDA device. ``tests/test_engine_paths.py``
compares graph replays with the eager engine wherever CUDA exists.
"""
from __future__ import annotations

import threading

import torch
from torch import Tensor

from .engine_layers import DenseLayer, EngineLayer, rk4_layer
from .engine_state import EngineStats, charge_steps, layer_order, pack, run_layers, state_rows, unpack
from .solvers import Budget

BUCKETS = (1, 8, 64, 512, 4096, 16384, 65536)
_GRAPH_LOCK = threading.Lock()


class GraphedSolve:
    """Captured layers sharing one static state ``S (N+2, bucket)``, each advanced in place."""

    def __init__(self, layers: list[EngineLayer], durations: list[float], steps: list[int], n: int,
                 bucket: int, with_div: bool, dtype: torch.dtype, device: torch.device):
        self.bucket = bucket
        self.S = torch.zeros(state_rows(n), bucket, dtype=dtype, device=device)
        unlimited = Budget(10**12, float("inf"))  # budgets are charged between replays

        def body(k: int, S: Tensor) -> None:
            rk4_layer(layers[k], S, durations[k], steps[k], with_div, unlimited)

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
            scratch = self.S.clone()
            for _ in range(2):
                for k in range(len(layers)):
                    body(k, scratch)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graphs = []
        for k in range(len(layers)):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body(k, self.S)
            self.graphs.append(graph)

    def load(self, S: Tensor) -> None:
        """Copy ``S (N+2, rows ≤ bucket)`` into the static state; padding rows are zero."""
        rows = S.shape[1]
        self.S[:, :rows].copy_(S)
        if rows < self.bucket:
            self.S[:, rows:].zero_()


def bucket_for(rows: int) -> int | None:
    """The smallest bucket holding ``rows``, or None above the largest."""
    for b in BUCKETS:
        if rows <= b:
            return b
    return None


def integrate_graphed(cache: dict, layers: list[EngineLayer], durations: list[float], steps: list[int],
                      v: Tensor, reverse: bool, with_div: bool, budget: Budget
                      ) -> tuple[Tensor, Tensor | None, EngineStats] | None:
    """Solve with captured graphs; None when the call does not fit (caller falls back).

    ``cache`` maps (bucket, reverse, with_div, steps) to :class:`GraphedSolve`; the caller
    owns it and drops it when the parameters change. ``budget`` is charged a layer's steps
    before its replay and its clock is checked after each replay (a replay itself is not
    interruptible, so a solve overruns ``max_wall_s`` by at most one layer).
    """
    bucket = bucket_for(v.shape[0])
    if bucket is None or sum(steps) > budget.max_steps:
        return None  # the eager engine reports MAX_STEPS at the right point
    key = (bucket, reverse, with_div, tuple(steps))
    rows = v.shape[0]
    stats = EngineStats(path="cuda-graph-" + ("dense" if isinstance(layers[0], DenseLayer) else "gather"))
    # graphs replay into shared static buffers: the service solves from several threads, so
    # capture, replay and the copy out of the static state happen under one lock
    with _GRAPH_LOCK:
        solve = cache.get(key)
        if solve is None:
            solve = cache[key] = GraphedSolve(layers, durations, steps, v.shape[1], bucket, with_div,
                                              v.dtype, v.device)
        solve.load(pack(v))

        def advance(k: int) -> None:
            charge_steps(budget, steps[k])
            solve.graphs[k].replay()

        # the finiteness check synchronises, so the clock check after it sees the replay's end
        stats.status, stats.message = run_layers(layer_order(len(layers), reverse), advance,
                                                 lambda: bool(torch.isfinite(solve.S[:, :rows]).all()), budget)
        v_end, ell = unpack(solve.S[:, :rows])
    stats.nfe, stats.steps = budget.nfe, budget.steps
    return v_end, (ell if with_div else None), stats
