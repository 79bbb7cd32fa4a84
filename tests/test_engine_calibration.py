"""Calibration finds steps that meet the published method's accuracy; `knet calibrate`
stores them; `knet bench --json` produces the documented rows."""
from __future__ import annotations

import json

import torch
from helpers import tiny_checkpoint, tiny_model

from knet.cli import main
from models import calibration
from models.checkpoint import load_model
from models.config import SolverConfig


def test_calibrated_steps_meet_target_on_fresh_points():
    model = tiny_model(repeat=3, init_scale=1.0).float()
    rec = calibration.calibrate(model, points=64, single_requests=4)
    assert rec.error_x <= rec.target_x and rec.error_logp <= rec.target_logp
    assert rec.single_requests == 4 and rec.single_error_x <= rec.single_target_x
    assert rec.single_error_logp <= rec.single_target_logp
    assert len(rec.steps_per_layer) == 2
    # on points it never saw, the engine stays within the published method's error
    ref = calibration.tight_reference(model, torch.randn(64, 2, dtype=torch.float64,
                                                         generator=torch.Generator().manual_seed(9)))
    ex, el = calibration.solve_errors(model, ref, SolverConfig(method="rk4", steps_per_layer=rec.steps_per_layer))
    assert ex <= rec.baseline_error_x and el <= rec.baseline_error_logp
    # fewer steps are less accurate (the error really depends on the calibrated counts)
    fewer = tuple(max(s // 2, 1) for s in rec.steps_per_layer)
    if fewer != rec.steps_per_layer:
        fx, fl = calibration.solve_errors(model, ref, SolverConfig(method="rk4", steps_per_layer=fewer))
        assert fx > ex or fl > el


def test_tolerance_cap_tightens_steps():
    model = tiny_model(repeat=3, init_scale=1.0).float()
    loose = calibration.calibrate(model, points=32, single_requests=0)
    tight = calibration.calibrate(model, points=32, single_requests=0, tolerance_cap=1e-4)
    assert sum(tight.steps_per_layer) >= sum(loose.steps_per_layer)
    assert tight.error_x <= 1e-4 and tight.error_logp <= 1e-4


def test_cli_calibrate_write_stores_record_and_steps(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "m", repeat=3, init_scale=1.0)
    assert main(["calibrate", str(ck), "--points", "32", "--write"]) == 0
    out = json.loads(capsys.readouterr().out)
    model = load_model(ck)
    assert model.spec.calibration is not None
    assert tuple(out["steps_per_layer"]) == model.spec.calibration.steps_per_layer
    assert model.spec.solver.method == "rk4"
    assert model.spec.solver.steps_per_layer == model.spec.calibration.steps_per_layer
    res = model.sample(3, torch.Generator().manual_seed(0))
    assert res.stats.nfe == 4 * sum(model.spec.calibration.steps_per_layer)


def test_cli_calibrate_bad_model_is_a_clean_error(capsys):
    assert main(["calibrate", "/nonexistent/model"]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_bench_json_rows(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "m", repeat=2)
    assert main(["bench", "--models", str(ck), "--batches", "1", "4", "--json",
                 "--baseline-budget-s", "0", "--ours-budget-s", "0", "--csv", str(tmp_path / "b.csv")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["environment"]["threads"] >= 1
    rows = doc["rows"]
    assert {(r["kind"], r["batch"]) for r in rows} == {("sample", 1), ("sample", 4), ("logprob", 1), ("logprob", 4)}
    for r in rows:
        for key in ("model", "kind", "batch", "baseline_ms", "ours_ms", "ratio", "baseline_error", "ours_error"):
            assert key in r
        assert r["ratio"] == r["baseline_ms"] / r["ours_ms"]
        assert 0 <= r["ours_error"] < 0.1 and 0 <= r["baseline_error"] < 0.1
    assert (tmp_path / "b.csv").read_text().startswith("model,kind,batch")
