"""The JAX/XLA peer (benchmarks/xla.py) computes the same solves as ours, in both forms and every
bucket, and `knet bench-xla` prints the table; without JAX `knet bench` says so in its XLA column."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from benchmarks import xla
from knet.cli import main
from models.checkpoint import load_model
from models.zoo import resolve


def test_buckets_are_powers_of_two():
    assert [xla.bucket(r) for r in (1, 2, 3, 5, 64, 65, 1000)] == [1, 2, 4, 8, 64, 128, 1024]
    with pytest.raises(ValueError):
        xla.bucket(0)


@pytest.mark.parametrize("form", xla.FORMS)
def test_the_peer_answers_like_ours(form):
    model = load_model(resolve("twomoon"), torch.float32)
    peer = xla.XlaPeer(model, form)
    x = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)  # padded to the 4-row bucket
    with torch.no_grad():
        for kind, ours in (("sample", model.sample(0, z=torch.from_numpy(x))),
                           ("logprob", model.log_prob(torch.from_numpy(x)))):
            got_x, got_logp = peer.run(kind, x)
            assert got_x.shape == (3, 2) and got_logp.shape == (3,)
            np.testing.assert_allclose(got_x, ours.x.numpy(), rtol=0, atol=2e-5)
            np.testing.assert_allclose(got_logp, ours.logp.numpy(), rtol=0, atol=2e-5)
            assert peer.check(kind, x, ours.x.numpy(), ours.logp.numpy()) <= 2e-5
    assert set(peer.compile_s) == {("sample", 4), ("logprob", 4)}
    # a peer that disagrees is refused before anything is timed
    with pytest.raises(ValueError, match="disagrees"):
        peer.check("sample", x, ours.x.numpy() + 1e-2, ours.logp.numpy())


def test_bench_xla_prints_the_table(capsys):
    assert main(["bench-xla", "--models", "twomoon", "--batches", "1", "3", "--kinds", "logprob",
                 "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "| model, op | B=1 | B=3 |" in out and "| twomoon logprob |" in out and "XLA compile" in out


def test_bench_without_jax_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # `import jax` now raises ImportError
    from benchmarks.bench import _xla_peers
    model = load_model(resolve("twomoon"), torch.float32)
    assert _xla_peers(model, torch.device("cpu")) == "JAX not installed (pip install -e '.[peers]')"
