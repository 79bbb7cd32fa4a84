"""Emulated chip instances in the circuit simulator: a mismatched, quantized instance's
netlist agrees in ngspice with the model's perturbed circuit (and not with the ideal one);
same seed, same netlist; the chip flags of `knet export` and `knet simulate`; the chip's
parameter table. The noise deck's statistics are a slow test at the end of this file."""
from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import tiny_checkpoint

from benchmarks import noise_ngspice
from benchmarks.noise_ngspice import noise_circuit
from export.artifacts import build_artifact
from export.chip_export import chip_artifact, chip_instance
from export.netlist import build_deck
from export.noise_deck import (
    SOURCES,
    compare_noise,
    noise_deck,
    noise_interval_s,
    simulate_noise,
    variance_ratio_interval,
)
from export.simulate import reference
from export.spice import run_deck
from export.spice_ir import tnum
from knet.cli import main
from models.checkpoint import load_model
from models.config import ChipConfig
from models.flow import KirchhoffNet

BAR = 1e-4  # relative agreement the exported decks are held to
CHIP = ChipConfig(mismatch=0.1, quant_bits=6, instance=11)


def small_circuit() -> KirchhoffNet:
    """3 nodes, 2 layers of 5 affine-tanh devices (ground edges included), unequal capacitors, C = 1 pF."""
    return noise_circuit(capacitance_f=1e-12, steps=32)


