"""Chip non-idealities (models.chip): exact answers where they exist, reproducibility,
and agreement with circuit-simulator measurements."""
from __future__ import annotations

import math

import pytest
import torch

from models.chip import (
    K_BOLTZMANN_J_PER_K,
    Chip,
    UnsupportedChip,
    chip_model,
    chip_plan,
    draw_mismatch,
    noise_scale,
    quantize,
)
from models.circuit import autograd_divergence
from models.config import ChipConfig, CircuitSpec, HardwareConstants, LayerSpec, SolverConfig
from models.flow import KirchhoffNet


def small_model(dtype=torch.float64, caps=(1.0, 1.5, 0.8), seed=3) -> KirchhoffNet:
    edges = ((0, 1), (1, 2), (2, 3), (3, 1), (2, 0), (1, 3), (3, 2))
    layers = tuple(LayerSpec(duration=0.25, nodes=3, edges=edges, capacitance=caps) for _ in range(4))
    spec = CircuitSpec(name="chip-small", device="affine-tanh", data_dim=3, layers=layers,
                       solver=SolverConfig(method="rk4", steps_per_layer=16))
    model = KirchhoffNet(spec, init_scale=0.8, seed=seed).to(dtype)
    model.requires_grad_(False)
    model.engine_enabled = False
    return model


def test_quantizer_on_known_values():
    w = torch.tensor([-1.0, -0.5, 0.1, 0.2, 1.0])
    # 3 bits: 2^3 − 1 = 7 levels, step max|w|/3; −0.5·3 = −1.5 rounds half to even → −2
    assert torch.allclose(quantize(w, 3), torch.tensor([-1.0, -2 / 3, 0.0, 1 / 3, 1.0]))
    dense = torch.linspace(-2, 2, 10_001)
    assert quantize(dense, 4).unique().numel() == 2**4 - 1
    # a fixed full scale clips: converters
    assert torch.allclose(quantize(torch.tensor([5.0, -9.0, 0.26]), 3, full_scale=1.0),
                          torch.tensor([1.0, -1.0, 1 / 3]))


