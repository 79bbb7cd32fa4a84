"""`knet robustness` and `knet design-space` on a small checkpoint: files, schema, physics."""
from __future__ import annotations

import csv
import json

import pytest
from helpers import tiny_checkpoint
from PIL import Image

from knet.cli import main
from models.checkpoint import CONFIG_FILE

ROW_KEYS = {"effect", "level", "nll", "nll_se", "nll_worst", "distance", "distance_ci", "instances"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tiny_checkpoint(tmp_path_factory.mktemp("chip") / "tiny", steps=8, init_scale=1.0, repeat=3)
    (directory / CONFIG_FILE).write_text("name: tiny\ntask: 8gaussians\n")
    return directory


def test_robustness_command(checkpoint, tmp_path, capsys):
    out = tmp_path / "rob"
    args = ["robustness", str(checkpoint), "--instances", "4", "--eval-points", "512", "--sample-points", "256",
            "--bootstrap", "20", "--levels", "mismatch=0,0.2", "--levels", "quantization=3",
            "--levels", "switching=1e-11", "--levels", "noise=0.001", "--levels", "adc=4", "--out", str(out), "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = {(r["effect"], r["level"]): r for r in printed["rows"]}
    assert all(set(r) == ROW_KEYS for r in printed["rows"])
    assert set(rows) == {("mismatch", 0.0), ("mismatch", 0.2), ("quantization", 3.0), ("switching", 1e-11),
                         ("noise", 0.001), ("adc", 4.0)}
    ideal, bad = rows[("mismatch", 0.0)], rows[("mismatch", 0.2)]
    assert ideal["instances"] == 1 and bad["instances"] == 4
    # 20 % mismatch on four chips: each differs from the ideal circuit, the worst is worst
    assert bad["nll_worst"] >= bad["nll"] and bad["nll"] != ideal["nll"]
    lo, hi = bad["distance_ci"]
    assert lo <= hi
    for key in (("noise", 0.001), ("adc", 4.0)):  # no tractable density
        assert rows[key]["nll"] is None and rows[key]["nll_worst"] is None
    assert rows[("quantization", 3.0)]["nll"] is not None
    saved = json.loads((out / "robustness.json").read_text())
    assert saved["rows"] == printed["rows"] and saved["metric"] == "nll"
    assert "solver_check" in saved and saved["solver_check"]["max_abs_error_logp"] >= 0
    with (out / "robustness.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
    with Image.open(out / "robustness.png") as img:
        assert img.format == "PNG" and img.width > 600


@pytest.mark.parametrize("argv, message", [
    (["--effects", "mismatch,warp"], "unknown effect warp"),
    (["--levels", "quantization=4.5"], "bits must be positive integers"),
    (["--levels", "mismatch=a,b"], "comma-separated numbers"),
    (["--instances", "1"], "--instances must be >= 2"),
])
def test_robustness_bad_flags(checkpoint, tmp_path, capsys, argv, message):
    assert main(["robustness", str(checkpoint), "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_design_space_command(checkpoint, tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["design-space", str(checkpoint), "--capacitances", "1e-14,1e-12", "--currents", "1e-6,1e-3",
            "--voltages", "1", "--samples", "128", "--switching-s", "2e-11", "--out", str(out), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    points = {(p["capacitance_f"], p["current_scale_a"]): p for p in report["points"]}
    assert len(points) == 4
    for (c, i0), p in points.items():
        tau = c * 1.0 / i0
        assert p["tau_s"] == pytest.approx(tau)
        assert p["latency_s"] == pytest.approx(1.0 * tau + 10e-9)  # T = 1, DAC + ADC 5 ns each
        assert p["noise_rel"] == pytest.approx((1.380649e-23 * 300 / c) ** 0.5)
    # energy does not depend on I0; it scales with C
    assert points[(1e-12, 1e-6)]["energy_j"] == pytest.approx(points[(1e-12, 1e-3)]["energy_j"])
    assert points[(1e-12, 1e-3)]["energy_j"] > points[(1e-14, 1e-3)]["energy_j"]
    # a 20 ps switch outlasts a 0.5 τ layer at τ = 10 ps: infeasible, not a number
    assert not points[(1e-14, 1e-3)]["feasible"] and points[(1e-14, 1e-3)]["distance"] is None
    assert points[(1e-12, 1e-6)]["feasible"] and points[(1e-12, 1e-6)]["switching_error"] < 1e-3
    assert any(p["pareto"] for p in report["points"])
    assert all(p["keeps_quality"] for p in report["points"] if p["pareto"])
    # the switch only matters through τ: equal τ, equal NLL of the switched chip (exact flow)
    slow = points[(1e-12, 1e-6)]
    assert slow["nll"] is not None and abs(slow["nll"] - report["ideal_nll"]) < 0.01 and slow["keeps_quality"]
    assert points[(1e-14, 1e-3)]["nll"] is None and not points[(1e-14, 1e-3)]["keeps_quality"]
    with Image.open(out / "design_space.png") as img:
        assert img.format == "PNG"
    assert (out / "design_space.csv").read_text().count("\n") == 5
