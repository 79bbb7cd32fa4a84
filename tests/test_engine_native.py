"""The compiled CPU path (models/_rk4_*.c via models.engine_native): built, chosen by default
for float32 CPU solves of either form (dense kernels up to 8 nodes, gather kernels above),
equal to the float64 tableau loop up to float32 rounding for every device family, node count,
batch size (every lane packing and tail), and direction, and bounded and failing as data like
every other path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_model

from models import engine, engine_native
from models.checkpoint import load_model
from models.config import DEVICE_FAMILIES, SolverConfig
from models.solvers import Status
from models.zoo import available, resolve

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
    assert engine_native.available(), "models._rk4 was not built: is a C compiler installed?"


@pytest.mark.parametrize("device", DEVICE_FAMILIES)
@pytest.mark.parametrize("nodes", [3, 12])  # dense kernels, gather kernels
def test_every_device_family_matches_the_float64_tableau_loop(device, nodes):
    model = tiny_model(device=device, dtype=torch.float32, nodes=nodes, repeat=2 if nodes == 3 else 1)
    form = "dense" if nodes == 3 else "gather"
    # two 16-row blocks and a 5-row tail; 3 rows (packed lanes, or the gather row kernel); one row
    for batch in (37, 3, 1):
        v = torch.randn(batch, nodes, generator=torch.Generator().manual_seed(2))
        for reverse in (False, True):
            want = reference(model, v, RK4, reverse)
            got = engine.integrate(model, v, RK4, reverse)
            assert got[2].path == f"native-{form}" and got[2].ok and got[2].nfe == 32
            # float32 rounding: a few ulp of the values (identity devices grow them to ~70)
            torch.testing.assert_close(got[0].double(), want[0], rtol=2e-6, atol=2e-5)
            torch.testing.assert_close(got[1].double(), want[1], rtol=2e-6, atol=2e-5)


# dense kernels for 1, 2, 4 and 8 nodes (3, 5 padded); gather kernels above 8 nodes (9, 18)
@pytest.mark.parametrize("nodes", [1, 2, 3, 5, 8, 9, 18])
# every lane packing of the dense kernels (1, 2, 4, 8 rows; 3 and 5 padded), the gather row
# kernel (1, 2, 3, 4 rows) and its 16-row blocks (5, 16 ...), full blocks with tails (17, 300)
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 8, 16, 17, 300])
def test_node_counts_and_batch_tails_match_the_torch_path(nodes, batch):
    model = tiny_model(nodes=nodes, dtype=torch.float32, repeat=3 if nodes < 5 else 1, seed=nodes)
    v = torch.randn(batch, nodes, generator=torch.Generator().manual_seed(batch))
    form = "dense" if nodes <= 8 else "gather"
    for reverse in (False, True):
        for with_div in (True, False):
            got = engine.integrate(model, v, RK4, reverse, with_divergence=with_div)
            want = engine.integrate(model, v, RK4, reverse, with_divergence=with_div, native=False, small=False)
            assert got[2].path == f"native-{form}" and want[2].path.startswith("torch-")
            # two float32 paths (the torch one through the logistic form): rounding apart, more of it
            # the more devices meet at a node (18 nodes: ~25 per node)
            atol = 1e-5 if form == "dense" else 3e-5
            torch.testing.assert_close(got[0], want[0], rtol=0, atol=atol)
            if with_div:
                torch.testing.assert_close(got[1], want[1], rtol=0, atol=atol)
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


@pytest.mark.parametrize("nodes", [2, 12])
@pytest.mark.parametrize("rows", [2, 40])
def test_budget_and_nonfinite_statuses(nodes, rows):
    model = tiny_model(dtype=torch.float32, nodes=nodes, repeat=2 if nodes == 2 else 1)
    path = "native-dense" if nodes == 2 else "native-gather"
    v = torch.randn(rows, nodes)
    capped = SolverConfig(method="rk4", steps_per_layer=8, max_steps=10)
    out = engine.integrate(model, v, capped)
    assert out[2].status == Status.MAX_STEPS and out[2].steps == 11
    assert out[2].message == "step budget of 10 steps exhausted"
    # the steps granted before the refusal ran, as on the torch path: same state and evaluations
    torch_out = engine.integrate(model, v, capped, native=False, small=False)
    assert (out[2].nfe, torch_out[2].nfe) == (40, 40)
    torch.testing.assert_close(out[0], torch_out[0], rtol=0, atol=1e-5)
    late = engine.integrate(model, v, SolverConfig(method="rk4", steps_per_layer=8, max_wall_s=1e-9))
    assert late[2].status == Status.TIMEOUT and late[2].steps == 1 and late[2].nfe == 0
    assert late[2].message == "wall-clock budget of 1e-09 s exhausted"
    bad = engine.integrate(model, torch.full((rows, nodes), float("inf")), RK4)
    assert bad[2].status == Status.NONFINITE and bad[2].message == "non-finite voltages after layer 0"
    assert engine.integrate(model, torch.full((rows, nodes), float("inf")), RK4,
                            reverse=True)[2].message == "non-finite voltages after layer 1"
    assert {out[2].path, late[2].path, bad[2].path} == {path}


@pytest.mark.parametrize("device", ["affine-tanh", "diff-tanh", "diff-relu", "affine-leaky_relu"])
@pytest.mark.parametrize("nodes", [2, 12])
def test_nan_and_overflowing_inputs_fail_as_on_the_torch_path(device, nodes):
    """A NaN pre-activation stays NaN through the activation (as in torch): a NaN input, or the
    inf − inf pre-activation of a difference device between two infinite voltages, ends the
    solve NONFINITE as on the torch path, never saturated into a finite answer."""
    model = tiny_model(device=device, dtype=torch.float32, nodes=nodes, repeat=2 if nodes == 2 else 1)
    path = "native-dense" if nodes == 2 else "native-gather"
    for bad in (float("nan"), float("inf")):
        v = torch.full((2, nodes), 0.1)
        v[0] = bad
        got = engine.integrate(model, v, RK4)
        want = engine.integrate(model, v, RK4, native=False, small=False)
        assert got[2].path == path
        assert got[2].status == want[2].status == Status.NONFINITE, (bad, got[2].status, want[2].status)
    # NaN inside the pre-activation only (one device's offset), finite voltages: a clamp that
    # swallowed NaN would saturate that device and answer SUCCESS
    with torch.no_grad():
        model.layers[0].params["c"][0] = float("nan")
    got = engine.integrate(model, torch.randn(4, nodes), RK4)
    assert got[2].path == path and got[2].status == Status.NONFINITE


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
    assert engine.integrate(tiny_model(dtype=torch.float32), v, RK4, small=False, native=False)[2].path == "torch-dense"
    assert engine.integrate(tiny_model(nodes=18, repeat=1, dtype=torch.float32), torch.randn(64, 18), RK4,
                            native=False)[2].path == "torch-gather"
    with pytest.raises(ValueError, match="compiled path takes float32"):
        engine.integrate(tiny_model(), v.double(), RK4, native=True)
    with pytest.raises(ValueError, match="float32 CPU rows"):
        plan = engine_native.build_plan(tiny_model(dtype=torch.float32), False)
        engine_native.solve(plan, torch.zeros(4, 2, dtype=torch.float64), [1, 1], True, None)


# Stated bounds of the compiled path against the float64 tableau loop at the serving steps, per
# zoo model: max |Δx| (model volts; latents for log p) and max |Δ log p| (nats) over sampling and
# log-density, 1, 3 and 37 rows (packed lanes, the gather row kernel, blocks with a tail). Measured
# maxima: 2-D models 1.5e-7–7.3e-6 and 1.5e-7–1.0e-5 (circle the largest), digits 3.8e-6 and
# 1.9e-5; the bounds keep a margin of 3–5× (float32 rounding of sums over up to 786 devices).
PARITY_BOUNDS = {"digits": (2e-5, 1e-4), "circle": (3e-5, 5e-5)}
PARITY_2D = (2e-5, 3e-5)


@pytest.mark.parametrize("name", available())
def test_every_zoo_model_is_within_its_stated_bound_of_the_float64_loop(name):
    model = load_model(resolve(name), torch.float32)
    exact = load_model(resolve(name), torch.float64)
    exact.engine_enabled = False  # the generic tableau loop (models.solvers.fixed_step)
    bound_x, bound_logp = PARITY_BOUNDS.get(name, PARITY_2D)
    for rows in (1, 3, 37):
        z = torch.randn(rows, model.data_dim, generator=torch.Generator().manual_seed(rows))
        with torch.no_grad():
            s, s64 = model.sample(0, z=z), exact.sample(0, z=z.double())
            lp, lp64 = model.log_prob(s.x), exact.log_prob(s.x.double())
        assert s.stats.path == lp.stats.path == ("native-gather" if model.data_dim > 8 else "native-dense")
        assert (s.stats.nfe, lp.stats.nfe) == (s64.stats.nfe, lp64.stats.nfe)
        dx = max(float((s.x.double() - s64.x).abs().max()), float((lp.x.double() - lp64.x).abs().max()))
        dl = max(float((s.logp.double() - s64.logp).abs().max()), float((lp.logp.double() - lp64.logp).abs().max()))
        assert dx <= bound_x and dl <= bound_logp, (name, rows, dx, dl)


def test_a_784_node_circuit_is_within_float32_rounding_of_the_float64_loop():
    """The imported genmnist's architecture (two layers of 50,240 devices on 784 nodes): |Δx| ≤ 2e-5
    (measured 3e-6), |Δ log p| ≤ 1e-3 nats on log-densities of ~1100 nats (a few float32 ulp there;
    measured 2.5e-4), one row (row kernel) and 20 (a block and a row-kernel tail)."""
    from benchmarks.xla_table import genmnist_architecture
    model = genmnist_architecture()
    exact = genmnist_architecture().double()
    exact.engine_enabled = False
    for rows in (1, 20):
        z = torch.randn(rows, 784, generator=torch.Generator().manual_seed(rows))
        with torch.no_grad():
            s, s64 = model.sample(0, z=z), exact.sample(0, z=z.double())
        assert s.stats.path == "native-gather" and s.stats.ok
        assert float((s.x.double() - s64.x).abs().max()) <= 2e-5
        assert float((s.logp.double() - s64.logp).abs().max()) <= 1e-3


def _activate(kernel: str, z: np.ndarray) -> np.ndarray:
    from models import _rk4
    y = np.empty_like(z)
    _rk4.activate(_rk4.KERNELS.index(kernel), 0, 0.0, z.ctypes.data, y.ctypes.data, 0, z.size)
    return y


def test_the_compiled_tanh_and_sigmoid_are_within_stated_ulp():
    """The kernels' exp-based activations against float64 over [-20, 20] (every float32 step of
    1e-5 there, and the saturated tails): tanh within 1.8e-7 absolute (1.5 ulp of 1.0; near 0,
    where tanh(z) ≈ z is tiny, the absolute error is what a sum of currents sees) and within 3 ulp
    where |tanh| ≥ 0.5; sigmoid within 3 ulp relative everywhere above 1e-30."""
    z = np.linspace(-20.0, 20.0, 4_000_001).astype(np.float32)
    for kernel, exact, abs_bound in (("tanh", np.tanh, 1.8e-7), ("sigmoid", lambda x: 1 / (1 + np.exp(-x)), 2e-7)):
        want = exact(z.astype(np.float64))
        got = _activate(kernel, z).astype(np.float64)
        err = np.abs(got - want)
        ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
        assert err.max() <= abs_bound, (kernel, err.max())
        big = np.abs(want) >= (0.5 if kernel == "tanh" else 1e-30)
        assert (err[big] / ulp[big]).max() <= 3.0, (kernel, (err[big] / ulp[big]).max())
    # NaN stays NaN, infinities saturate
    special = np.array([np.nan, np.inf, -np.inf, 100.0, -100.0], np.float32)
    y = _activate("tanh", special)
    assert np.isnan(y[0]) and list(y[1:]) == [1.0, -1.0, 1.0, -1.0]
