"""Every shipped zoo model carries calibrated RK4 steps, serves with them, and meets its
calibration's accuracy on fresh points against the tight float64 solution."""
from __future__ import annotations

import pytest
import torch

from models import calibration
from models.checkpoint import load_model
from models.zoo import ZOO_DIR, available

ZOO = available()
FRESH_POINTS = 32


@pytest.mark.skipif(not ZOO, reason="no zoo model trained yet")
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_is_calibrated_and_meets_its_tolerance(name):
    model = load_model(ZOO_DIR / name)
    rec = model.spec.calibration
    assert rec is not None, f"{name}: no calibration record; run `knet calibrate {name} --write`"
    assert model.spec.solver.method == "rk4"
    assert model.spec.solver.steps_per_layer == rec.steps_per_layer, f"{name}: serving steps differ from calibration"
    assert len(rec.steps_per_layer) == len(model.spec.layers)
    assert rec.error_x <= rec.target_x and rec.error_logp <= rec.target_logp
    assert rec.single_requests > 0, f"{name}: calibration predates single-request targets; recalibrate"
    assert rec.single_error_x <= rec.single_target_x and rec.single_error_logp <= rec.single_target_logp
    if not model.spec.bijective:
        return
    z = torch.randn(FRESH_POINTS, model.data_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(123))
    ref = calibration.tight_reference(model, z)
    ex, el = calibration.solve_errors(model, ref, model.spec.solver)
    # fresh points: within the published method's own error on single requests, its
    # tightest (the calibration kept a factor `safety` below it)
    bar_x, bar_l = rec.single_target_x / rec.safety, rec.single_target_logp / rec.safety
    assert ex <= bar_x, f"{name}: x error {ex:.2e} above {bar_x:.2e}"
    assert el <= bar_l, f"{name}: log p error {el:.2e} above {bar_l:.2e}"
