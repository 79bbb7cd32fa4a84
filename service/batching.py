"""Per-model micro-batching: concurrent requests for one model share one solve.

Why: a KirchhoffNet solve costs about the same for 1 row as for a few hundred (the cost is
the fixed number of vector-field evaluations), so merging the rows of requests that arrive
together raises throughput. How, without letting a large request starve small ones:

* requests wait in a FIFO queue; the solver loop takes the next batch as soon as the previous
  one finishes (no timer: an idle server adds no latency);
* a batch holds up to ``max_batch_rows`` rows of requests with the same solve key (endpoint,
  log-density channel on/off, solver settings); each waiting request adds at most
  ``max(slice_rows, max_batch_rows // waiting)`` rows, so every waiting request gets rows
  into the next batch and one-row requests are not made to wait for a large chunk's solve;
* a request with rows left over goes to the back of the queue (large requests are chunked);
* a request that finds the batcher idle (empty queue, a free solver thread) and fits one batch
  is solved at once, without the queue's hand-offs: the batch the loop would have made.

Row results are independent of batch composition for fixed-step solvers (rows never mix).
Up to ``solver_threads`` batches of a model solve at once, in threads (torch releases the GIL
inside its kernels), so a batch of small requests can run beside a chunk of a large one and
the event loop stays free.
"""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from models.config import SolverConfig
from models.flow import FlowResult, KirchhoffNet
from models.solvers import SolveStats, Status

from .solver_threads import SolverThreads

if TYPE_CHECKING:
    from export.ort_runtime import OrtRuntime


@dataclass(frozen=True)
class SolveKey:
    """Requests with equal keys can share a solve."""

    endpoint: str  # "sample" (x holds latents z) or "logprob" (x holds points)
    with_logprob: bool
    solver: SolverConfig


@dataclass
class Outcome:
    """The answer to one request: ``x (rows, d)`` samples (sample) or latents (logprob),
    ``logp (rows,)`` or None, both float64 on the CPU, and the summed stats of its solves."""

    x: Tensor
    logp: Tensor | None
    stats: SolveStats


def solve(model: KirchhoffNet, key: SolveKey, x: Tensor) -> FlowResult:
    """One solve of ``x (rows, d)`` (latents for sample, points for logprob)."""
    with torch.no_grad():
        if key.endpoint == "sample":
            return model.sample(x.shape[0], solver=key.solver, with_logprob=key.with_logprob, z=x)
        return model.log_prob(x, key.solver)


def solve_to_cpu(model: KirchhoffNet, key: SolveKey, x: Tensor, runtime: OrtRuntime | None = None) -> Outcome:
    """:func:`solve`, its answer moved to float64 on the CPU, all in the calling (solver) thread:
    the event loop only hands rows out and results back. With ``runtime``, the model's ONNX
    graph in onnxruntime answers instead wherever it was measured faster for this many rows
    (export/ort_runtime.py; sampling only with log q, as measured).

    ``stats.wall_s`` becomes the whole call's wall time (the integration plus moving the rows to
    the model's device and back and the prior's log-density), what a request waits on the solver
    for: the ``solve_s`` of the answers and ``knet_solve_seconds``."""
    started = time.perf_counter()
    if (runtime is not None and (key.endpoint == "logprob" or key.with_logprob)
            and runtime.serves(key.endpoint, key.solver, x.shape[0])):
        res = FlowResult(*runtime.run(key.endpoint, x, key.solver))
    else:
        res = solve(model, key, x)
    out = Outcome(_cpu(res.x), None if res.logp is None else _cpu(res.logp), res.stats)
    out.stats.wall_s = time.perf_counter() - started
    return out


@dataclass(eq=False)
class _Pending:
    key: SolveKey
    x: Tensor
    future: asyncio.Future
    offset: int = 0  # rows handed to batches so far
    parts: list[tuple[int, Tensor, Tensor | None]] = field(default_factory=list)
    stats: SolveStats = field(default_factory=SolveStats)

    @property
    def rows(self) -> int:
        return self.x.shape[0]


OnSolve = Callable[[SolveKey, int, SolveStats], None]


