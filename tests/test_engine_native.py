"""The compiled CPU path (models/_rk4_dense.c via models.engine_native): built, chosen by
default for float32 dense-form solves, equal to the float64 tableau loop up to float32
rounding for every device family, node count, batch tail and direction, and bounded and
failing as data like every other path."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_model

from models import engine, engine_native
from models.checkpoint import load_model
from models.config import DEVICE_FAMILIES, SolverConfig
from models.solvers import Status
from models.zoo import resolve

RK4 = SolverConfig(method="rk4", steps_per_layer=(3, 5))


def reference(model, v, cfg, reverse, with_divergence=True):
    """The generic tableau loop (models.solvers.fixed_step) in float64, same steps."""
    m64 = model.double()
    m64.engine_enabled = False
    try:
        return m64.integrate(v.double(), cfg, reverse=reverse, with_divergence=with_divergence)
    finally:
        model.float()
        model.engine_enabled = True


def test_extension_is_built():
    # `pip install -e .` compiles it (setup.py); a missing C compiler is a set-up failure here
    assert engine_native.available(), "models._rk4_dense was not built: is a C compiler installed?"


@pytest.mark.parametrize("device", DEVICE_FAMILIES)
def test_every_device_family_matches_the_float64_tableau_loop(device):
    model = tiny_model(device=device, dtype=torch.float32, nodes=3, repeat=2)
    v = torch.randn(37, 3, generator=torch.Generator().manual_seed(2))  # two blocks and a tail
    for reverse in (False, True):
        want = reference(model, v, RK4, reverse)
        got = engine.integrate(model, v, RK4, reverse)
        assert got[2].path == "native-dense" and got[2].ok and got[2].nfe == 32
        torch.testing.assert_close(got[0].double(), want[0], rtol=0, atol=2e-5)
        torch.testing.assert_close(got[1].double(), want[1], rtol=0, atol=2e-5)


@pytest.mark.parametrize("nodes", [1, 2, 5, 16])
@pytest.mark.parametrize("batch", [1, 16, 17, 300])
def test_node_counts_and_batch_tails_match_the_torch_path(nodes, batch):
    model = tiny_model(nodes=nodes, dtype=torch.float32, repeat=3 if nodes < 5 else 1, seed=nodes)
    v = torch.randn(batch, nodes, generator=torch.Generator().manual_seed(batch))
    for reverse in (False, True):
        for with_div in (True, False):
            got = engine.integrate(model, v, RK4, reverse, with_divergence=with_div)
            want = engine.integrate(model, v, RK4, reverse, with_divergence=with_div, native=False, small=False)
            assert (got[2].path, want[2].path) == ("native-dense", "torch-dense")
            torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)
            if with_div:
                torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-5)
            else:
                assert got[1] is None


def test_saturated_devices_stay_exact():
    """Large pre-activations (|z| ≫ 87, where exp is clamped) saturate like torch's sigmoid."""
    model = tiny_model(dtype=torch.float32, init_scale=60.0, seed=3)
    v = 20 * torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    cfg = SolverConfig(method="rk4", steps_per_layer=2)
    got = engine.integrate(model, v, cfg)
    want = reference(model, v, cfg, False)
    assert got[2].ok
    torch.testing.assert_close(got[0].double(), want[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got[1].double(), want[1], rtol=1e-5, atol=1e-3)


def test_a_zoo_model_answers_like_the_torch_path_at_serving_steps():
    model = load_model(resolve("2spirals"))
    tier = min(model.spec.accuracy_tiers, key=lambda t: t.tolerance_nats)
    cfg = SolverConfig(method="rk4", steps_per_layer=tier.steps_per_layer)
    x = model.sample(1000, generator=torch.Generator().manual_seed(0), solver=cfg)
    assert x.stats.path == "native-dense"
    lp = model.log_prob(x.x, cfg)
    want = engine.integrate(model, x.x, cfg, reverse=True, native=False, small=False)
    assert lp.stats.path == "native-dense"
    torch.testing.assert_close(lp.x, want[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(x.logp, lp.logp, rtol=0, atol=1e-3)  # the tier's own round-trip bound


def test_budget_and_nonfinite_statuses():
    model = tiny_model(dtype=torch.float32)
    v = torch.randn(2, 2)
    out = engine.integrate(model, v, SolverConfig(method="rk4", steps_per_layer=8, max_steps=10))
    assert out[2].status == Status.MAX_STEPS and out[2].steps == 11
    late = engine.integrate(model, v, SolverConfig(method="rk4", steps_per_layer=8, max_wall_s=1e-9))
    assert late[2].status == Status.TIMEOUT and late[2].steps == 1
    bad = engine.integrate(model, torch.full((2, 2), float("inf")), RK4)
    assert bad[2].status == Status.NONFINITE
    assert {out[2].path, late[2].path, bad[2].path} == {"native-dense"}


def test_other_solves_take_other_paths():
    v = torch.randn(4, 2)
    assert engine.integrate(tiny_model(), v.double(), RK4)[2].path == "numpy-dense"  # float64
    assert engine.integrate(tiny_model(nodes=18, repeat=1, dtype=torch.float32), torch.randn(64, 18),
                            RK4)[2].path == "torch-gather"  # beyond the dense form
    with pytest.raises(ValueError, match="compiled path takes float32"):
        engine.integrate(tiny_model(), v.double(), RK4, native=True)
    with pytest.raises(ValueError, match="contiguous float32"):
        layer = engine_native.build_layers(tiny_model(dtype=torch.float32), False)[0]
        engine_native.rk4_layer(layer, torch.zeros(4, 3, dtype=torch.float64), 1.0, 1, True, None)
