"""The digits model's peers (benchmarks/peers.py): the split, the scoring and the flows' training
loop, on small budgets (the table in docs/zoo.md comes from `knet bench-peers`)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from benchmarks import peers
from knet.cli import main
from models.data import DIGITS_TRAIN, digits_images


def test_split_is_by_image_and_disjoint_and_the_test_points_are_held_out():
    fit, val, test = peers.splits()
    assert len(fit) == DIGITS_TRAIN - peers.VALIDATION_IMAGES and len(val) == peers.VALIDATION_IMAGES
    train = digits_images("train")
    # every training image lands in exactly one part (rows compared as multisets of pixels)
    both = np.concatenate([fit, val])
    assert sorted(map(bytes, both.astype(np.uint8))) == sorted(map(bytes, train.astype(np.uint8)))
    assert test.shape == (peers.EVAL_POINTS, 64) and float(test.abs().max()) <= 2.0
    # the test points come from the held-out images: undo the scaling, drop the dequantisation
    pixels = np.floor((test.numpy() / 4.0 + 0.5) * 17.0)
    held_out = {bytes(r) for r in digits_images("test").astype(np.uint8)}
    assert all(bytes(r) in held_out for r in pixels.astype(np.uint8))


def test_gaussian_peer_is_the_maximum_likelihood_gaussian():
    fit, val, test = peers.splits()
    gaussian = peers.fit_mixtures(fit, val, test.numpy(), components=(1,))[0]
    x = peers._draws(fit, 10, 0)
    mean, cov = x.mean(0), np.cov(x, rowvar=False, bias=True) + 1e-6 * np.eye(64)
    want = -multivariate_normal(mean, cov).logpdf(test.numpy())
    assert gaussian.nll == pytest.approx(want.mean(), rel=1e-6)
    assert gaussian.parameters == 64 + 64 * 65 // 2


def test_flow_training_keeps_the_best_weights_and_reports_them():
    fit, val, test = peers.splits()
    row = peers.fit_flow("maf", fit, val, test, budget_s=3.0, eval_every=10, patience=1000)
    assert row.parameters == 9520 and np.isfinite(row.nll) and row.nll_se > 0
    assert "time budget" in row.note and row.fit_s < 15
    # far better than the untrained flow (a standard normal on [−2, 2]⁶⁴ data scores ≈ 90+ nats)
    assert row.validation_nll < 80 and row.nll < 80


def test_cli_refuses_bad_budgets(capsys):
    assert main(["bench-peers", "--budget-s", "0"]) == 2
    assert "--budget-s" in capsys.readouterr().err
