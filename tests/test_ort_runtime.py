"""onnxruntime standing in for the engine where measured faster (export/ort_runtime.py): the
measured table, equal answers, the same step and time bounds, and the service path that uses it."""
from __future__ import annotations

import dataclasses

import torch
from helpers import tiny_model

from export.ort_runtime import PARITY_RTOL, OrtRuntime
from models.solvers import Status
from service.batching import SolveKey, solve, solve_to_cpu


def _runtime(use_ort: bool = True):
    model = tiny_model(torch.float32, steps=8)
    runtime = OrtRuntime.measure(model, model.spec.solver, batches=(1, 16), repeats=2)
    # decide by hand where the test needs a path, whatever this machine measured
    runtime.table = [dataclasses.replace(m, use_ort=use_ort) for m in runtime.table]
    return model, runtime


def test_measure_times_both_runtimes_at_every_probe_size():
    model, runtime = _runtime()
    assert [(m.direction, m.batch) for m in runtime.table] == [("sample", 1), ("sample", 16), ("logprob", 1),
                                                                ("logprob", 16)]
    assert all(m.ort_s > 0 and m.engine_s > 0 and m.parity <= PARITY_RTOL for m in runtime.table)
    assert runtime.steps == (8,) * len(model.spec.layers)
    rows = runtime.describe()
    assert {r["answers"] for r in rows} == {"onnxruntime"} and rows[0]["batch"] == 1
    # a request uses the smallest probe at or above its rows, the largest beyond
    assert runtime.choice("sample", 5).batch == 16 and runtime.choice("logprob", 500).batch == 16
    assert OrtRuntime.measure(model.double(), model.spec.solver) is None  # float64: not the graph's dtype


def test_service_path_answers_with_onnxruntime_equal_to_the_engine():
    model, runtime = _runtime()
    z = torch.randn(12, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for key in (SolveKey("sample", True, model.spec.solver), SolveKey("logprob", True, model.spec.solver)):
        got = solve_to_cpu(model, key, z, runtime)
        want = solve(model, key, z)
        assert got.stats.ok and got.stats.path == "onnxruntime" and got.stats.nfe == want.stats.nfe
        for g, w in ((got.x, want.x), (got.logp, want.logp)):
            assert float(((g - w.double()).abs() / w.double().abs().clamp(min=1)).max()) <= 1e-5
    # sampling without log q is not what was measured: the engine answers
    plain = solve_to_cpu(model, SolveKey("sample", False, model.spec.solver), z, runtime)
    assert plain.logp is None and getattr(plain.stats, "path", "") != "onnxruntime"


def test_the_engine_answers_where_onnxruntime_lost_or_cannot_keep_the_bounds():
    model, runtime = _runtime()
    solver = model.spec.solver
    assert runtime.serves("sample", solver, 4)
    assert not _runtime(use_ort=False)[1].serves("sample", solver, 4)  # measured slower
    assert not runtime.serves("sample", solver.model_copy(update={"steps_per_layer": 9}), 4)  # other steps
    assert not runtime.serves("sample", solver.model_copy(update={"max_steps": 3}), 4)  # over the step budget
    assert not runtime.serves("sample", solver.model_copy(update={"max_wall_s": 1e-7}), 4)  # predicted too slow
    key = SolveKey("sample", True, solver.model_copy(update={"max_steps": 3}))
    out = solve_to_cpu(model, key, torch.zeros(2, 2, dtype=torch.float64), runtime)
    assert out.stats.status == Status.MAX_STEPS  # the engine's own report


def test_an_overrun_is_reported_and_its_answer_withheld_by_status():
    model, runtime = _runtime()
    x = torch.randn(4, 2)
    _, _, stats = runtime.run("sample", x, model.spec.solver.model_copy(update={"max_wall_s": 1e-9}))
    assert stats.status == Status.TIMEOUT and "wall-clock" in stats.message
    _, _, stats = runtime.run("sample", torch.full((2, 2), float("nan")), model.spec.solver)
    assert stats.status == Status.NONFINITE


def test_probing_stops_after_a_slow_probe(monkeypatch):
    from export import ort_runtime
    monkeypatch.setattr(ort_runtime, "PROBE_MAX_S", 0.0)  # every probe counts as slow
    model = tiny_model(torch.float32, steps=8)
    runtime = OrtRuntime.measure(model, model.spec.solver, batches=(1, 16, 64), repeats=1)
    assert [(m.direction, m.batch) for m in runtime.table] == [("sample", 1), ("logprob", 1)]
    assert runtime.choice("sample", 1000).batch == 1  # larger requests use the last row measured


def test_cli_runs_either_runtime_with_equal_answers(tmp_path, capsys):
    import json

    from helpers import tiny_checkpoint

    from knet.cli import main
    ck = str(tiny_checkpoint(tmp_path / "m", steps=8))
    answers = {}
    for runtime in ("engine", "onnxruntime"):
        assert main(["sample", ck, "-n", "6", "--seed", "2", "--runtime", runtime]) == 0
        answers[runtime] = json.loads(capsys.readouterr().out)
    for key in ("samples", "logprob"):
        a, b = (torch.tensor(answers[r][key], dtype=torch.float64) for r in ("engine", "onnxruntime"))
        assert float(((a - b).abs() / a.abs().clamp(min=1)).max()) <= 1e-5
    assert answers["engine"]["nfe"] == answers["onnxruntime"]["nfe"]
    # each names the code that solved: the compiled engine path for a float32 2-node circuit
    assert (answers["engine"]["path"], answers["onnxruntime"]["path"]) == ("native-dense", "onnxruntime")
    (tmp_path / "p.json").write_text(json.dumps(answers["engine"]["samples"]))
    logps = []
    for runtime in ("engine", "onnxruntime"):
        assert main(["logprob", ck, "--points", str(tmp_path / "p.json"), "--runtime", runtime]) == 0
        logps.append(torch.tensor(json.loads(capsys.readouterr().out)["logprob"], dtype=torch.float64))
    assert float(((logps[0] - logps[1]).abs() / logps[0].abs().clamp(min=1)).max()) <= 1e-5
    assert main(["sample", ck, "--runtime", "onnxruntime", "--method", "dopri5"]) == 2
    assert "RK4 graph" in capsys.readouterr().err