class MicroBatcher:
    """Queue and solver loop of one model. Create inside the running event loop."""

    def __init__(self, model: KirchhoffNet, max_batch_rows: int, slice_rows: int,
                 on_solve: OnSolve | None = None, enabled: bool = True, solver_threads: int = 2,
                 runtime: OrtRuntime | None = None):
        self.model = model
        self.runtime = runtime  # onnxruntime where measured faster (export/ort_runtime.py), else None
        self.max_batch_rows = max_batch_rows
        self.slice_rows = slice_rows
        self.on_solve = on_solve or (lambda *a: None)
        self.enabled = enabled
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(solver_threads)
        self._threads = SolverThreads(solver_threads)
        self._task: asyncio.Task | None = None

    async def submit(self, key: SolveKey, x: Tensor) -> Outcome:
        """Solve ``x (rows, d)`` (float64, CPU) under ``key``; returns when all its rows are done."""
        if not self.enabled:  # baseline: every request solved alone, in parallel threads
            out = await asyncio.to_thread(solve_to_cpu, self.model, key, x, self.runtime)
            self.on_solve(key, x.shape[0], out.stats)
            return out
        loop = asyncio.get_running_loop()
        if not self._queue and not self._slots.locked() and x.shape[0] <= self.max_batch_rows:
            # idle: the loop would make this request the next batch, whole and at once; start it
            # here instead and save the hand-offs through the queue (docs/service.md)
            await self._slots.acquire()  # free, so this does not wait
            # the slot is released when the thread is done, even if this request is cancelled
            out = await self._threads.submit(solve_to_cpu, self.model, key, x, self.runtime,
                                             on_finish=self._slots.release)
            loop.call_soon(self.on_solve, key, x.shape[0], out.stats)
            return out
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        pending = _Pending(key, x, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._wake.set()
        return await pending.future

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._threads.close()

    # -- solver loop -------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._slots.acquire()  # requests arriving meanwhile join the next batch
                key, segments = self._next_batch()
                if not segments:
                    self._slots.release()
                    continue
                task = loop.create_task(self._solve_batch(key, segments))
                task.add_done_callback(lambda _: self._slots.release())

    async def _solve_batch(self, key: SolveKey, segments) -> None:
        x = segments[0][0].x if len(segments) == 1 and segments[0][2] == segments[0][0].rows else \
            torch.cat([p.x[start:start + n] for p, start, n in segments])
        loop = asyncio.get_running_loop()
        try:
            out = await self._threads.submit(solve_to_cpu, self.model, key, x, self.runtime)
        except Exception as err:  # an unexpected failure fails its batch, not the loop
            for p, _, _ in segments:
                self._fail(p, err)
            return
        self._distribute(segments, out.x, out.logp, out.stats)
        # metrics after the answers: the waiting handlers run first, so the bookkeeping is off
        # the requests' latency (docs/service.md, "Where a request's time goes")
        loop.call_soon(self.on_solve, key, x.shape[0], out.stats)

    def _next_batch(self) -> tuple[SolveKey, list[tuple[_Pending, int, int]]]:
        """Pick the rows of the next batch: requests with the oldest request's key, a fair share each."""
        for p in [p for p in self._queue if p.future.done()]:  # cancelled or already failed
            self._queue.remove(p)
        if not self._queue:
            return None, []
        key = self._queue[0].key
        members = [p for p in self._queue if p.key == key]
        # a fair share per request: small requests ride in a batch that stays small, while
        # a request alone (or a few large ones) fill it
        share = max(self.slice_rows, self.max_batch_rows // len(members))
        room, segments = self.max_batch_rows, []
        for p in members:
            n = min(p.rows - p.offset, share, room)
            if not n:
                continue  # batch full: keeps its place in the queue
            room -= n
            segments.append((p, p.offset, n))
            p.offset += n
            self._queue.remove(p)
            if p.offset < p.rows:
                self._queue.append(p)  # leftover rows wait behind everyone else
        return key, segments

    def _distribute(self, segments, x: Tensor, logp: Tensor | None, stats: SolveStats) -> None:
        at = 0
        for p, start, n in segments:
            if p.future.done():
                at += n
                continue
            if n == x.shape[0]:  # the batch is this request's alone: no views to make
                p.parts.append((start, x, logp))
            else:
                p.parts.append((start, x[at:at + n], None if logp is None else logp[at:at + n]))
            at += n
            s = p.stats
            s.nfe += stats.nfe
            s.steps += stats.steps
            s.wall_s += stats.wall_s
            status, message = stats.status, stats.message
            budget_s = p.key.solver.max_wall_s
            if status == Status.SUCCESS and s.wall_s > budget_s:
                # the wall-clock budget is the request's, not each chunk's: a chunked request whose
                # solves add up past it fails like one solve that ran past it (504 naming it); the
                # batch's other requests keep their own budgets
                status, message = Status.TIMEOUT, (f"wall-clock budget of {budget_s:g} s exhausted after "
                                                   f"{s.wall_s:.3g} s of this request's solves")
            if status != Status.SUCCESS:  # the request fails with its first failed batch
                s.status, s.message = status, message
                self._finish(p)
            elif sum(part[1].shape[0] for part in p.parts) == p.rows:
                self._finish(p)

    def _finish(self, p: _Pending) -> None:
        if p in self._queue:
            self._queue.remove(p)
        if len(p.parts) == 1:  # the usual case: the request fit in one batch
            _, x, logp = p.parts[0]
        else:
            parts = sorted(p.parts, key=lambda part: part[0])
            x = torch.cat([part[1] for part in parts])
            logp = None if parts[0][2] is None else torch.cat([part[2] for part in parts])
        p.future.set_result(Outcome(x, logp, p.stats))

    def _fail(self, p: _Pending, err: Exception) -> None:
        if p in self._queue:
            self._queue.remove(p)
        if not p.future.done():
            p.future.set_exception(err)


def _cpu(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float64)
