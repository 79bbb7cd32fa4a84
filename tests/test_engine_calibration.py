"""Calibration finds steps that meet the published method's accuracy; `knet calibrate`
stores them; `knet bench --json` produces the documented rows."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import tiny_checkpoint, tiny_model

from knet.cli import main
from models import calibration
from models.checkpoint import load_model
from models.config import SolverConfig

# An independent check of `calibrate`: a tighter reference than the calibration's own, solved
# through the generic model (all layers in one adaptive solve, not models.calibration's
# layer-by-layer reference), and the published method run here, not through calibration.
TIGHT = SolverConfig(method="dopri5", rtol=1e-11, atol=1e-11, max_steps=10**6, max_wall_s=600)
PUBLISHED = SolverConfig(method="dopri5", rtol=1e-4, atol=1e-4, max_steps=10**6, max_wall_s=600)


def generic_copy(model, dtype):
    m = copy.deepcopy(model).to(dtype)
    m.engine_enabled = False
    return m


def truth(model, z):
    """x (n, d) and log q(x) (n,) from z, float64, tight."""
    res = generic_copy(model, torch.float64).sample(0, z=z.double(), solver=TIGHT)
    return res.x, res.logp


def errors(model, z, x, logq, solver, one_by_one=False):
    """Max |error| of x (sampling) and z (log_prob) and of log q / log p, as documented for
    the calibration record, of ``model`` in its own dtype with ``solver``."""
    if one_by_one:
        per_row = [errors(model, z[i:i + 1], x[i:i + 1], logq[i:i + 1], solver) for i in range(len(z))]
        return max(e[0] for e in per_row), max(e[1] for e in per_row)
    dt = model.dtype
    with torch.no_grad():
        s = model.sample(0, z=z.to(dt), solver=solver)
        lp = model.log_prob(x.to(dt), solver=solver)
    ex = max(float((s.x.double() - x).abs().max()), float((lp.x.double() - z).abs().max()))
    el = max(float((s.logp.double() - logq).abs().max()), float((lp.logp.double() - logq).abs().max()))
    return ex, el


def close(got: float, want: float, rel: float = 1e-3) -> bool:
    return abs(got - want) <= rel * want + 1e-7  # the two references differ by ~1e-9


def test_calibration_record_holds_against_an_independent_reference():
    model = tiny_model(repeat=3, init_scale=1.0).float()
    rec = calibration.calibrate(model, points=64, single_requests=4, seed=5)
    assert len(rec.steps_per_layer) == 2 and rec.single_requests == 4
    ours = SolverConfig(method="rk4", steps_per_layer=rec.steps_per_layer)
    # the calibration's points: its documented draw of `points` latents from `seed`
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x, logq = truth(model, z)
    published = generic_copy(model, torch.float32)
    bx, bl = errors(published, z, x, logq, PUBLISHED)
    sx, sl = errors(published, z[:4], x[:4], logq[:4], PUBLISHED, one_by_one=True)
    ex, el = errors(model, z, x, logq, ours)
    # the record's figures are what an independent measurement gives (dopri5's error moves by
    # a few % when its float32 input moves by one ulp, as log p's input x does between the
    # two references; fixed-step RK4's does not) …
    for got, want in ((rec.baseline_error_x, bx), (rec.baseline_error_logp, bl), (rec.baseline_single_error_x, sx),
                      (rec.baseline_single_error_logp, sl)):
        assert close(got, want, rel=0.1), (got, want)
    assert close(rec.error_x, ex) and close(rec.error_logp, el), (rec.error_x, ex, rec.error_logp, el)
    # … and ours meets safety × the published method's error, on the batch and as single requests
    assert ex <= rec.safety * bx + 1e-7 and el <= rec.safety * bl + 1e-7
    ex1, el1 = errors(model, z[:4], x[:4], logq[:4], ours, one_by_one=True)  # served by the NumPy path
    assert ex1 <= rec.safety * sx + 1e-5 and el1 <= rec.safety * sl + 1e-5
    # on points it never saw, ours is at least as accurate as the published method
    fresh = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    fx, flq = truth(model, fresh)
    ours_fresh = errors(model, fresh, fx, flq, ours)
    published_fresh = errors(published, fresh, fx, flq, PUBLISHED)
    assert ours_fresh[0] <= published_fresh[0] and ours_fresh[1] <= published_fresh[1]
    # fewer steps are less accurate (the error really depends on the calibrated counts)
    fewer = tuple(max(s // 2, 1) for s in rec.steps_per_layer)
    assert fewer != rec.steps_per_layer
    fewer_errs = errors(model, z, x, logq, SolverConfig(method="rk4", steps_per_layer=fewer))
    assert fewer_errs[0] > ex or fewer_errs[1] > el


def test_tolerance_cap_tightens_steps():
    model = tiny_model(repeat=3, init_scale=1.0).float()
    loose = calibration.calibrate(model, points=32, single_requests=0)
    tight = calibration.calibrate(model, points=32, single_requests=0, tolerance_cap=1e-4)
    assert sum(tight.steps_per_layer) > sum(loose.steps_per_layer)
    z = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, logq = truth(model, z)
    loose_errs = errors(model, z, x, logq, SolverConfig(method="rk4", steps_per_layer=loose.steps_per_layer))
    tight_errs = errors(model, z, x, logq, SolverConfig(method="rk4", steps_per_layer=tight.steps_per_layer))
    assert max(tight_errs) <= 1e-4 + 1e-7 < max(loose_errs)  # the cap binds, and is met


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


def test_cli_bench_text_prints_the_table_once_and_progress_apart(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "m", repeat=2)
    assert main(["bench", "--models", str(ck), "--batches", "4", "--baseline-budget-s", "0",
                 "--ours-budget-s", "0"]) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if line.startswith(f"| {ck} |")]
    assert sorted(r.split(" | ")[1] for r in rows) == ["logprob", "sample"]  # each row once
    assert out.splitlines()[0].startswith("| model | kind |")  # stdout starts with the table
    assert "environment:" in err and sum(line.startswith(f"| {ck} |") for line in err.splitlines()) == 2


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
        assert r["ort_ms"] > 0 and r["ours_over_ort"] == r["ours_ms"] / r["ort_ms"]  # the same graph in ORT
        peak = doc["environment"]["peak_gflops_float32_fma"]  # rounded to 0.01 in the environment
        assert r["ours_gflops"] > 0 and r["peak_fraction"] == pytest.approx(r["ours_gflops"] / peak, rel=1e-2)
        # the bound (FMA peak + tanh rate) cannot be beaten: a fraction above 1 would be a wrong count
        assert 0 < r["bound_fraction"] <= 1.0
        # the XLA peer (benchmarks/xla.py), checked against ours before it was timed
        assert r["xla_ms"] > 0 and r["ours_over_xla"] == r["ours_ms"] / r["xla_ms"] and r["xla_form"] in ("dense",
                                                                                                         "gather")
    assert (tmp_path / "b.csv").read_text().startswith("model,kind,batch")


def test_fewest_steps_meets_the_budget_with_the_fewest_ladder_steps():
    calls: list[int] = []

    def rk4_like(steps):  # fourth order, no floor
        calls.append(steps)
        return 1.0 / steps**4
    assert calibration.fewest_steps(rk4_like, 1e-3) == (6, False)  # 6⁻⁴ = 7.7e-4; 5⁻⁴ = 1.6e-3
    assert len(calls) == len(set(calls)) <= 8  # climb 1..8, bisect (4, 8]: never near the top
    assert calibration.fewest_steps(rk4_like, 1.0) == (1, False)


def test_fewest_steps_stops_at_a_rounding_floor():
    calls: list[int] = []

    def floored(steps):  # falls as steps⁻⁴ down to 1e-3, then stays (float32 rounding)
        calls.append(steps)
        return max(1.0 / steps**4, 1e-3)
    # two doublings without progress (8 → 16 → 32) reveal the floor; the fewest steps within 2× of
    # it: 5⁻⁴ = 1.6e-3 ≤ 2e-3 < 4⁻⁴
    assert calibration.fewest_steps(floored, 1e-6) == (5, True)
    assert max(calls) == 32  # the ladder's top (256) is never tried
    # unstable (non-finite) at few steps is not a floor
    unstable = {1: float("nan"), 2: float("nan"), 4: float("inf")}
    assert calibration.fewest_steps(lambda s: unstable.get(s, 1.0 / s**4), 1.2e-4) == (10, False)  # 9⁻⁴ = 1.5e-4
    # slow convergence is no floor, nor is a slow start; neither meets the budget: the top, and
    # the end-to-end check decides
    top = calibration.STEP_LADDER[-1]
    assert calibration.fewest_steps(lambda s: 1.0 / s**0.5, 1e-6) == (top, False)
    slow_start = {1: 1.0, 2: 0.9, 4: 0.8, 8: 0.7}
    assert calibration.fewest_steps(lambda s: slow_start.get(s, 1e-2 / s**4), 1e-8) == (32, False)
    # floors can be turned off (calibrate's last resort when the floors were not enough)
    assert calibration.fewest_steps(floored, 1e-6, floors=False) == (top, False)


def test_targets_below_the_float32_floor_fail_fast_naming_it():
    model = tiny_model(torch.float32, steps=8)
    with pytest.raises(ValueError, match="rounding floor"):
        calibration.calibrate(model, points=16, single_requests=0, tolerance_cap=1e-12)


def test_nominal_flops_count_devices_and_nodes_per_evaluation():
    from benchmarks.roofline import FLOPS_PER_DEVICE, FLOPS_PER_NODE, nominal_flops
    model = tiny_model(torch.float32, steps=8)
    layers = model.spec.layers
    want = sum(4 * 3 * 5 * (FLOPS_PER_DEVICE * len(la.edges) + FLOPS_PER_NODE * la.nodes) for la in layers)
    assert nominal_flops(model, [3] * len(layers), 5) == want
    assert nominal_flops(model, [6] * len(layers), 10) == 4 * want  # linear in steps and rows
