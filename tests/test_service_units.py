"""Service parts without a server: settings, the model store import, the micro-batcher."""
from __future__ import annotations

import asyncio
import json

import pytest
import torch
from helpers import tiny_checkpoint, tiny_model

from models.checkpoint import WEIGHTS_FILE, CheckpointError, content_hash
from models.solvers import Status
from service.batching import MicroBatcher, SolveKey, solve
from service.config import ServiceSettings
from service.errors import STATUS_HTTP


def test_settings_defaults_and_env_overrides():
    s = ServiceSettings.from_env({})
    assert s.max_concurrency == ServiceSettings.model_fields["max_concurrency"].default
    s = ServiceSettings.from_env({"KNET_SERVICE_MAX_CONCURRENCY": "7", "KNET_SERVICE_BATCHING": "false"})
    assert (s.max_concurrency, s.batching) == (7, False)
    with pytest.raises(ValueError, match="KNET_SERVICE_MAX_POINTS"):
        ServiceSettings.from_env({"KNET_SERVICE_MAX_POINTS": "0"})


def test_every_solver_status_has_an_http_code():
    assert set(STATUS_HTTP) == set(Status)
    assert STATUS_HTTP[Status.SUCCESS] == 200
    assert STATUS_HTTP[Status.TIMEOUT] == STATUS_HTTP[Status.MAX_STEPS] == 504
    assert all(code < 500 or code == 504 for code in STATUS_HTTP.values())


def test_store_import_metadata_idempotence_and_corrupt(tmp_path):
    from service.store import import_checkpoint, stored_models
    ck = tiny_checkpoint(tmp_path / "ck", name="svc-unit-a")
    (ck / "eval.json").write_text(json.dumps({"test_nll": 1.25}))
    stored, created = import_checkpoint(ck)
    meta = stored.info.metadata
    assert stored.tag.name == "svc-unit-a"
    assert meta["checkpoint_sha256"] == content_hash(ck)
    assert (meta["data_dim"], meta["layers"], meta["edges"], meta["device"]) == (2, 2, 24, "affine-tanh")
    assert meta["eval"] == {"test_nll": 1.25} and meta["projected_chip_latency_s"] > 0
    assert set(meta["hardware"]) >= {"capacitance_f", "current_scale_a"}
    again, created_again = import_checkpoint(ck)
    assert again.tag == stored.tag and not created_again
    assert "svc-unit-a" in [m.tag.name for m in stored_models()]

    bad = tiny_checkpoint(tmp_path / "bad", name="svc-unit-bad")
    (bad / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="weights"):
        import_checkpoint(bad)


def _batcher_run(model, jobs, **kw):
    """Submit ``jobs`` [(key, x)] concurrently; returns (outcomes, batch log, finish order)."""
    log, order = [], []

    async def main():
        b = MicroBatcher(model, on_solve=lambda key, rows, stats: log.append(rows), **kw)

        async def one(i, key, x):
            out = await b.submit(key, x)
            order.append(i)
            return out
        try:
            return await asyncio.gather(*(one(i, k, x) for i, (k, x) in enumerate(jobs)))
        finally:
            b.close()
    return asyncio.run(main()), log, order


def test_a_chunked_request_shares_one_wall_clock_budget():
    """timeout_s bounds the request, not each chunk: chunks that each fit the budget but add up
    past it end the request TIMEOUT (504), as one solve running past it would."""
    import time
    model = tiny_model(torch.float32, steps=8)
    x = torch.randn(2048, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    chunk_s = float("inf")
    for _ in range(3):  # the first solve also builds the engine's layers: time the later ones
        t = time.perf_counter()
        solve(model, SolveKey("sample", True, model.spec.solver), x[:64])
        chunk_s = min(chunk_s, time.perf_counter() - t)
    budget = model.spec.solver.model_copy(update={"max_wall_s": 4 * chunk_s})  # 32 chunks: ~8x the budget
    outs, log, _ = _batcher_run(model, [(SolveKey("sample", True, budget), x)], max_batch_rows=64, slice_rows=64,
                                solver_threads=1)
    out = outs[0]
    assert out.stats.status == Status.TIMEOUT and "wall-clock budget" in out.stats.message, out.stats
    assert out.stats.wall_s > budget.max_wall_s and sum(log) < 2048  # stopped early, not after every chunk
    # the same rows without a tight budget: every chunk solved, success
    outs, log, _ = _batcher_run(model, [(SolveKey("sample", True, model.spec.solver), x)], max_batch_rows=64,
                                slice_rows=64, solver_threads=1)
    assert outs[0].stats.ok and sum(log) == 2048


def test_batched_rows_equal_solo_solves_and_small_requests_are_not_starved():
    model = tiny_model(torch.float32, steps=8)
    key_s = SolveKey("sample", True, model.spec.solver)
    key_l = SolveKey("logprob", True, model.spec.solver)
    gen = torch.Generator().manual_seed(3)
    big = torch.randn(700, 2, generator=gen, dtype=torch.float64)
    smalls = [torch.randn(k, 2, generator=gen, dtype=torch.float64) for k in (1, 3, 2)]
    jobs = [(key_s, big)] + [(key_s, z) for z in smalls] + [(key_l, smalls[0])]
    # one solver thread: the order of answers follows the order of batches (with two, a loaded
    # machine may finish the big request's later batches before the first one's thread is scheduled)
    outs, log, order = _batcher_run(model, jobs, max_batch_rows=256, slice_rows=32, solver_threads=1)
    for (key, x), out in zip(jobs, outs):
        ref = solve(model, key, x)
        assert out.stats.ok and out.x.shape == x.shape
        torch.testing.assert_close(out.x, ref.x.double(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.logp, ref.logp.double(), rtol=1e-5, atol=1e-5)
    assert max(log) <= 256 and sum(log) == 700 + 6 + 1
    # the big request (submitted first) is chunked; the small ones finish before it
    assert order.index(0) > max(order.index(i) for i in (1, 2, 3))
    assert len(log) < len(jobs) + 700 // 256  # requests were merged


def test_failed_batch_reports_its_status():
    model = tiny_model(torch.float32, steps=8)
    solver = model.spec.solver.model_copy(update={"max_steps": 3})
    outs, _, _ = _batcher_run(model, [(SolveKey("sample", False, solver), torch.zeros(4, 2, dtype=torch.float64))],
                              max_batch_rows=16, slice_rows=4)
    assert outs[0].stats.status == Status.MAX_STEPS and "3 steps" in outs[0].stats.message
