"""Fast math tests of the circuit core: analytic answers and parity checks."""
from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_model, tiny_spec

from models.circuit import autograd_divergence
from models.config import DEVICE_FAMILIES, CircuitSpec, LayerSpec, SolverConfig
from models.flow import KirchhoffNet, resize_nodes, standard_normal_log_prob
from models.solvers import Status
from models.topology import fully_connected

TIGHT = SolverConfig(method="dopri5", rtol=1e-10, atol=1e-10)
RK4 = SolverConfig(method="rk4", steps_per_layer=64)


def mixed_circuit(device: str, seed: int = 0) -> KirchhoffNet:
    """3 nodes, ground edges, parallel devices, unequal capacitances, two layers."""
    l1 = LayerSpec(duration=0.4, nodes=3, edges=tuple(fully_connected(3, 2, True)), capacitance=(1.0, 2.0, 0.5))
    l2 = LayerSpec(duration=0.6, nodes=3, edges=((1, 2), (2, 3), (3, 1), (1, 2), (0, 3), (2, 0)))
    spec = CircuitSpec(name="mix", device=device, data_dim=3, layers=(l1, l2))
    return KirchhoffNet(spec, init_scale=0.6, seed=seed).double().requires_grad_(False)


@pytest.mark.parametrize("device", DEVICE_FAMILIES)
@pytest.mark.parametrize("form", ["dense", "gather"])
def test_closed_form_divergence_equals_autograd_trace(device, form):
    model = mixed_circuit(device)
    v = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for layer in model.layers:
        op = layer.operator(form)
        _, div = op.rhs_and_divergence(v)
        torch.testing.assert_close(div, autograd_divergence(op, v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICE_FAMILIES)
def test_dense_and_gather_forms_agree(device):
    model = mixed_circuit(device, seed=3)
    v = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for layer in model.layers:
        d, g = layer.operator("dense"), layer.operator("gather")
        torch.testing.assert_close(d.rhs(v), g.rhs(v), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(d.rhs_and_divergence(v)[1], g.rhs_and_divergence(v)[1], rtol=1e-12, atol=1e-12)


def kcl_matrix(layer) -> torch.Tensor:
    """Dense M with dv/dt = M v for a conductance layer (ground rows/cols dropped)."""
    n = layer.nodes
    g = layer.params["g"].detach().double()
    M = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for e, (s, d) in enumerate(layer.spec.edges):
        M[d, s] += g[e]
        M[d, d] -= g[e]
        M[s, s] -= g[e]
        M[s, d] += g[e]
    caps = torch.as_tensor(layer.spec.capacitance, dtype=torch.float64).expand(n)
    return M[1:, 1:] / caps[:, None]


@pytest.mark.parametrize("solver", [TIGHT, RK4], ids=["dopri5", "rk4"])
def test_linear_rc_network_matches_matrix_exponential(solver):
    model = mixed_circuit("conductance", seed=5)
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = model.sample(4, z=z, solver=solver)
    x_exact, log_det = z.clone(), 0.0
    for layer in model.layers:
        M = kcl_matrix(layer)
        x_exact = x_exact @ torch.linalg.matrix_exp(M * layer.spec.duration).T
        log_det += float(torch.trace(M)) * layer.spec.duration
    tol = 1e-8 if solver.adaptive else 1e-7
    torch.testing.assert_close(res.x, x_exact, rtol=tol, atol=tol)
    # for a linear flow, log q(x) = log N(z) − T·tr(M) exactly
    torch.testing.assert_close(res.logp, standard_normal_log_prob(z) - log_det, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", ["affine-tanh", "diff-leaky_relu", "affine-relu"])
def test_sample_then_log_prob_round_trip(device):
    model = mixed_circuit(device, seed=7)
    gen = torch.Generator().manual_seed(4)
    # relu kinks make tight adaptive solves crawl; fine fixed steps converge on both sides
    fine = SolverConfig(method="rk4", steps_per_layer=200)
    res = model.sample(16, gen, fine)
    back = model.log_prob(res.x, fine)
    assert res.stats.ok and back.stats.ok
    torch.testing.assert_close(back.logp, res.logp, rtol=1e-6, atol=1e-6)


def test_rk4_converges_to_tight_solution_at_fourth_order():
    model = tiny_model(layers=3, nodes=2, repeat=3)
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = model.sample(8, z=z, solver=TIGHT).x
    errs = [float((model.sample(8, z=z, solver=SolverConfig(method="rk4", steps_per_layer=k)).x - ref).abs().max())
            for k in (4, 8)]
    assert errs[1] < errs[0] / 10  # 2× steps → ~16× smaller error for a 4th-order method


def test_batch_invariance():
    model = tiny_model(layers=2, nodes=2, repeat=4)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole = model.log_prob(x, RK4).logp
    singles = torch.cat([model.log_prob(x[i:i + 1], RK4).logp for i in range(0, 64, 9)])
    torch.testing.assert_close(singles, whole[::9], rtol=1e-12, atol=1e-12)


def test_same_seed_same_samples_and_float32_close_to_float64():
    m64 = tiny_model(layers=2, nodes=2, repeat=3)
    m32 = tiny_model(dtype=torch.float32, layers=2, nodes=2, repeat=3)
    a = m64.sample(32, torch.Generator().manual_seed(9), RK4)
    b = m64.sample(32, torch.Generator().manual_seed(9), RK4)
    c = m32.sample(32, torch.Generator().manual_seed(9), RK4)
    assert torch.equal(a.x, b.x)
    assert c.x.dtype == torch.float32
    torch.testing.assert_close(c.x.double(), a.x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c.logp.double(), a.logp, rtol=1e-5, atol=1e-5)


def test_layer_boundaries_are_hit_exactly_by_fixed_steps():
    # On a linear circuit one RK4 step of size h is exactly P(hM) = Σ_{k≤4} (hM)^k/k!, so a
    # solve that hits every layer boundary equals Π_layers P(h_l M_l)^{n_l}; a step straddling
    # a boundary would blend two layers' matrices and miss this to far more than rounding.
    model = mixed_circuit("conductance", seed=11)
    steps = (3, 5)
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = z.clone()
    for layer, n in zip(model.layers, steps):
        X = kcl_matrix(layer) * (layer.spec.duration / n)
        P = sum(torch.linalg.matrix_power(X, k) / math.factorial(k) for k in range(5))
        expected = expected @ torch.linalg.matrix_power(P, n).T
    res = model.sample(3, z=z, solver=SolverConfig(method="rk4", steps_per_layer=steps))
    torch.testing.assert_close(res.x, expected, rtol=1e-12, atol=1e-12)
    assert res.stats.nfe == 4 * sum(steps)


def test_node_count_changes_between_layers():
    v = torch.tensor([[1.0, 2.0]])
    assert resize_nodes(v, 4, "zeros").tolist() == [[1.0, 2.0, 0.0, 0.0]]
    assert resize_nodes(v, 5, "repeat").tolist() == [[1.0, 2.0, 1.0, 2.0, 1.0]]
    assert resize_nodes(v, 1, "zeros").tolist() == [[1.0]]
    wide = LayerSpec(duration=0.5, nodes=4, edges=tuple(fully_connected(4, 1, True)))
    narrow = LayerSpec(duration=0.5, nodes=2, edges=tuple(fully_connected(2, 1, True)))
    spec = CircuitSpec(name="aug", device="affine-tanh", data_dim=2, layers=(wide, narrow))
    model = KirchhoffNet(spec).double().requires_grad_(False)
    assert not spec.bijective
    res = model.sample(5, torch.Generator().manual_seed(0), RK4)
    assert res.x.shape == (5, 2) and res.logp is None and res.stats.ok
    with pytest.raises(ValueError, match="log-density is not defined"):
        model.log_prob(res.x)


def test_solver_budgets_report_status_instead_of_hanging():
    model = tiny_model(layers=2, nodes=2)
    z = torch.zeros(2, 2, dtype=torch.float64)
    res = model.sample(2, z=z, solver=SolverConfig(method="rk4", steps_per_layer=50, max_steps=60))
    assert res.stats.status == Status.MAX_STEPS and res.stats.steps == 61
    res = model.sample(2, z=z, solver=SolverConfig(method="dopri5", rtol=1e-12, atol=1e-12, max_steps=5))
    assert res.stats.status == Status.MAX_STEPS
    res = model.sample(2, z=z, solver=SolverConfig(method="rk4", steps_per_layer=10**6, max_wall_s=0.05,
                                                   max_steps=10**7))
    assert res.stats.status == Status.TIMEOUT and res.stats.wall_s < 2.0


def test_nonfinite_state_is_reported():
    model = tiny_model(layers=1, nodes=2, device="affine-identity", init_scale=1e3, seed=1)
    res = model.sample(2, z=torch.ones(2, 2, dtype=torch.float64) * 1e200,
                       solver=SolverConfig(method="euler", steps_per_layer=400))
    assert res.stats.status == Status.NONFINITE


def test_log_prob_rejects_wrong_shape():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        model.log_prob(torch.zeros(3, 5))


def test_standard_normal_log_prob():
    z = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    expected = torch.tensor([-math.log(2 * math.pi), -math.log(2 * math.pi) - 2.5], dtype=torch.float64)
    torch.testing.assert_close(standard_normal_log_prob(z), expected)


def test_spec_validation_errors_are_clear():
    with pytest.raises(ValueError, match="self-loop"):
        LayerSpec(duration=1.0, nodes=2, edges=((1, 1),))
    with pytest.raises(ValueError, match="outside 0..2"):
        LayerSpec(duration=1.0, nodes=2, edges=((1, 3),))
    with pytest.raises(ValueError, match="unknown device"):
        tiny_spec(device="memristor")
