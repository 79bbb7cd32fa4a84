"""ngspice runs the exported netlists and agrees with the model; the `knet export` and
`knet simulate` commands; the raw-file reader; the size guard."""
from __future__ import annotations

import json
import struct

import pytest
import torch

import export.spice as spice
from export.artifacts import build_artifact
from export.simulate import TooLarge, simulate
from export.spice import SpiceError, parse_raw
from helpers import tiny_checkpoint, tiny_model
from knet.cli import main
from models.checkpoint import load_model
from models.config import CircuitSpec, LayerSpec
from models.flow import KirchhoffNet
from models.topology import mixed

needs_ngspice = pytest.mark.skipif(spice.ngspice_path() is None,
                                   reason="ngspice is not installed (apt-get install ngspice)")

HEADER = "Title: t\nDate: x\nPlotname: Transient Analysis\nFlags: real\nNo. Variables: 2\nNo. Points: {n}\n" \
         "Variables:\n\t0\ttime\ttime\n\t1\tv(n1)\tvoltage\n"


def test_raw_reader_takes_the_last_block_of_an_ascii_file():
    stale = HEADER.format(n=1) + "Values:\n 0\t0\n\t9\n"  # ngspice repeats headers with `interp`
    fresh = HEADER.format(n=2) + "Values:\n 0\t0.0\n\t1.5\n 1\t2e-9\n\t-0.25\n"
    names, table = parse_raw((stale + fresh).encode())
    assert names == ["time", "v(n1)"] and table.tolist() == [[0.0, 1.5], [2e-9, -0.25]]


def test_raw_reader_binary():
    data = (HEADER.format(n=2) + "Binary:\n").encode() + struct.pack("<4d", 0.0, 0.5, 1e-9, 0.125)
    assert parse_raw(data)[1].tolist() == [[0.0, 0.5], [1e-9, 0.125]]


def test_missing_ngspice_is_a_clear_error(monkeypatch):
    from export.netlist import build_deck
    monkeypatch.setattr(spice, "NGSPICE", "ngspice-not-installed-here")
    with pytest.raises(SpiceError, match="ngspice is not installed"):
        spice.run_deck(build_deck(tiny_model(layers=1), "sample"))


def test_large_circuits_are_refused_before_running():
    edges = tuple(mixed((1, 8, 8), 5, 2, 2))
    layer = LayerSpec(duration=0.25, nodes=64, edges=edges)
    model = KirchhoffNet(CircuitSpec(name="digits-size", device="affine-tanh", data_dim=64, layers=(layer,) * 4))
    with pytest.raises(TooLarge, match=r"projected to take \d+ s .*--force"):
        simulate(model, n=16)


@pytest.mark.ngspice
@needs_ngspice
def test_all_three_netlists_agree_with_the_model():
    model = tiny_model(layers=3, nodes=2, repeat=1, dtype=torch.float32)
    report = simulate(model, n=2, seed=1)
    assert set(report.max_rel_error()) == {"sample", "logprob", "reverse"}
    assert {(r.variant, r.quantity) for r in report.rows} >= {("logprob", "log q"), ("reverse", "log p")}
    for variant, err in report.max_rel_error().items():
        assert err < 1e-3, (variant, report.table())
    assert report.simulated_time_s == pytest.approx(1.5e-9)


@pytest.mark.ngspice
@needs_ngspice
def test_growing_circuit_and_batched_decks_agree():
    layers = (LayerSpec(duration=0.5, nodes=2, edges=((1, 2), (2, 1), (0, 1))),
              LayerSpec(duration=0.5, nodes=3, edges=((1, 3), (3, 2), (2, 0), (3, 1))))
    model = KirchhoffNet(CircuitSpec(name="grow", device="affine-tanh", data_dim=2, layers=layers), init_scale=0.8)
    model.requires_grad_(False)
    report = simulate(model, n=2, mode="batch", chunk=2)
    assert report.ngspice_runs == 1 and set(report.skipped) == {"logprob", "reverse"}
    assert report.max_rel_error()["sample"] < 1e-3


@pytest.mark.ngspice
@needs_ngspice
def test_knet_simulate_json(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "ck", layers=2, repeat=1)
    code = main(["simulate", str(ck), "-n", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out["max_rel_error"]) == {"sample", "logprob", "reverse"}
    for key in ("projected_latency_s", "simulated_time_s", "ngspice_wall_s"):
        assert out[key] > 0


def test_knet_export_writes_the_artifact_bytes(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "ck", layers=2)
    assert main(["export", "bundle", str(ck), "--out", str(tmp_path / "b.zip")]) == 0
    assert (tmp_path / "b.zip").read_bytes() == build_artifact(load_model(ck), "bundle", ck).data
    assert main(["export", "netlist", str(ck), "--out", str(tmp_path / "nets")]) == 0
    assert sorted(p.name for p in (tmp_path / "nets").iterdir()) == ["tiny-logprob.cir", "tiny-reverse.cir",
                                                                     "tiny-sample.cir"]
    capsys.readouterr()
    assert main(["export", "params", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.ngspice
@needs_ngspice
def test_a_run_past_its_timeout_is_killed_with_a_clear_error():
    from export.netlist import build_deck
    with pytest.raises(SpiceError, match="did not finish within 0.001 s"):
        spice.run_deck(build_deck(tiny_model(layers=3), "logprob"), timeout_s=0.001)
