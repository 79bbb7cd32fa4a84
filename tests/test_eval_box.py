"""A defined score for potential2, whose exp(−U) does not normalise (models/evaluate.py): the box
normaliser against its closed form, the box KL against known KLs, and `knet eval --write`
keeping the training record."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from scipy.integrate import quad
from scipy.special import erf

from knet.cli import main
from models.data import Task, get_task
from models.evaluate import box_kl, box_log_normaliser
from models.zoo import ZOO_DIR


def test_potential2_box_normaliser_equals_its_closed_form():
    # ∫ dz₂ over [−4, 4] of exp(−½((z₂ − s)/0.4)²) = 0.4·√(π/2)·[erf((4 − s)/(0.4√2)) − erf((−4 − s)/(0.4√2))]
    def column(z1):
        s = math.sin(math.pi * z1 / 2)
        w = 0.4 * math.sqrt(2)
        return 0.4 * math.sqrt(math.pi / 2) * (erf((4 - s) / w) - erf((-4 - s) / w))
    want = math.log(quad(column, -4, 4, limit=200)[0])
    assert box_log_normaliser(get_task("potential2")) == pytest.approx(want, abs=1e-6)
    assert math.exp(want) == pytest.approx(8.02, abs=0.01)  # ≈ 8 × 0.4√(2π)


def _gauss_task(half_width: float) -> Task:
    return Task("gauss", "energy", 2, energy=lambda z: 0.5 * (z * z).sum(1), box_half_width=half_width)


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0])
def test_box_kl_recovers_the_kl_of_shifted_gaussians(shift):
    """q = N(μ, I), p ∝ exp(−|z|²/2): KL = |μ|²/2 when the box holds nearly all of both."""
    task = _gauss_task(8.0)
    mu = torch.tensor([shift, -shift], dtype=torch.float64)
    x = mu + torch.randn(200_000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    log_q = -0.5 * ((x - mu) ** 2).sum(1) - math.log(2 * math.pi)
    out = box_kl(task, (x.abs() <= 8.0).all(1), log_q + task.energy(x))
    assert out["kl"] == pytest.approx(float(mu @ mu) / 2, abs=4 * out["kl_se"] + 1e-9)
    assert out["mass_outside"] < 1e-4


def test_box_kl_counts_the_mass_outside_a_tight_box():
    task = _gauss_task(1.0)
    x = torch.randn(100_000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    inside = (x.abs() <= 1.0).all(1)
    out = box_kl(task, inside, -math.log(2 * math.pi) + 0 * x[:, 0])  # log q + U, q = p
    p_in = erf(1 / math.sqrt(2)) ** 2  # q(box) for a standard normal
    assert out["mass_outside"] == pytest.approx(1 - p_in, abs=4 * out["mass_outside_se"])
    assert abs(out["kl"]) < 5e-3  # q restricted to the box is exactly p restricted to it


def test_eval_write_keeps_the_training_record(tmp_path, capsys):
    ck = tmp_path / "p2"
    shutil.copytree(ZOO_DIR / "potential2", ck)
    before = json.loads((ck / "eval.json").read_text())
    assert {"train_seconds", "iterations"} <= set(before)
    assert main(["eval", str(ck), "-n", "256", "--write"]) == 0
    after = json.loads((ck / "eval.json").read_text())
    assert (after["train_seconds"], after["iterations"]) == (before["train_seconds"], before["iterations"])
    assert after["n"] == 256 and 0 <= after["box"]["mass_outside"] <= 1 and after["box"]["kl"] is not None
    capsys.readouterr()


def test_model_page_shows_the_box_score():
    from service.ui import evaluation_extras
    rows = dict(evaluation_extras(json.loads((ZOO_DIR / "potential2" / "eval.json").read_text())))
    box = json.loads((ZOO_DIR / "potential2" / "eval.json").read_text())["box"]
    text = rows["KL on the box [−4, 4]²"]
    assert text.startswith(f"{box['kl']:.3f} ± ") and f"{100 * box['mass_outside']:.1f} % of the mass" in text
    assert "KL on the box [−4, 4]²" not in dict(evaluation_extras({"elbo": -1.0, "log_z": 1.0}))
