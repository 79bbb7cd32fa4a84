"""The engine's paths (torch dense, torch gather, NumPy small-batch, blocked, CUDA graphs)
agree with the generic solver and with the tight float64 solution; step counts honoured;
each call reports the path that ran, and the budget is enforced between layers."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_model

from models import engine, engine_small
from models.config import SolverConfig
from models.engine_state import charge_steps, layer_order, run_layers
from models.solvers import Budget, Status

RK4 = SolverConfig(method="rk4", steps_per_layer=(3, 5))


def generic(model, v, cfg, reverse):
    """The reference tableau loop (models.solvers.fixed_step) with the same steps."""
    model.engine_enabled = False
    try:
        return model.integrate(v, cfg, reverse=reverse)
    finally:
        model.engine_enabled = True


@pytest.mark.parametrize("device", ["affine-tanh", "diff-relu", "affine-leaky_relu", "conductance"])
@pytest.mark.parametrize("nodes", [2, 18])
def test_engine_forms_match_generic_rk4(device, nodes):
    model = tiny_model(device=device, nodes=nodes, repeat=2 if nodes == 2 else 1)
    v = torch.randn(5, nodes, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for reverse in (False, True):
        want = generic(model, v, RK4, reverse)
        for form in ("dense", "gather"):
            for small in (False, True):
                got = engine.integrate(model, v, RK4, reverse, form=form, small=small)
                # small=True runs NumPy for every family (always its dense form)
                assert got[2].path == ("numpy-dense" if small else f"torch-{form}")
                torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-10)
                torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-10)
                assert got[2].nfe == want[2].nfe == 4 * 8 and got[2].steps == 8


def test_step_counts_are_honoured_per_layer():
    """(3, 5) steps give the generic (3, 5) answer and differ measurably from (5, 3)."""
    model = tiny_model(repeat=8, init_scale=1.0)
    v = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a = engine.integrate(model, v, RK4, small=False)
    b = engine.integrate(model, v, SolverConfig(method="rk4", steps_per_layer=(5, 3)), small=False)
    torch.testing.assert_close(a[0], generic(model, v, RK4, False)[0], rtol=0, atol=1e-10)
    assert float((a[0] - b[0]).abs().max()) > 1e-7
    assert (a[2].nfe, b[2].nfe) == (32, 32)


def test_model_api_dispatches_to_engine_and_agrees():
    model = tiny_model(repeat=4)
    z = torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    fast = model.sample(0, z=z)
    assert getattr(fast.stats, "path", None) == "torch-dense", "model.sample with an RK4 solver must use the engine"
    assert model.sample(0, z=z[:3]).stats.path == "numpy-dense"  # a few rows on the CPU: NumPy
    model.engine_enabled = False
    slow = model.sample(0, z=z)
    assert not hasattr(slow.stats, "path")  # the generic tableau loop
    torch.testing.assert_close(fast.x, slow.x, rtol=0, atol=1e-10)
    torch.testing.assert_close(fast.logp, slow.logp, rtol=0, atol=1e-10)


def test_training_keeps_gradients_through_generic_path():
    model = tiny_model()
    model.requires_grad_(True)
    res = model.log_prob(torch.randn(3, 2, dtype=torch.float64))
    res.logp.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_blocked_large_batch_matches_unblocked(monkeypatch):
    model = tiny_model(repeat=4).float()
    v = torch.randn(300, 2, generator=torch.Generator().manual_seed(4))
    whole = engine.integrate(model, v, RK4, small=False)
    monkeypatch.setattr(engine, "CPU_BLOCK_BYTES", 1)  # → 64-row blocks
    blocked = engine.integrate(model, v, RK4, small=False)
    torch.testing.assert_close(blocked[0], whole[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(blocked[1], whole[1], rtol=0, atol=1e-6)
    assert blocked[2].nfe == whole[2].nfe == 32


def test_small_batch_path_is_used_and_float32_close():
    model = tiny_model(repeat=4).float()
    v = torch.randn(engine_small.SMALL_BATCH_MAX, 2, generator=torch.Generator().manual_seed(5))
    a = engine.integrate(model, v, RK4, native=False)  # without the compiled path: NumPy
    b = engine.integrate(model, v, RK4, small=False)
    assert (a[2].path, b[2].path) == ("numpy-dense", "torch-dense")
    # one row too many
    assert engine.integrate(model, torch.cat([v, v[:1]]), RK4, native=False)[2].path == "torch-dense"
    assert a[0].dtype == torch.float32
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("small", [False, True])
def test_budget_and_nonfinite_statuses(small):
    model = tiny_model()
    v = torch.randn(2, 2, dtype=torch.float64)
    out = engine.integrate(model, v, SolverConfig(method="rk4", steps_per_layer=8, max_steps=10), small=small)
    assert out[2].status == Status.MAX_STEPS and out[2].steps == 11
    late = engine.integrate(model, v, SolverConfig(method="rk4", steps_per_layer=8, max_wall_s=1e-9), small=small)
    assert late[2].status == Status.TIMEOUT and late[2].steps == 1
    bad = engine.integrate(model, torch.full((2, 2), float("inf"), dtype=torch.float64), RK4, small=small)
    assert bad[2].status == Status.NONFINITE
    assert {out[2].path, late[2].path, bad[2].path} == {"numpy-dense" if small else "torch-dense"}


def test_small_path_refuses_circuits_it_cannot_take(monkeypatch):
    monkeypatch.setattr(engine_small, "SMALL_MAX_NODES", 1)
    model = tiny_model()
    v = torch.randn(2, 2, dtype=torch.float64)
    assert engine.integrate(model, v, RK4)[2].path == "torch-dense"  # by default: torch instead
    with pytest.raises(ValueError, match="NumPy path takes at most 1 nodes"):
        engine.integrate(model, v, RK4, small=True)


def test_layer_loop_checks_the_clock_between_uninterruptible_layers():
    """The loop every path shares, driven the way CUDA graph replays drive it: a layer's
    steps are charged up front and the layer itself cannot be interrupted."""
    budget = Budget(max_steps=100, max_wall_s=10.0)
    ran = []

    def replay(k: int) -> None:
        charge_steps(budget, 5)
        ran.append(k)
        if len(ran) == 2:
            budget.started -= 20.0  # this replay took 20 s of the 10 s budget

    status, message = run_layers(layer_order(4, reverse=True), replay, lambda: True, budget)
    assert (status, ran, budget.steps, budget.nfe) == (Status.TIMEOUT, [3, 2], 10, 40)
    assert "10 s" in message


def test_layer_loop_step_budget_and_nonfinite():
    budget = Budget(max_steps=12, max_wall_s=10.0)
    ran = []
    status, _ = run_layers(range(4), lambda k: (charge_steps(budget, 5), ran.append(k)), lambda: True, budget)
    assert (status, ran, budget.steps) == (Status.MAX_STEPS, [0, 1], 13)  # layer 2 never starts
    state = [1.0]

    def blow_up_at_layer_1(k: int) -> None:
        state[0] = float("inf") if k == 1 else state[0]

    status, message = run_layers(range(4), blow_up_at_layer_1, lambda: state[0] < float("inf"),
                                 Budget(max_steps=100, max_wall_s=10.0))
    assert status == Status.NONFINITE and message == "non-finite voltages after layer 1"


def test_parameter_change_invalidates_the_cache():
    model = tiny_model()
    v = torch.randn(3, 2, dtype=torch.float64)
    before = engine.integrate(model, v, RK4)[0]
    with torch.no_grad():
        model.layers[0].params["c"].add_(0.5)
    after = engine.integrate(model, v, RK4)[0]
    torch.testing.assert_close(after, generic(model, v, RK4, False)[0], rtol=0, atol=1e-10)
    assert float((after - before).abs().max()) > 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_matches_eager():
    model = tiny_model(repeat=8).float().cuda()
    for rows in (1, 5, 64):
        v = torch.randn(rows, 2, device="cuda")
        for reverse in (False, True):
            g = engine.integrate(model, v, RK4, reverse, graphs=True)
            e = engine.integrate(model, v, RK4, reverse, graphs=False)
            torch.testing.assert_close(g[0], e[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(g[1], e[1], rtol=0, atol=1e-5)
            assert g[2].nfe == e[2].nfe
            assert g[2].path == "cuda-graph-dense" and e[2].path == "torch-dense"
