"""The solver threads and the micro-batcher's idle fast path (service/solver_threads.py,
service/batching.py): answers, failures, cancellation and the batching kept under a burst."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from helpers import tiny_model

from benchmarks.overhead import summarize
from service.batching import MicroBatcher, SolveKey, solve
from service.solver_threads import SolverThreads


def _run(coro_fn):
    return asyncio.run(coro_fn())


def test_results_exceptions_and_the_calling_thread():
    async def main():
        pool = SolverThreads(2)
        try:
            name = await pool.submit(lambda: threading.current_thread().name)
            assert name.startswith("knet-solve_") and name != threading.main_thread().name
            assert await pool.submit(pow, 3, 4) == 81
            with pytest.raises(ZeroDivisionError):
                await pool.submit(lambda: 1 / 0)
            assert await pool.submit(pow, 2, 5) == 32  # the thread survived the exception
        finally:
            pool.close()
    _run(main)


def test_sequential_work_stays_on_the_most_recently_idle_thread():
    async def main():
        pool = SolverThreads(3)
        try:
            names = {await pool.submit(lambda: threading.current_thread().name) for _ in range(20)}
        finally:
            pool.close()
        return names
    assert len(_run(main)) == 1  # a shared queue would spread these over the threads


def test_more_work_than_threads_waits_in_order_and_all_of_it_runs():
    lock = threading.Lock()
    started: list[int] = []
    running, peak = 0, 0

    def job(i):
        nonlocal running, peak
        with lock:
            started.append(i)
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return i * i

    async def main(n_threads, n_jobs):
        pool = SolverThreads(n_threads)
        try:
            return await asyncio.gather(*(pool.submit(job, i) for i in range(n_jobs)))
        finally:
            pool.close()
    assert _run(lambda: main(1, 6)) == [i * i for i in range(6)]
    assert started == list(range(6)) and peak == 1  # one thread: strictly first come, first served
    started.clear()
    assert _run(lambda: main(2, 8)) == [i * i for i in range(8)]
    assert sorted(started) == list(range(8)) and peak == 2  # never more at once than threads


def test_on_finish_runs_when_the_thread_is_done_even_if_the_caller_gave_up():
    gate = threading.Event()
    finished: list[float] = []

    async def main():
        pool = SolverThreads(1)
        try:
            fut = pool.submit(gate.wait, 5, on_finish=lambda: finished.append(time.monotonic()))
            await asyncio.sleep(0.02)
            fut.cancel()
            await asyncio.sleep(0.02)
            assert not finished  # cancelled, but the thread is still busy: the slot stays taken
            gate.set()
            for _ in range(200):
                if finished:
                    break
                await asyncio.sleep(0.005)
            assert len(finished) == 1
            assert await pool.submit(pow, 2, 3) == 8
        finally:
            pool.close()
    _run(main)


def test_close_cancels_waiting_work_and_refuses_more():
    gate = threading.Event()

    async def main():
        pool = SolverThreads(1)
        busy = pool.submit(gate.wait, 5)
        waiting = pool.submit(pow, 2, 2)
        await asyncio.sleep(0.01)
        pool.close()
        with pytest.raises(RuntimeError, match="closed"):
            pool.submit(pow, 2, 2)
        gate.set()
        assert await busy is True
        with pytest.raises(asyncio.CancelledError):
            await waiting
    _run(main)
    with pytest.raises(ValueError, match="at least one"):
        SolverThreads(0)


def test_idle_fast_path_answers_like_a_solo_solve_and_a_burst_is_still_batched():
    model = tiny_model(torch.float32, steps=8)
    key = SolveKey("sample", True, model.spec.solver)
    gen = torch.Generator().manual_seed(5)
    zs = [torch.randn(1, 2, generator=gen, dtype=torch.float64) for _ in range(24)]
    log: list[int] = []

    async def main():
        b = MicroBatcher(model, 256, 32, on_solve=lambda k, rows, stats: log.append(rows), solver_threads=2)
        try:
            alone = await b.submit(key, zs[0])  # idle batcher: the fast path
            await asyncio.sleep(0)  # let its metrics callback run
            n_alone = len(log)
            burst = await asyncio.gather(*(b.submit(key, z) for z in zs))
            await asyncio.sleep(0)
            return alone, n_alone, burst
        finally:
            b.close()
    alone, n_alone, burst = _run(main)
    ref = solve(model, key, zs[0])
    torch.testing.assert_close(alone.x, ref.x.double())
    torch.testing.assert_close(alone.logp, ref.logp.double())
    assert alone.stats.ok and alone.stats.wall_s > 0 and n_alone == 1
    for z, out in zip(zs, burst):
        torch.testing.assert_close(out.x, solve(model, key, z).x.double(), rtol=1e-5, atol=1e-5)  # float32 paths
    # two requests take the free solver threads at once; the other 22 wait and share batches
    assert sum(log[1:]) == 24 and len(log) - 1 < 24 // 2


def test_overhead_summary_arithmetic():
    ms = 1e-3
    seen = {"sample": {"latency_s": [2 * ms, 3 * ms, 4 * ms], "solve_s": [0.5 * ms, 1 * ms, 1.5 * ms]},
            "noop_sample": {"latency_s": [1 * ms, 2 * ms, 9 * ms], "solve_s": []},
            "logprob": {"latency_s": [5 * ms], "solve_s": [1 * ms]},
            "noop_logprob": {"latency_s": [2 * ms], "solve_s": []},
            "livez": {"latency_s": [0.5 * ms, 1 * ms, 1.5 * ms], "solve_s": []}}
    s = summarize(seen)
    assert s["sample"]["overhead_ms"] == pytest.approx(2.0)  # p50 3 ms − p50 solve 1 ms
    assert s["sample"]["overhead_over_noop"] == pytest.approx(1.0)
    assert s["sample"]["overhead_over_livez"] == pytest.approx(2.0)
    assert s["logprob"]["overhead_over_noop"] == pytest.approx(2.0)
