"""The accuracy contract (models/accuracy.py): tiers searched on some inputs hold on others, the
choice of tier for a tolerance, the verified region, and the command line's --tolerance."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_checkpoint, tiny_model

from knet.cli import main
from models.accuracy import calibrate_tiers, choose_tier, in_region, tier_solver
from models.checkpoint import load_model
from models.config import AccuracyTier, SolverConfig
from models.data import get_task
from models.zoo import ZOO_DIR

EXACT = SolverConfig(method="dopri5", rtol=1e-11, atol=1e-11, max_steps=10**6, max_wall_s=600)


def _tier(tol, steps, err, low=(-1.0, -1.0), high=(1.0, 1.0), radius=3.0):
    return AccuracyTier(tolerance_nats=tol, steps_per_layer=steps, max_error_logp=err, p999_error_logp=err,
                        max_error_x=err, p999_error_x=err, verified_points=10, region_low=low, region_high=high,
                        latent_radius=radius)


def test_choose_tier_takes_the_fewest_steps_within_the_tolerance():
    tiers = (_tier(1e-2, (3, 3), 8e-3), _tier(1e-3, (6, 7), 9e-4), _tier(1e-4, (20, 20), 1.3e-4))
    assert choose_tier(tiers, None).tolerance_nats == 1e-3  # the default tier
    assert choose_tier(tiers, 0.05).steps_per_layer == (3, 3)
    assert choose_tier(tiers, 1e-3).steps_per_layer == (6, 7)
    assert choose_tier(tiers, 2e-4).steps_per_layer == (20, 20)  # verified 1.3e-4: within 2e-4
    with pytest.raises(ValueError, match=r"tolerance 0.0001 nats; the most accurate is verified to 0.00013"):
        choose_tier(tiers, 1e-4)  # its own tolerance, but verified above it: the bound is what was measured
    assert choose_tier((), None) is None
    # no 1e-3 tier (a 784-D model has only a 1-nat one): the most accurate verified tier answers
    assert choose_tier((_tier(1.0, (9, 4), 0.6), _tier(3.0, (4, 2), 2.1)), None).steps_per_layer == (9, 4)
    with pytest.raises(ValueError, match="no verified accuracy tiers"):
        choose_tier((), 1e-3)
    solver = tier_solver(SolverConfig(method="dopri5", max_wall_s=3.0), tiers[1])
    assert (solver.method, solver.steps_per_layer, solver.max_wall_s) == ("rk4", (6, 7), 3.0)


def test_verified_region():
    t = _tier(1e-3, (4,), 1e-4)
    assert in_region(t, points=torch.tensor([[0.5, -1.0], [1.0, 0.0]]))
    assert not in_region(t, points=torch.tensor([[0.5, -1.01]]))
    assert in_region(t, latents=torch.tensor([[2.9, -3.0]])) and not in_region(t, latents=torch.tensor([[3.1, 0]]))
    # many rows take the tensor path: same answers
    inside = torch.rand(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    assert in_region(t, points=inside) and not in_region(t, points=torch.cat([inside, torch.tensor([[0.0, 1.5]])]))
    assert in_region(t, latents=inside * 3) and not in_region(t, latents=torch.cat([inside, torch.tensor([[0, -3.2]])]))


def _exact_errors(model, solver, z, x):
    """Max |error| of log p and of x of ``solver`` against a 1e-11 dopri5 float64 solve, computed here
    through the generic path (not models.calibration's reference)."""
    exact = model.double()
    with torch.no_grad():
        s_ref, l_ref = exact.sample(0, z=z, solver=EXACT), exact.log_prob(x, EXACT)
        m = model.float()
        s, lp = m.sample(0, z=z.float(), solver=solver), m.log_prob(x.float(), solver)
    ex = max(float((s.x.double() - s_ref.x).abs().max()), float((lp.x.double() - l_ref.x).abs().max()))
    el = max(float((s.logp.double() - s_ref.logp).abs().max()), float((lp.logp.double() - l_ref.logp).abs().max()))
    return ex, el


def test_tiers_hold_on_inputs_the_search_did_not_see():
    model = tiny_model(torch.float32, steps=8, repeat=3, init_scale=1.0)
    tiers, missing = calibrate_tiers(model, get_task("twomoon"), (1e-2, 1e-3), points=64, seed=0)
    assert [t.tolerance_nats for t in tiers] == [1e-2, 1e-3] and not missing
    assert sum(tiers[0].steps_per_layer) < sum(tiers[1].steps_per_layer)
    gen = torch.Generator().manual_seed(123)  # fresh: neither the search's seed nor the verification's
    z = torch.randn(200, 2, generator=gen, dtype=torch.float64)
    x = (torch.rand(200, 2, generator=gen, dtype=torch.float64) * 2 - 1) * 2.0
    for tier in tiers:
        ex, el = _exact_errors(model, tier_solver(model.spec.solver, tier), z, x)
        assert el <= 1.5 * max(tier.tolerance_nats, tier.max_error_logp), (tier, el)
        assert ex <= 1.5 * max(tier.tolerance_nats, tier.max_error_x), (tier, ex)


def test_the_zoo_twomoon_tiers_hold_on_fresh_points():
    model = load_model(ZOO_DIR / "twomoon", torch.float32)
    tiers = model.spec.accuracy_tiers
    assert [t.tolerance_nats for t in tiers][:2] == [1e-2, 1e-3]
    gen = torch.Generator().manual_seed(321)
    z = torch.randn(256, 2, generator=gen, dtype=torch.float64)
    x = get_task("twomoon").sample(256, 321)
    for tier in tiers:
        ex, el = _exact_errors(model, tier_solver(model.spec.solver, tier), z, x)
        assert el <= 1.5 * max(tier.tolerance_nats, tier.max_error_logp), (tier.tolerance_nats, el)


def test_cli_tolerance_picks_a_tier_and_reports_its_bound(tmp_path, capsys):
    ck = str(tiny_checkpoint(tmp_path / "m", steps=8, repeat=3, init_scale=1.0))
    assert main(["calibrate", ck, "--tiers", "1e-2", "1e-3", "--points", "64", "--write"]) == 0
    written = json.loads(capsys.readouterr().out)
    tiers = {t["tolerance_nats"]: t for t in written["tiers"]}
    assert main(["sample", ck, "-n", "4", "--tolerance", "0.05"]) == 0
    loose = json.loads(capsys.readouterr().out)
    assert loose["error_bound"] == tiers[1e-2]["max_error_logp"] and loose["in_verified_region"] is True
    assert loose["nfe"] == 4 * sum(tiers[1e-2]["steps_per_layer"])
    assert main(["sample", ck, "-n", "4"]) == 0  # no tolerance: the 1e-3 tier
    assert json.loads(capsys.readouterr().out)["error_bound"] == tiers[1e-3]["max_error_logp"]
    (tmp_path / "p.json").write_text("[[0.1, 0.2], [40.0, 0.0]]")
    assert main(["logprob", ck, "--points", str(tmp_path / "p.json")]) == 0
    assert json.loads(capsys.readouterr().out)["in_verified_region"] is False  # (40, 0) is far outside
    assert main(["sample", ck, "--tolerance", "1e-9"]) == 2
    assert "no accuracy tier meets tolerance 1e-09" in capsys.readouterr().err
    assert main(["sample", ck, "-n", "1", "--steps", "3"]) == 0  # solver flags: no tier, no bound
    out = json.loads(capsys.readouterr().out)
    assert out["error_bound"] is None and out["nfe"] == 4 * 3 * 2
    # the benchmark per tier: ours at the published accuracy and at each tier, against one baseline
    assert main(["bench", "--models", ck, "--batches", "4", "--json", "--tiers", "0.01", "0.001",
                 "--baseline-budget-s", "0", "--ours-budget-s", "0", "--kinds", "logprob",
                 "--plot", str(tmp_path / "ratios.png")]) == 0
    assert (tmp_path / "ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["setting"] for r in rows] == ["published accuracy", "tier 0.01", "tier 0.001"]
    assert "calibrated in this run" in rows[0]["source"]  # no calibration record: steps matched to the published
    for row, tol in zip(rows[1:], (1e-2, 1e-3)):
        assert row["steps_per_layer"] == ",".join(map(str, tiers[tol]["steps_per_layer"]))
    for row, tol in zip(rows[1:], (1e-2, 1e-3)):
        assert row["ours_nfe"] == 4 * sum(tiers[tol]["steps_per_layer"])
        assert row["baseline_ms"] == rows[0]["baseline_ms"]  # one baseline timing for every setting
        assert row["ours_error_logp"] <= 2 * tiers[tol]["max_error_logp"]
    assert main(["bench", "--models", ck, "--tiers", "0.005"]) == 2
    assert "no accuracy tier 0.005" in capsys.readouterr().err
