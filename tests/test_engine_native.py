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


@pytest.mark.parametrize("nodes", [1, 2, 3, 5, 8])  # compiled row counts 3, 4 and padded 6, 10
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
    assert lp.stats.path == "native-dense"
    # against the float64 tableau loop at the same steps, the compiled path is as close as the
    # torch path (float32 rounding only; FMA contraction makes the two differ by ~1e-5)
    exact = reference(model, x.x, cfg, True)
    torch_path = engine.integrate(model, x.x, cfg, reverse=True, native=False, small=False)
    native_err = float((lp.x.double() - exact[0]).abs().max())
    torch_err = float((torch_path[0].double() - exact[0]).abs().max())
    assert native_err <= max(1.5 * torch_err, 1e-5), (native_err, torch_err)
    torch.testing.assert_close(lp.x, torch_path[0], rtol=0, atol=3e-5)
    torch.testing.assert_close(x.logp, lp.logp, rtol=0, atol=1e-3)  # the tier's own round-trip bound


def test_budget_and_nonfinite_statuses():
    model = tiny_model(dtype=torch.float32)
    v = torch.randn(2, 2)
    capped = SolverConfig(method="rk4", steps_per_layer=8, max_steps=10)
    out = engine.integrate(model, v, capped)
    assert out[2].status == Status.MAX_STEPS and out[2].steps == 11
    # the steps granted before the refusal ran, as on the torch path: same state and evaluations
    torch_out = engine.integrate(model, v, capped, native=False, small=False)
    assert (out[2].nfe, torch_out[2].nfe) == (40, 40)
    torch.testing.assert_close(out[0], torch_out[0], rtol=0, atol=1e-5)
    late = engine.integrate(model, v, SolverConfig(method="rk4", steps_per_layer=8, max_wall_s=1e-9))
    assert late[2].status == Status.TIMEOUT and late[2].steps == 1
    bad = engine.integrate(model, torch.full((2, 2), float("inf")), RK4)
    assert bad[2].status == Status.NONFINITE
    assert {out[2].path, late[2].path, bad[2].path} == {"native-dense"}


@pytest.mark.parametrize("device", ["affine-tanh", "diff-tanh", "diff-relu", "affine-leaky_relu"])
def test_nan_and_overflowing_inputs_fail_as_on_the_torch_path(device):
    """A NaN pre-activation stays NaN through the activation (as in torch): a NaN input, or the
    inf − inf pre-activation of a difference device between two infinite voltages, ends the
    solve NONFINITE as on the torch path, never saturated into a finite answer."""
    model = tiny_model(device=device, dtype=torch.float32)
    for bad in (float("nan"), float("inf")):
        v = torch.tensor([[bad, bad], [0.1, -0.2]])
        got = engine.integrate(model, v, RK4)
        want = engine.integrate(model, v, RK4, native=False, small=False)
        assert got[2].path == "native-dense"
        assert got[2].status == want[2].status == Status.NONFINITE, (bad, got[2].status, want[2].status)
    # NaN inside the pre-activation only (one device's offset), finite voltages: a clamp that
    # swallowed NaN would saturate that device and answer SUCCESS
    with torch.no_grad():
        model.layers[0].params["c"][0] = float("nan")
    got = engine.integrate(model, torch.randn(4, 2), RK4)
    assert got[2].path == "native-dense" and got[2].status == Status.NONFINITE


def test_weights_off_the_cpu_never_reach_the_c_code():
    """The C code reads raw host pointers: a model on another device (here "meta", standing in
    for CUDA) is not served by this path whatever the input's device."""
    model = tiny_model(dtype=torch.float32)
    v = torch.randn(4, 2)
    assert engine_native.supports(model, v)
    assert not engine_native.supports(model.to("meta"), v)


def test_other_solves_take_other_paths():
    v = torch.randn(4, 2)
    assert engine.integrate(tiny_model(), v.double(), RK4)[2].path == "numpy-dense"  # float64
    assert engine.integrate(tiny_model(nodes=9, repeat=1, dtype=torch.float32), torch.randn(64, 9),
                            RK4)[2].path == "torch-dense"  # beyond the compiled row counts
    assert engine.integrate(tiny_model(nodes=18, repeat=1, dtype=torch.float32), torch.randn(64, 18),
                            RK4)[2].path == "torch-gather"  # beyond the dense form
    with pytest.raises(ValueError, match="compiled path takes float32"):
        engine.integrate(tiny_model(), v.double(), RK4, native=True)
    with pytest.raises(ValueError, match="contiguous float32"):
        layer = engine_native.build_layers(tiny_model(dtype=torch.float32), False)[0]
        engine_native.rk4_layer(layer, torch.zeros(4, 3, dtype=torch.float64), 1.0, 1, True, None)