def test_straight_through_quantizer_passes_gradients():
    w = torch.tensor([0.3, -0.7, 0.05], requires_grad=True)
    quantize(w, 4, straight_through=True).mul(torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_ideal_chip_reproduces_the_model_exactly():
    model = small_model()
    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ideal = model.sample(0, z=z)
    for chip in (ChipConfig(), ChipConfig(mismatch=0.0, quant_bits=None, instance=5)):
        res = Chip(model, chip).sample(0, z=z)
        assert torch.equal(res.x, ideal.x) and torch.equal(res.logp, ideal.logp)
    exported = chip_model(model, ChipConfig())
    for mine, theirs in zip(exported.layers, model.layers):
        assert mine.current_scale is None
        assert all(torch.equal(mine.params[k], theirs.params[k]) for k in theirs.params)


def test_same_seed_same_chip_other_seed_other_chip():
    model = small_model()
    a = chip_plan(model, ChipConfig(mismatch=0.05, instance=1))
    b = chip_plan(model, ChipConfig(mismatch=0.05, instance=1))
    c = chip_plan(model, ChipConfig(mismatch=0.05, instance=2))
    for k in a.params[0]:
        assert torch.equal(a.params[0][k], b.params[0][k])
        assert not torch.allclose(a.params[0][k], c.params[0][k])
    assert torch.equal(a.inv_cap[2], b.inv_cap[2]) and not torch.equal(a.inv_cap[2], c.inv_cap[2])


def test_mismatch_has_the_stated_statistics():
    """Gains and I0 move by σ relative, offsets by σ_off absolute, capacitors by σ_C, per device."""
    model = small_model()
    sigma, sigma_off, sigma_cap = 0.03, 0.02, 0.05
    plan = chip_plan(model, ChipConfig(mismatch=sigma, offset_sigma=sigma_off, capacitor_sigma=sigma_cap),
                     instances=list(range(400)))
    base = model.layers[0].params
    for name in ("a", "b"):
        assert abs(float((plan.params[0][name] / base[name] - 1).std()) / sigma - 1) < 0.1
    assert abs(float(plan.current_scale[0].std()) / sigma - 1) < 0.1
    shift = plan.params[0]["c"] - base["c"]  # additive, the same σ_off for every device
    assert abs(float(shift.std()) / sigma_off - 1) < 0.1 and abs(float(shift.mean())) < 3 * sigma_off / 50
    draw = draw_mismatch(model.spec, ("a", "b"), 0)
    assert torch.allclose(shift[0], sigma_off * draw.offset[0])
    assert torch.allclose(plan.params[0]["a"][0], base["a"] * (1 + sigma * draw.gains[0]["a"]))
    caps = 1 / plan.inv_cap[0][:, 1:] / torch.tensor([1.0, 1.5, 0.8], dtype=torch.float64)
    assert abs(float((caps - 1).std()) / sigma_cap - 1) < 0.1


def test_ensemble_equals_single_instances_and_the_exported_circuit():
    model = small_model()
    chip = ChipConfig(mismatch=0.05, quant_bits=6)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    many = Chip(model, chip, instances=[4, 9]).log_prob(x)
    for k, seed in enumerate((4, 9)):
        one = Chip(model, chip.model_copy(update={"instance": seed})).log_prob(x)
        assert torch.allclose(many.logp[k], one.logp, atol=1e-10)
        exported = chip_model(model, chip.model_copy(update={"instance": seed}))
        assert torch.allclose(exported.log_prob(x).logp, one.logp, atol=1e-10)
    assert not torch.allclose(many.logp[0], many.logp[1])


def test_closed_form_divergence_with_current_scale_and_capacitors():
    model = small_model()
    plan = chip_plan(model, ChipConfig(mismatch=0.1, instance=3))
    v = torch.randn(16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for op in plan.operators(model):
        _, div = op.rhs_and_divergence(v)
        assert torch.allclose(div, autograd_divergence(op, v), atol=1e-10)


def test_switching_matches_the_circuit_simulator():
    """ngspice on the twomoon sample deck (input 0.5, −0.3), every layer ramp widened into a
    linear cross-fade, moved x₂ = −0.04469 by 3e-4 at 10 ps, 1.9e-3 at 25 ps, 7.6e-3 at 50 ps."""
    from models.checkpoint import load_model
    from models.zoo import resolve
    model = load_model(resolve("twomoon"), dtype=torch.float64)
    solver = SolverConfig(method="rk4", steps_per_layer=64)
    z = torch.tensor([[0.5, -0.3]], dtype=torch.float64)
    ideal = Chip(model, ChipConfig(), solver=solver).sample(0, z=z).x
    assert abs(float(ideal[0, 1]) + 0.04469) < 2e-5
    for width_s, moved in ((1e-11, 3e-4), (2.5e-11, 1.9e-3), (5e-11, 7.6e-3)):
        x = Chip(model, ChipConfig(switching_s=width_s), solver=solver).sample(0, z=z).x
        assert abs(abs(float(x[0, 1] - ideal[0, 1])) / moved - 1) < 0.1, width_s


def test_break_before_make_is_shorter_layers():
    model = small_model()
    tau = model.spec.hardware.tau_s
    gap = 0.05  # model time
    chip = Chip(model, ChipConfig(switching_s=gap * tau, switching_mode="break"))
    durations = [layer.duration for layer in chip.plan.layers]
    assert durations == pytest.approx([0.225, 0.2, 0.2, 0.225])
    with pytest.raises(UnsupportedChip, match="longer than layer"):
        Chip(model, ChipConfig(switching_s=0.3 * tau))


def test_thermal_noise_of_a_lone_rc_node_is_kt_over_c():
    """A conductance g to ground and a capacitor C settle at variance kT/C (and kT/(2C) for 2C)."""
    for cap in (1.0, 2.0):
        spec = CircuitSpec(name="rc", device="conductance", data_dim=1,
                           layers=(LayerSpec(duration=8.0, nodes=1, edges=((1, 0),), capacitance=cap),),
                           hardware=HardwareConstants(capacitance_f=1e-15),
                           solver=SolverConfig(method="rk4", steps_per_layer=800))
        model = KirchhoffNet(spec, params=[{"g": torch.tensor([1.0])}]).to(torch.float64)
        start = torch.zeros(20_000, 1, dtype=torch.float64)  # from 0 V: all variance is noise
        res = Chip(model, ChipConfig(noise=True)).sample(0, z=start, noise_generator=torch.Generator().manual_seed(0))
        assert res.stats.ok and res.logp is None
        kt_over_c = K_BOLTZMANN_J_PER_K * 300.0 / (1e-15 * cap)  # volts²
        ratio = float(res.x.var()) * spec.hardware.voltage_scale_v**2 / kt_over_c
        assert abs(ratio - 1) < 0.05, (cap, ratio)
    assert noise_scale(spec) == pytest.approx(math.sqrt(K_BOLTZMANN_J_PER_K * 300 / 1e-15))


def test_converters_and_noise_have_no_density():
    model = small_model()
    for chip in (ChipConfig(noise=True), ChipConfig(adc_bits=8), ChipConfig(dac_bits=6)):
        emu = Chip(model, chip)
        assert emu.sample(8, torch.Generator().manual_seed(0)).logp is None
        with pytest.raises(UnsupportedChip):
            emu.log_prob(torch.zeros(2, 3, dtype=torch.float64))
        with pytest.raises(UnsupportedChip):
            chip_model(model, chip)
    adc = Chip(model, ChipConfig(adc_bits=3)).sample(64, torch.Generator().manual_seed(0)).x
    step = model.spec.hardware.converter_full_scale / 3
    assert torch.allclose(adc / step, torch.round(adc / step))


def test_hardware_aware_loss_has_gradients():
    import numpy as np

    from models.config import TrainConfig
    from models.data import get_task
    from models.train import build_model, loss_fn
    cfg = TrainConfig(name="hw", task="twomoon", iterations=1, batch_size=16,
                      architecture={"layers": 2, "topology": {"repeat": 2}},
                      train_solver={"method": "rk4", "steps_per_layer": 2},
                      hardware_aware={"mismatch": 0.05, "quant_bits": 6, "instances": 2})
    model = build_model(cfg)
    loss = loss_fn(model, get_task("twomoon"), cfg, np.random.default_rng(0), 16)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
