"""What the zoo promises, checked on the shipped checkpoints: densities that integrate to one,
a closed-form divergence equal to autograd's on a trained circuit, sampling and scoring that
invert each other, and figures held against the published ones, written down here (not read
from files the code wrote)."""
from __future__ import annotations

import json

import pytest
import torch

from models.checkpoint import EVAL_FILE, load_model
from models.circuit import autograd_divergence
from models.zoo import PUBLISHED_NATS, ZOO_DIR

# the KirchhoffNet paper's figures for its released checkpoints (nats): test NLL, and E[log q + U]
PAPER = {"twomoon": 1.020, "circle": 0.833, "swissroll": 2.693, "2spirals": 2.677, "pinwheel": 2.357,
         "8gaussians": 2.858, "potential1": -1.873}
# how far each zoo model may sit above its paper figure today: 0 where it beats it, one standard
# error where it meets the criterion by less (circle: 0.841 ± 0.009 against 0.833), two
# where it matches within noise (twomoon, 8gaussians), so a regression fails
ALLOWED_ABOVE = {"twomoon": 0.016, "swissroll": 0.0, "8gaussians": 0.022, "potential1": 0.0,
                 "pinwheel": 0.0, "circle": 0.009, "2spirals": 0.0}


@pytest.mark.parametrize(("name", "half_width"), [("twomoon", 3.0), ("8gaussians", 4.5)])
def test_the_density_integrates_to_one(name, half_width):
    model = load_model(ZOO_DIR / name, torch.float32)
    n = 300
    h = 2 * half_width / n
    axis = torch.linspace(-half_width + h / 2, half_width - h / 2, n, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    logp = torch.cat([model.log_prob(chunk).logp.double() for chunk in points.split(4096)])
    assert float(torch.exp(logp).sum() * h * h) == pytest.approx(1.0, abs=2e-3)


def test_closed_form_divergence_equals_autograd_on_a_trained_circuit():
    model = load_model(ZOO_DIR / "twomoon", torch.float64)
    v = torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 1.5
    for layer in model.layers:
        for form in ("dense", "gather"):
            op = layer.operator(form)
            _, div = op.rhs_and_divergence(v)
            torch.testing.assert_close(div, autograd_divergence(op, v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["twomoon", "8gaussians", "digits"])
def test_sampling_then_scoring_recovers_the_latent_within_the_calibrated_error(name):
    model = load_model(ZOO_DIR / name, torch.float32)
    record = model.spec.calibration
    z = torch.randn(64, model.data_dim, generator=torch.Generator().manual_seed(9))
    forward = model.sample(0, z=z)
    back = model.log_prob(forward.x)
    # each direction is within the calibrated x target of the exact flow, so the round trip is
    # within twice it; the two log-densities likewise within twice the log p target
    assert float((back.x - z).abs().max()) <= 2 * record.target_x
    assert float((back.logp - forward.logp).abs().max()) <= 2 * record.target_logp


def test_published_figures_and_the_zoo_against_them():
    assert PUBLISHED_NATS == PAPER
    for name, published in PAPER.items():
        recorded = json.loads((ZOO_DIR / name / EVAL_FILE).read_text())
        ours = recorded["nll"] if "nll" in recorded else recorded["elbo"]
        assert ours <= published + ALLOWED_ABOVE[name], (name, ours, published)


def test_every_zoo_model_is_what_its_configs_train():
    """The shipped config of each model is one of configs/ (its last training stage), the first
    stage configs/NAME.yaml builds the same circuit, and every stage eval.json lists exists:
    a config edited without retraining (or the reverse) fails here."""
    import yaml
    configs = ZOO_DIR.parent.parent / "configs"
    for directory in sorted(p for p in ZOO_DIR.iterdir() if (p / "config.yaml").is_file()):
        shipped = yaml.safe_load((directory / "config.yaml").read_text())
        stages = [configs / f"{directory.name}{suffix}.yaml" for suffix in ("", "-finetune", "-finetune2")]
        assert any(p.is_file() and yaml.safe_load(p.read_text()) == shipped for p in stages), directory.name
        first = yaml.safe_load((configs / f"{directory.name}.yaml").read_text())
        assert first["architecture"] == shipped["architecture"], directory.name
        for stage in json.loads((directory / EVAL_FILE).read_text()).get("stages", []):
            assert (configs.parent / stage.split(" ")[0]).is_file(), (directory.name, stage)