def simulated(model: KirchhoffNet, variant: str, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """ngspice's read-outs of ``model``'s ``variant`` deck for latents ``z (n, d)`` (one deck,
    n copies), in model units, keyed like :func:`export.simulate.reference`."""
    deck = build_deck(model, variant, z, measures=False)
    run = run_deck(deck, timeout_s=120)
    v0 = model.spec.hardware.voltage_scale_v
    out = {"x": torch.empty_like(z)}
    if variant == "logprob":
        out["log q"] = torch.empty(z.shape[0], 1, dtype=z.dtype)
    for r in deck.readouts:
        value = run.values[r.label] / v0
        if r.quantity == "logp":
            out["log q"][r.copy, 0] = value
        else:
            out["x"][r.copy, int(r.quantity[1:]) - 1] = value
    return out


def rel_error(sim: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Max over quantities of max|sim − ref| / max|ref| (as `knet simulate`)."""
    return max(((sim[q] - ref[q]).abs().max() / ref[q].abs().max()).item() for q in ref)


@pytest.mark.ngspice
@pytest.mark.parametrize("variant", ["sample", "logprob"])
def test_perturbed_netlist_agrees_with_the_perturbed_model_not_the_ideal_one(variant):
    model = small_circuit()
    chip = chip_instance(model, CHIP)
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sim = simulated(chip, variant, z)
    perturbed = reference(chip, z, [variant])[0][variant]
    ideal = reference(model, z, [variant])[0][variant]
    err_chip, err_ideal = rel_error(sim, perturbed), rel_error(sim, ideal)
    assert err_chip <= BAR, (variant, err_chip)
    # the mismatch really reached the deck: the ideal model misses it by far more than the bar
    assert err_ideal > 100 * BAR, (variant, err_ideal)


def test_same_instance_same_netlist_other_instance_other_netlist():
    model = small_circuit()
    one = chip_artifact(model, "netlist-logprob", CHIP).data
    again = chip_artifact(model, "netlist-logprob", CHIP).data
    other = chip_artifact(model, "netlist-logprob", CHIP.model_copy(update={"instance": 12})).data
    ideal = build_artifact(model, "netlist-logprob").data
    assert one == again
    assert one != other and one != ideal
    header = [line for line in one.decode().splitlines() if line.startswith("* chip instance")]
    assert header == ["* chip instance 11 (models.chip): mismatch sigma 0.1 (gains a, b and I0, relative), "
                      "offset sigma 0.1 V0, capacitor sigma 0.1 (relative); weights 6 bits; layer switching hard (0 s)"]
    assert b"chip instance" not in ideal
    # the body differs only in device values and capacitors, never in structure
    strip = (lambda text: [line.split(" ")[:3] for line in text.decode().splitlines()
                           if line[:2] in ("B_", "BD", "C_")])
    assert strip(one) == strip(ideal)


def test_chip_parameter_table_carries_each_device_current_scale():
    model = small_circuit()
    doc = json.loads(chip_artifact(model, "params-json", CHIP).data)
    chip = chip_instance(model, CHIP)
    i0 = model.spec.hardware.current_scale_a
    want = [i0 * float(s) for layer in chip.layers for s in layer.current_scale]
    got = [d["i0_a"] for layer in doc["layers"] for d in layer["devices"]]
    assert got == pytest.approx(want, rel=1e-15)
    assert len(set(got)) == len(got)  # every device has its own I0
    assert doc["chip"]["mismatch"] == 0.1 and doc["chip"]["instance"] == 11
    caps = [n["capacitance_f"] for n in doc["nodes"]]
    ideal = [1e-12 * c for c in (1.0, 0.6, 1.7)]
    assert all(abs(c / i - 1) > 1e-4 for c, i in zip(caps, ideal))  # capacitor mismatch applied
    assert "chip" not in json.loads(build_artifact(model, "params-json").data)


def test_knet_export_chip_flags(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "ck", layers=2, repeat=1)
    flags = ["--mismatch", "0.05", "--instance", "3", "--quant-bits", "8"]
    assert main(["export", "netlist", str(ck), "--variant", "sample", "--out", str(tmp_path / "n.cir"), *flags]) == 0
    out = json.loads(capsys.readouterr().out)
    chip = ChipConfig(mismatch=0.05, instance=3, quant_bits=8)
    assert out["chip"] == chip.model_dump()
    assert (tmp_path / "n.cir").read_bytes() == chip_artifact(load_model(ck), "netlist-sample", chip, ck).data
    assert main(["export", "netlist", str(ck), "--variant", "sample", "--style", "subckt", *flags,
                 "--out", str(tmp_path / "x.cir")]) == 0
    assert "\n* chip instance 3 (models.chip): mismatch sigma 0.05" in (tmp_path / "x.cir").read_text()
    # flags that leave every effect off write the ideal netlist, byte for byte
    assert main(["export", "netlist", str(ck), "--variant", "sample", "--out", str(tmp_path / "i.cir"),
                 "--mismatch", "0", "--instance", "9"]) == 0
    assert (tmp_path / "i.cir").read_bytes() == build_artifact(load_model(ck), "netlist-sample", ck).data
    for bad, flag in ((["--mismatch", "-0.1"], "--mismatch"), (["--quant-bits", "1"], "--quant-bits"),
                      (["--instance", "-1"], "--instance"), (["--switching-s", "1"], "--switching-s"),
                      (["--mismatch", "nan"], "--mismatch")):
        capsys.readouterr()
        assert main(["export", "params", str(ck), "--out", str(tmp_path / "p"), *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} ") and "Traceback" not in err, err
    capsys.readouterr()
    # a transition longer than a layer (0.5 ns here) cannot be emulated
    assert main(["export", "netlist", str(ck), "--out", str(tmp_path / "s"), "--switching-s", "9e-7"]) == 2
    assert "longer than layer" in capsys.readouterr().err


@pytest.mark.ngspice
def test_knet_simulate_a_chip_instance(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "ck", layers=2, repeat=1)
    code = main(["simulate", str(ck), "-n", "1", "--variants", "sample", "--simulator", "ngspice", "--json",
                 "--mismatch", "0.05", "--instance", "4", "--quant-bits", "8"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["chip"]["instance"] == 4 and out["chip"]["quant_bits"] == 8
    assert 0 <= out["max_rel_error"]["sample"] <= BAR


# ---------------------------------------------------------------------------------------------
# Thermal noise in ngspice against the SDE of models.chip (export.noise_deck).

def test_variance_ratio_interval_of_200_runs_is_about_20_percent():
    lo, hi = variance_ratio_interval(200)
    assert lo == pytest.approx(0.8132, abs=2e-3) and hi == pytest.approx(1.2058, abs=2e-3)  # χ² tables, 199 dof
    assert SOURCES == noise_ngspice.SOURCES


def test_noise_deck_amplitude_and_gating():
    model = noise_circuit()
    deck = noise_deck(model, torch.tensor(noise_ngspice.LATENT), "pwl", seed=1)
    delta = noise_interval_s(model)
    hw = model.spec.hardware
    kt = 1.380649e-23 * hw.temperature_k
    lines = {el.name: el for el in deck.elements}
    gain = model.layers[1].operator("gather").noise_gain
    for e in range(5):
        el = lines[f"BN_L1_E{e}"]
        amp = float(el.value.split("*")[0][2:])
        # white noise of one-sided density 4kT·g sampled every Δ: rms sqrt(4kT·g/(2Δ)) per unit act'
        assert amp == pytest.approx(math.sqrt(4 * kt * hw.current_scale_a / hw.voltage_scale_v * float(gain[e])
                                              / (2 * delta)), rel=1e-12)
        assert el.value.startswith(f"I={el.value.split('*')[0][2:]}*V(g1)*sqrt((1 - tanh(")
        assert el.value.endswith(f"*V(nn_L1_E{e})")
    assert deck.render() == noise_deck(model, torch.tensor(noise_ngspice.LATENT), "pwl", seed=1).render()
    assert deck.render() != noise_deck(model, torch.tensor(noise_ngspice.LATENT), "pwl", seed=2).render()
    assert f"TRNOISE(1 {tnum(delta)} 0 0)" in noise_deck(model, torch.tensor(noise_ngspice.LATENT)).render()


@pytest.mark.slow
@pytest.mark.ngspice
def test_noise_in_ngspice_matches_the_sde():
    """200 noisy runs per source against 20 000 SDE paths (~1–2 min on 2 cores).

    pwl (seeded, so deterministic): every variance ratio inside the 95 % interval (±20 %).
    trnoise (ngspice seeds it from its pid, so each run of this test draws anew): inside the
    99.9 % interval, so that a correct deck fails this test about once in 300 runs while an
    amplitude off by √2 (ratio 2 or 0.5) always fails it.
    """
    model = noise_circuit()
    chip = ChipConfig(mismatch=0.05, instance=2)
    z = torch.tensor(noise_ngspice.LATENT, dtype=torch.float64)
    for source, level in (("pwl", 0.95), ("trnoise", 0.999)):
        r = compare_noise(model, chip, z, runs=200, sde_samples=20000, source=source, jobs=2)
        lo, hi = variance_ratio_interval(200, level)
        assert all(lo <= x <= hi for x in r.ratio), (source, r.ratio, (lo, hi))
        assert all(abs(m) < 4 for m in r.mean_z), (source, r.mean_z)
        assert r.distinct_runs == 200
        assert min(r.var_sim) > 1e-8  # the noise is far above the deck's integration error (~1e-5 V)
    circuit = chip_instance(model, chip)
    once, again = (simulate_noise(circuit, z, 2, "pwl", seed=7)[0] for _ in range(2))
    assert torch.equal(once, again)  # seeded pwl noise: the same seed, the same runs
