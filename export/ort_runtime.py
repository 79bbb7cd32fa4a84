"""The model's own ONNX graphs run in onnxruntime, wherever that is measured faster than the engine.

The graphs (export/onnx_graphs.py) unroll the same fixed RK4 steps the engine takes, so the two
runtimes compute the same function in float32 and differ only in rounding. Which one answers is
decided per model, direction and batch size by measurement (:meth:`OrtRuntime.measure`, run
once when the service warms up): both are timed side by side, alternating, one thread each
(best of five; of three above 64 rows), on the probe batch sizes, and onnxruntime answers a
size only where it took at most :data:`SPEED_MARGIN` of the engine's time and every output
agreed within :data:`PARITY_RTOL`. A request uses the row of the smallest probe size at or
above its row count (the largest beyond it). Probing a direction stops after a probe slower
than :data:`PROBE_MAX_S`, which bounds the warm-up of big circuits (784-D: after 16 rows).

Bounds, as on the engine's paths: the graph's step count is fixed, so a solver whose step
budget it exceeds is left to the engine (which reports MAX_STEPS); one ``run`` cannot be stopped
midway, so a request whose predicted time (the probe's, scaled by rows) is over half its
wall-clock budget goes to the engine, and a run that still overran reports TIMEOUT with its
answer withheld; non-finite outputs report NONFINITE. Measured figures: docs/engine.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.config import SolverConfig
from models.engine_state import EngineStats
from models.flow import KirchhoffNet
from models.solvers import Status

from .onnx_graphs import onnx_graph, session

PROBE_BATCHES = (1, 16, 64, 256, 1024)
SPEED_MARGIN = 0.9  # onnxruntime must take ≤ 0.9 × the engine's time: a noisy tie keeps the engine
PARITY_RTOL = 1e-5  # |ORT − engine| ≤ 1e-5 · max(1, |engine|) on every output, or ORT is not used
PROBE_MAX_S = 0.1  # a probe slower than this ends the probing of a direction (784-D: after 16 rows)


@dataclass(frozen=True)
class Measurement:
    """One probe: median seconds per call of each runtime at ``batch`` rows, the worst relative
    disagreement of their outputs, and whether onnxruntime answers this size."""

    direction: str
    batch: int
    ort_s: float
    engine_s: float
    parity: float
    use_ort: bool


class OrtRuntime:
    """A model's sampling and log-density graphs in single-threaded onnxruntime sessions, with
    the measured table that says where they answer (build it with :meth:`measure`)."""

    def __init__(self, sessions: dict, steps: tuple[int, ...], table: list[Measurement]):
        self.sessions = sessions
        self.steps = steps
        self.table = table

    @classmethod
    def measure(cls, model: KirchhoffNet, solver: SolverConfig, batches=PROBE_BATCHES, repeats: int = 5,
                seed: int = 0) -> OrtRuntime | None:
        """Build the graphs for ``solver``'s RK4 steps and time both runtimes on ``batches``;
        None where onnxruntime cannot stand in (not RK4, not float32 on the CPU)."""
        if solver.method != "rk4" or model.device.type != "cpu" or model.dtype != torch.float32:
            return None
        runtime = cls.for_solver(model, solver)
        gen = torch.Generator().manual_seed(seed)
        for direction in runtime.sessions:
            for batch in sorted(batches):
                x = torch.randn(batch, model.data_dim, generator=gen)
                m = runtime._probe(model, solver, direction, x, repeats)
                runtime.table.append(m)
                if max(m.ort_s, m.engine_s) > PROBE_MAX_S:
                    break  # larger sizes use this row: bounded warm-up for big circuits
        return runtime

    @classmethod
    def for_solver(cls, model: KirchhoffNet, solver: SolverConfig) -> OrtRuntime:
        """Sessions for ``solver``'s RK4 steps, with no measurement (an empty table: :meth:`serves`
        says no; :meth:`run` still runs). ValueError unless RK4."""
        if solver.method != "rk4":
            raise ValueError(f"onnxruntime runs the unrolled RK4 graph; the solver is {solver.method}")
        n_layers = len(model.spec.layers)
        steps = tuple(solver.steps_for(k, n_layers) for k in range(n_layers))
        directions = ("sample", "logprob") if model.spec.bijective else ("sample",)
        return cls({d: session(onnx_graph(model, d, steps=list(steps))) for d in directions}, steps, [])

    def _probe(self, model: KirchhoffNet, solver: SolverConfig, direction: str, x: Tensor,
               repeats: int) -> Measurement:
        def engine():
            with torch.no_grad():
                res = (model.sample(len(x), solver=solver, z=x) if direction == "sample"
                       else model.log_prob(x, solver))
            return [res.x, res.logp]

        def ort():
            return [torch.from_numpy(a) for a in self._run(direction, x)]

        want, got = engine(), ort()  # also the warm-up of both
        parity = max(float(((g - w).abs() / w.abs().clamp(min=1.0)).max())
                     for g, w in zip(got, want) if w is not None)
        ort_t, engine_t = [], []
        for _ in range(repeats if x.shape[0] <= 64 else min(repeats, 3)):  # alternated: noise hits both
            for fn, times in ((ort, ort_t), (engine, engine_t)):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        # the fastest of each: on a shared machine noise only ever adds time
        ort_s, engine_s = min(ort_t), min(engine_t)
        use = parity <= PARITY_RTOL and ort_s <= SPEED_MARGIN * engine_s
        return Measurement(direction, len(x), ort_s, engine_s, parity, use)

    def choice(self, direction: str, rows: int) -> Measurement | None:
        """The probe that decides a request of ``rows`` rows (None: direction not measured)."""
        rows_for = [m for m in self.table if m.direction == direction]
        if not rows_for:
            return None
        return next((m for m in rows_for if m.batch >= rows), rows_for[-1])

    def serves(self, direction: str, solver: SolverConfig, rows: int) -> bool:
        """True when onnxruntime should answer: measured faster (and equal) at this size, the same
        RK4 steps as ``solver``, within its step budget and, predicted, half its time budget."""
        m = self.choice(direction, rows)
        if m is None or not m.use_ort or solver.method != "rk4":
            return False
        n = len(self.steps)
        same = solver.steps_per_layer == self.steps or tuple(solver.steps_for(k, n) for k in range(n)) == self.steps
        if not same or sum(self.steps) > solver.max_steps:  # (the tuple compare first: it is every request's case)
            return False
        return m.ort_s * max(1.0, rows / m.batch) <= solver.max_wall_s / 2

    def run(self, direction: str, x: Tensor, solver: SolverConfig) -> tuple[Tensor, Tensor | None, EngineStats]:
        """``x (rows, d)`` → (outputs ``(rows, d)``, log-density ``(rows,)`` or None for a model
        without one, stats), float32 on the CPU, as the engine returns them (the latents for
        ``logprob``)."""
        started = time.perf_counter()
        out, *rest = (torch.from_numpy(a) for a in self._run(direction, x))
        logp = rest[0] if rest else None
        stats = EngineStats(nfe=4 * sum(self.steps), steps=sum(self.steps), path="onnxruntime")
        stats.wall_s = time.perf_counter() - started
        if stats.wall_s > solver.max_wall_s:
            stats.status, stats.message = Status.TIMEOUT, f"wall-clock budget {solver.max_wall_s:g} s exceeded"
        elif not (bool(torch.isfinite(out).all()) and (logp is None or bool(torch.isfinite(logp).all()))):
            stats.status, stats.message = Status.NONFINITE, "non-finite voltages"
        return out, logp, stats

    def _run(self, direction: str, x: Tensor) -> list[np.ndarray]:
        sess = self.sessions[direction]
        return sess.run(None, {sess.get_inputs()[0].name: x.detach().to("cpu", torch.float32).numpy()})

    def describe(self) -> list[dict]:
        """The measured table as JSON-ready rows (GET /models/{name} shows it)."""
        return [{"direction": m.direction, "batch": m.batch, "onnxruntime_ms": round(1e3 * m.ort_s, 4),
                 "engine_ms": round(1e3 * m.engine_s, 4), "parity": m.parity,
                 "answers": "onnxruntime" if m.use_ort else "engine"} for m in self.table]
