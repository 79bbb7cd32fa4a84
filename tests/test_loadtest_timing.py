"""Projected chip timing, energy and the served/chip ratios against hand-computed values;
the scenario plan; the loopback guard."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_spec

from export.simulate import ErrorRow, SimulationReport
from knet.cli import main
from loadtest.circuit import SimulationSummary, figures
from loadtest.machine import cpu_count, pinning
from loadtest.plan import Plan, Scenario, quick_plan
from loadtest.runner import ratios
from loadtest.session import check_loopback
from models.config import HardwareConstants
from models.errors import UserInputError

DATA = Path(__file__).resolve().parent / "data" / "loadtest"


def spec_with(hw: HardwareConstants, **kw):
    return tiny_spec(**kw).model_copy(update={"hardware": hw})


def test_projected_timing_hand_computed():
    # τ = C·V0/I0 = 2 pF · 0.5 V / 0.1 mA = 10 ns; T = 3 layers × 0.5 = 1.5 → T·τ = 15 ns
    hw = HardwareConstants(capacitance_f=2e-12, voltage_scale_v=0.5, current_scale_a=1e-4,
                           dac_setup_s=3e-9, adc_readout_s=7e-9)
    f = figures(spec_with(hw, layers=3, duration=0.5), "m")
    assert f.tau_s == pytest.approx(1e-8)
    assert f.settle_s == pytest.approx(1.5e-8)
    assert f.chip_latency_s == pytest.approx(1.5e-8 + 3e-9 + 7e-9)  # 25 ns


def test_default_constants_give_eleven_ns():
    # 1 pF · 1 V / 1 mA = 1 ns per model-time unit; T = 2 × 0.5 = 1 → 1 ns + 5 ns + 5 ns
    assert figures(tiny_spec(), "m").chip_latency_s == pytest.approx(11e-9)


def test_energy_hand_computed():
    hw = HardwareConstants(capacitance_f=2e-12, voltage_scale_v=0.5, current_scale_a=1e-4)
    spec = spec_with(hw, layers=2, nodes=2, duration=0.5)
    assert [len(layer.edges) for layer in spec.layers] == [12, 12]  # 3 nodes incl. ground, ×2 repeats
    f = figures(spec, "m")
    assert f.capacitor_energy_j == pytest.approx(2 * 0.5 * 2e-12 * 0.5 ** 2)  # N·½·C·V0² = 0.5 pJ
    # Σ_l E_l·I0·V0·d_l·τ = 2 × 12 × 1e-4 A × 0.5 V × 0.5 × 10 ns = 6 pJ
    assert f.device_energy_j == pytest.approx(6e-12)
    assert f.energy_j == pytest.approx(6.5e-12)


def test_ratios_hand_computed():
    per_request, per_sample = ratios(p50_s=0.011, samples_per_s=1000.0, chip_s=1.1e-8)
    assert per_request == pytest.approx(1e6)
    assert per_sample == pytest.approx(1e-3 / 1.1e-8)
    assert ratios(0.011, 0.0, None) == (None, None)
    assert ratios(None, 0.0, 1e-8) == (None, None)


def test_simulation_json_captured_from_knet_simulate():
    # `knet simulate twomoon -n 2 --variants sample,logprob --json`, captured
    raw = json.loads((DATA / "simulate_twomoon.json").read_text())
    sim = SimulationSummary.from_simulate_json(raw)
    assert sim.max_rel_error == raw["max_rel_error"] and set(sim.max_rel_error) == {"sample", "logprob"}
    assert sim.worst_rel_error == max(raw["max_rel_error"].values())
    assert (sim.simulated_time_s, sim.projected_latency_s) == (1e-9, 1.1e-8)  # T·τ, T·τ + 10 ns
    assert sim.ngspice_wall_s == raw["ngspice_wall_s"]


def test_simulation_schema_is_the_one_knet_simulate_writes():
    # the object `knet simulate --json` prints, built by the exporter itself: if its schema
    # drifts (a field renamed or dropped), the load test's parser fails here, not in a report
    report = SimulationReport(
        model="m", n=2, mode="per-input", rows=[ErrorRow("sample", "x", 2e-6, 1e-6),
                                                ErrorRow("logprob", "x", 3e-6, 2e-6),
                                                ErrorRow("logprob", "log q", 5e-6, 4e-6)],
        projected_latency_s=2.5e-8, simulated_time_s=1.5e-8, ngspice_wall_s=0.75, ngspice_cpu_s=0.5,
        ngspice_elapsed_s=0.8, ngspice_runs=4, reference_wall_s=0.1, variants=["sample", "logprob"])
    sim = SimulationSummary.from_simulate_json(json.loads(json.dumps(report.to_json())), exit_code=0)
    assert sim.max_rel_error == {"sample": 1e-6, "logprob": 4e-6} and sim.worst_rel_error == 4e-6
    assert (sim.simulated_time_s, sim.projected_latency_s, sim.ngspice_wall_s) == (1.5e-8, 2.5e-8, 0.75)


@pytest.mark.parametrize("broken", [
    [],  # not an object
    {"max_rel_error": {"sample": 0.01}, "projected_latency_s": 1e-8, "ngspice_wall_s": 1.0},  # no simulated_time_s
    {"max_rel_error": {"sample": "0.01"}, "simulated_time_s": 1e-9, "projected_latency_s": 1e-8,
     "ngspice_wall_s": 1.0},  # an error that is not a number
    {"variants": {"sample": {"max_rel_error": 0.01}}},  # another schema altogether
])
def test_simulation_json_of_another_schema_is_refused(broken):
    with pytest.raises(ValueError, match="knet simulate --json"):
        SimulationSummary.from_simulate_json(broken)


def test_plan_matrix_and_bounds():
    plan = Plan()
    steps = plan.closed_steps()
    assert len(steps) == 3 * 2 * 3 * 4  # models × endpoints × sizes × concurrency
    assert all(s.duration_s == 5.0 and s.max_requests == 5000 for s in steps)
    opens = plan.open_steps(peak_rps=20.0)
    assert [s.rate_rps for s in opens] == [10.0, 20.0, 40.0]
    assert opens[0].scenario == Scenario("twomoon", "sample", 64)
    assert len(quick_plan("tiny").closed_steps()) == 1 and quick_plan("tiny").open_steps(10.0) == []
    narrow = Plan(models=("a",), rows=(1, 16, 256), endpoints=("sample",)).with_models(("a",))
    assert narrow.open_loop_scenario() == Scenario("a", "sample", 16)
    with pytest.raises(ValueError):
        Plan(step_s=0)


@pytest.mark.parametrize("url", ["http://127.0.0.1:3000", "http://localhost:8080/", "http://[::1]:3000",
                                 "http://127.0.0.2:1"])
def test_loopback_urls_accepted(url):
    assert check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://10.0.0.1:3000", "http://example.com", "ftp://127.0.0.1/", "127.0.0.1:3000"])
def test_other_urls_refused(url):
    with pytest.raises(UserInputError):
        check_loopback(url)


def test_cli_refuses_remote_url(capsys):
    assert main(["loadtest", "--url", "http://192.0.2.1:3000", "--quick"]) == 2
    assert "not loopback" in capsys.readouterr().err


def test_cpu_list_count():
    assert (cpu_count("0-1"), cpu_count("1"), cpu_count("0-3,6"), cpu_count(None)) == (2, 1, 5, 0)


def test_pinning_splits_cpus_between_client_and_server():
    assert pinning(False, True, 2) == ("1", "0")
    assert pinning(False, True, 16) == ("8-15", "0-7")
    assert pinning(False, False, 2) == (None, "0")
    assert pinning(True, True, 2) == (None, None) and pinning(False, True, 1) == (None, None)
