"""Parameter tables, manifest checksums, bundle contents and byte-for-byte determinism."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile

import pytest
import torch
from helpers import tiny_checkpoint, tiny_model
from safetensors.torch import load as st_load

from export.artifacts import ARTIFACT_KINDS, build_all, build_artifact
from models.checkpoint import load_model
from models.config import CircuitSpec, LayerSpec
from models.flow import KirchhoffNet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck"), layers=2, device="affine-tanh")


def test_every_kind_has_its_content_type_and_name(checkpoint):
    model = load_model(checkpoint)
    for kind in ("netlist-sample", "params-csv", "params-json", "manifest"):
        art = build_artifact(model, kind, checkpoint)
        assert art.content_type == ARTIFACT_KINDS[kind].content_type
        assert art.filename == ARTIFACT_KINDS[kind].filename("tiny")
    with pytest.raises(ValueError, match="unknown artifact kind"):
        build_artifact(model, "netlist-forward", checkpoint)


def test_bundle_is_byte_identical_across_builds_and_dtypes(checkpoint):
    a = build_artifact(load_model(checkpoint, torch.float32), "bundle", checkpoint)
    b = build_artifact(load_model(checkpoint, torch.float64), "bundle", checkpoint)
    assert a.data == b.data
    assert a.filename == "tiny-bundle.zip" and a.content_type == "application/zip"


def test_bundle_holds_exactly_what_the_manifest_lists_with_matching_checksums(checkpoint):
    bundle = build_artifact(load_model(checkpoint), "bundle", checkpoint)
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        for entry in manifest["files"]:
            data = zf.read(entry["name"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
            assert len(data) == entry["bytes"]
        assert names == {e["name"] for e in manifest["files"]} | {"manifest.json"}
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    kinds = {e["kind"] for e in manifest["files"]}
    assert kinds == {"readme", "netlist-sample", "netlist-logprob", "netlist-reverse", "params-json",
                     "params-csv", "params-tensors", "onnx-sample", "onnx-logprob", "netlist-subckt-sample",
                     "netlist-subckt-logprob", "netlist-subckt-reverse", "verilog-a", "vacask-sample",
                     "vacask-logprob", "vacask-reverse"}
    assert "devices/tiny-devices.va" in names  # the Verilog-A modules live in devices/
    assert manifest["constants"]["tau_s"] == pytest.approx(1e-9)
    # the standalone manifest download is the bundle's manifest
    assert build_artifact(load_model(checkpoint), "manifest", checkpoint).data == json.dumps(
        manifest, indent=1).encode() + b"\n"


def test_separate_files_match_the_manifest(checkpoint):
    files = {a.filename: a for a in build_all(load_model(checkpoint), checkpoint)}
    manifest = json.loads(files.pop("manifest.json").data)
    assert {e["name"]: e["sha256"] for e in manifest["files"]} == {n: a.sha256 for n, a in files.items()}


def test_parameter_tables_are_in_physical_units():
    model = tiny_model(layers=2)
    hw = model.spec.hardware.model_copy(update={"voltage_scale_v": 0.5, "current_scale_a": 2e-6})
    model.spec = model.spec.model_copy(update={"hardware": hw})
    rows = list(csv.DictReader(io.StringIO(build_artifact(model, "params-csv").data.decode())))
    assert len(rows) == model.spec.num_edges
    raw = model.layers[1].params
    r = rows[len(model.spec.layers[0].edges) + 3]  # layer 1, edge 3
    assert (r["layer"], r["edge"], r["element"]) == ("1", "3", "B_L1_E3")
    assert float(r["a_per_v"]) == pytest.approx(float(raw["a"][3]) / 0.5, rel=1e-15)
    assert float(r["i0_a"]) == 2e-6
    assert float(r["t_start_s"]) == pytest.approx(0.5 * 1e-12 * 0.5 / 2e-6)
    doc = json.loads(build_artifact(model, "params-json").data)
    assert doc["layers"][1]["devices"][3]["b_per_v"] == pytest.approx(float(raw["b"][3]) / 0.5, rel=1e-15)
    tensors = st_load(build_artifact(model, "params-tensors").data)
    assert tensors["layer1.edges"].tolist() == [list(e) for e in model.spec.layers[1].edges]
    assert torch.equal(tensors["layer1.raw.c"], raw["c"])


def test_conductance_tables_use_siemens():
    model = tiny_model(layers=1, device="conductance")
    rows = list(csv.DictReader(io.StringIO(build_artifact(model, "params-csv").data.decode())))
    g = float(model.layers[0].params["g"][0])
    assert float(rows[0]["g_s"]) == pytest.approx(g * 1e-3 / 1.0)  # I0 / V0 = 1 mA / 1 V


def test_non_bijective_models_omit_the_log_density_artifacts():
    layers = (LayerSpec(duration=0.5, nodes=3, edges=((1, 2), (2, 3), (3, 0))),
              LayerSpec(duration=0.5, nodes=2, edges=((1, 2), (2, 0))))
    model = KirchhoffNet(CircuitSpec(name="shrink", device="affine-relu", data_dim=2, layers=layers)).double()
    with pytest.raises(ValueError, match="netlist-reverse is not available"):
        build_artifact(model, "netlist-reverse")
    with zipfile.ZipFile(io.BytesIO(build_artifact(model, "bundle").data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert "shrink-sample.cir" in zf.namelist() and "shrink-logprob.onnx" not in zf.namelist()
    assert set(manifest["omitted"]) == {"netlist-logprob", "netlist-reverse", "onnx-logprob", "netlist-subckt-logprob",
                                        "netlist-subckt-reverse", "vacask-logprob", "vacask-reverse"}
