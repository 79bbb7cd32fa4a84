"""Importing circuits designed elsewhere, checkpoints, and the offline CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_checkpoint, tiny_model

from models.checkpoint import CheckpointError, circuit_from_dict, content_hash, load_model, save_model

ROOT = Path(__file__).resolve().parent.parent


def external_circuit() -> dict:
    return {"name": "twomoon-ext", "device": "affine-tanh", "data_dim": 2,
            "layers": [{"duration": 0.5, "nodes": 2, "edges": [[0, 1], [1, 2], [2, 0], [1, 2]],
                        "params": {"a": [0.1, 0.2, 0.3, 0.4], "b": [0.5, 0.6, 0.7, 0.8],
                                   "c": [0.0, 0.1, 0.2, 0.3]}},
                       {"duration": 0.5, "nodes": 2, "edges": [[2, 1], [0, 2]],
                        "params": {"a": [1.0, -1.0], "b": [0.5, 0.25], "c": [0.0, 0.0]}}]}


def test_import_builds_the_described_circuit():
    model = circuit_from_dict(external_circuit(), torch.float64)
    assert model.spec.num_edges == 6 and model.spec.end_time == 1.0
    op = model.layers[1].operator("gather")
    v = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    # edge (2→1): i = tanh(1.0·v2 + 0.5·v1); edge (0→2): i = tanh(−1.0·0 + 0.25·v2)
    i1 = torch.tanh(torch.tensor(1.0 * -0.7 + 0.5 * 0.3, dtype=torch.float64))
    i2 = torch.tanh(torch.tensor(0.25 * -0.7, dtype=torch.float64))
    torch.testing.assert_close(op.rhs(v), torch.stack([i1, -i1 + i2]).reshape(1, 2))


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["layers"][1]["edges"].__setitem__(0, [2, 5]), r"layer 1, edge 0: node index outside 0..2"),
    (lambda c: c["layers"][0]["edges"].__setitem__(2, [1, 1]), r"layer 0, edge 2: self-loop"),
    (lambda c: c["layers"][0]["params"]["b"].pop(), r"layer 0: parameter 'b' has 3 values for 4 edges"),
    (lambda c: c.__setitem__("device", "memristor"), r"unknown device 'memristor'"),
    (lambda c: c["layers"][1]["params"]["c"].__setitem__(1, float("nan")),
     r"layer 1, edge 1: parameter 'c' is not a finite"),
    (lambda c: c["layers"][0]["params"].__setitem__("g", [1.0]),
     r"layer 0: device affine-tanh takes parameters a, b, c, not g"),
    (lambda c: c["layers"][0].pop("duration"), r"layer 0: missing field 'duration'"),
    (lambda c: c["layers"][0]["edges"].__setitem__(1, [1]), r"layer 0, edge 1: expected \[source, destination\]"),
])
def test_import_errors_name_layer_and_edge(mutate, message):
    circuit = external_circuit()
    mutate(circuit)
    with pytest.raises(CheckpointError, match=message):
        circuit_from_dict(circuit)


def test_diff_and_conductance_import_take_their_own_parameters():
    c = external_circuit()
    c["device"] = "conductance"
    for layer in c["layers"]:
        layer["params"] = {"g": [0.5] * len(layer["edges"])}
    assert circuit_from_dict(c).spec.device == "conductance"
    c["device"] = "diff-relu"
    for layer in c["layers"]:
        layer["params"] = {"a": [0.5] * len(layer["edges"]), "c": [0.1] * len(layer["edges"])}
    assert circuit_from_dict(c).layers[0].family.param_names == ("a", "c")


def test_checkpoint_round_trip_and_hash(tmp_path):
    model = tiny_model(seed=4)
    digest = save_model(model, tmp_path / "ck")
    assert digest == content_hash(tmp_path / "ck") and len(digest) == 64
    loaded = load_model(tmp_path / "ck", torch.float64)
    z = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.sample(4, z=z).x, model.sample(4, z=z).x, rtol=0, atol=0)


def test_corrupt_checkpoints_fail_clearly(tmp_path):
    ck = tiny_checkpoint(tmp_path / "ck")
    (ck / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_model(ck)
    ck2 = tiny_checkpoint(tmp_path / "ck2")
    (ck2 / "circuit.json").write_text('{"name": "x"}')
    with pytest.raises(CheckpointError, match="invalid circuit"):
        load_model(ck2)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "missing")


def knet(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "knet", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_import_sample_logprob_round_trip(tmp_path):
    src = tmp_path / "ext.json"
    src.write_text(json.dumps(external_circuit()))
    r = knet("import-circuit", str(src), "--out", str(tmp_path / "ck"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["edges"] == 6
    r = knet("sample", str(tmp_path / "ck"), "-n", "3", "--seed", "5", "--dtype", "float64")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and len(out["samples"]) == 3 and len(out["logprob"]) == 3
    r2 = knet("logprob", str(tmp_path / "ck"), "--points", "-", "--dtype", "float64",
              stdin=json.dumps(out["samples"]))
    assert r2.returncode == 0, r2.stderr
    for a, b in zip(json.loads(r2.stdout)["logprob"], out["logprob"]):
        assert a == pytest.approx(b, abs=1e-5)  # RK4 forward vs RK4 backward


@pytest.mark.parametrize("args, stdin, message", [
    (("sample", "no-such-model"), None, "neither a zoo model"),
    (("logprob", "{ck}", "--points", "-"), "[[1, 2, 3]]", "points[0]: expected a list of 2"),
    (("logprob", "{ck}", "--points", "-"), "[[1, NaN]]", "points[0]: coordinates must be finite"),
    (("logprob", "{ck}", "--points", "-"), "not json", "not valid JSON"),
    (("sample", "{ck}", "-n", "0"), None, "-n must be >= 1"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, stdin, message):
    ck = tiny_checkpoint(tmp_path / "ck")
    r = knet(*(a.format(ck=ck) for a in args), stdin=stdin)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_checkpoint_bytes_are_identical_across_processes(tmp_path):
    code = ("import sys; from helpers import tiny_checkpoint; "
            "from pathlib import Path; tiny_checkpoint(Path(sys.argv[1]), seed=2)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    digests = set()
    for k in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"ck{k}")], cwd=ROOT, env=env, check=True,
                       timeout=120)
        digests.add(content_hash(tmp_path / f"ck{k}"))
    assert len(digests) == 1
