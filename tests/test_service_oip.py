"""The Open Inference Protocol (service/oip.py) against the session's real server
(tests/conftest.py ``server``), through the real ``tritonclient[http]`` client and plain HTTP:
the answers must equal the native ``/logprob`` and ``/sample`` answers for the same inputs."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from helpers import MAX_BODY, MAX_POINTS
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def oip(server):
    client, *_ = server
    url = str(client.base_url).removeprefix("http://").rstrip("/")
    tc = triton.InferenceServerClient(url, network_timeout=60)
    yield tc, client
    tc.close()


def _input(name: str, array: np.ndarray, binary: bool) -> triton.InferInput:
    t = triton.InferInput(name, list(array.shape), "FP64" if array.dtype == np.float64 else "FP32")
    t.set_data_from_numpy(array, binary_data=binary)
    return t


def _counter(client, name: str, **labels) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_health_server_and_model_metadata(oip):
    tc, client = oip
    assert tc.is_server_live() and tc.is_server_ready()
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    versions = [v["version"] for v in client.get("/models/tiny/versions").json()["versions"]]
    meta = tc.get_model_metadata("tiny")
    assert meta["versions"] == versions and len(versions) == 2
    assert meta["inputs"] == [{"name": "points", "datatype": "FP64", "shape": [-1, 2]}]
    assert meta["outputs"] == [{"name": "logprob", "datatype": "FP64", "shape": [-1]}]
    sampler = tc.get_model_metadata("tiny3-sample")
    assert sampler["inputs"] == [{"name": "z", "datatype": "FP64", "shape": [-1, 3]}]
    assert [o["name"] for o in sampler["outputs"]] == ["samples", "logprob"]
    assert tc.is_model_ready("tiny-sample") and tc.is_model_ready("tiny", model_version=versions[1])
    assert not tc.is_model_ready("nope") and not tc.is_model_ready("tiny", model_version="nope")
    with pytest.raises(InferenceServerException, match="tiny-sample"):
        tc.get_model_metadata("nope")  # the 404 names the OIP models served


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logprob_equals_native(oip, binary, dtype):
    tc, client = oip
    points = np.random.default_rng(3).normal(size=(7, 2)).astype(dtype)
    native = client.post("/logprob", json={"model": "tiny", "points": points.tolist()}).json()
    before = _counter(client, "knet_requests_total", model="tiny", endpoint="logprob")
    res = tc.infer("tiny", [_input("points", points, binary)],
                   outputs=[triton.InferRequestedOutput("logprob", binary_data=binary)])
    assert res.as_numpy("logprob").tolist() == native["logprob"]
    params = res.get_response()["parameters"]
    assert params["status"] == "success" and params["nfe"] == native["nfe"] > 0
    assert params["projected_chip_latency_s"] == native["projected_chip_latency_s"] and params["solve_s"] > 0
    assert res.get_response()["model_version"] == native["version"]
    assert _counter(client, "knet_requests_total", model="tiny", endpoint="logprob") == before + 1


def test_sampler_from_seed_and_from_z_equals_native(oip):
    tc, client = oip
    native = client.post("/sample", json={"model": "tiny3", "n": 5, "seed": 11}).json()
    res = tc.infer("tiny3-sample", [], parameters={"n": 5, "seed": 11})  # all outputs, binary by default
    assert res.as_numpy("samples").tolist() == native["samples"]
    assert res.as_numpy("logprob").tolist() == native["logprob"]
    assert res.get_response()["parameters"]["seed"] == 11
    # the same latents passed in as z: the seed's normal draw, as the native endpoint makes it
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64).numpy()
    res = tc.infer("tiny3-sample", [_input("z", z, binary=False)],
                   outputs=[triton.InferRequestedOutput("samples", binary_data=False)])
    assert res.as_numpy("samples").tolist() == native["samples"] and res.as_numpy("logprob") is None


def test_sampler_chip_parameter_equals_native_chip(oip):
    tc, client = oip
    chip = {"mismatch": 0.05, "quant_bits": 6, "instance": 3}
    native = client.post("/sample", json={"model": "tiny3", "n": 4, "seed": 2, "chip": chip}).json()
    ideal = client.post("/sample", json={"model": "tiny3", "n": 4, "seed": 2}).json()
    res = tc.infer("tiny3-sample", [], parameters={"n": 4, "seed": 2, "chip": json.dumps(chip)})
    assert res.as_numpy("samples").tolist() == native["samples"] != ideal["samples"]
    assert json.loads(res.get_response()["parameters"]["chip"]) == native["chip"]


def test_plain_http_round_trip_and_pinned_version(oip):
    _, client = oip
    versions = client.get("/models/tiny/versions").json()["versions"]
    older = versions[-1]["version"]
    points = [[0.25, -0.5], [1.0, 0.75]]
    native = client.post("/logprob", json={"model": "tiny", "version": older, "points": points}).json()
    body = {"id": "r1", "inputs": [{"name": "points", "shape": [2, 2], "datatype": "FP64",
                                    "data": [v for row in points for v in row]}]}
    r = client.post(f"/v2/models/tiny/versions/{older}/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["id"], out["model_name"], out["model_version"]) == ("r1", "tiny", older)
    assert out["outputs"] == [{"name": "logprob", "datatype": "FP64", "shape": [2], "data": native["logprob"]}]
    latest = client.post("/v2/models/tiny/infer", json=body).json()
    assert latest["outputs"][0]["data"] != native["logprob"] and latest["model_version"] == versions[0]["version"]


def _post(client, path: str, body) -> tuple[int, dict]:
    r = client.post(path, content=body if isinstance(body, str) else json.dumps(body))
    return r.status_code, r.json()


def _points(rows: int, d: int = 2, **kw) -> dict:
    return {"inputs": [{"name": "points", "shape": [rows, d], "datatype": "FP64", "data": [0.5] * (rows * d)}], **kw}


BAD = [  # (path, body, status, text the error must contain)
    ("/v2/models/nope/infer", _points(1), 404, "tiny3-sample"),
    ("/v2/models/tiny/versions/nope/infer", _points(1), 404, "available"),
    ("/v2/models/tiny/infer", _points(1, d=3), 400, "points[0]"),
    ("/v2/models/tiny/infer", _points(MAX_POINTS + 1), 400, "points"),
    ("/v2/models/tiny/infer", _points(0), 400, "points"),
    ("/v2/models/tiny/infer", _points(1, parameters={"seed": 1}), 400, "parameters.seed"),
    ("/v2/models/tiny/infer", _points(1, parameters={"timeout_s": -1}), 400, "parameters.timeout_s"),
    ("/v2/models/tiny/infer", _points(1, outputs=[{"name": "samples"}]), 400, "samples"),
    ("/v2/models/tiny/infer", {"inputs": [{"name": "points", "shape": [1, 2], "datatype": "INT8",
                                           "data": [1, 2]}]}, 400, "datatype"),
    ("/v2/models/tiny/infer", {"inputs": [{"name": "points", "shape": [2, 2], "datatype": "FP64",
                                           "data": [1, 2]}]}, 400, "shape"),
    ("/v2/models/tiny/infer", {"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP64",
                                           "data": ["a", 2]}]}, 400, "data"),
    ("/v2/models/tiny/infer", {"inputs": []}, 400, "points"),
    ("/v2/models/tiny/infer", '{"inputs": ', 400, "JSON"),
    ("/v2/models/tiny-sample/infer", {"inputs": [], "parameters": {"n": 0}}, 400, "parameters.n"),
    ("/v2/models/tiny-sample/infer", {"inputs": [], "parameters": {"chip": {"mismatch": -1}}}, 400, "chip.mismatch"),
    ("/v2/models/tiny-sample/infer", {"inputs": [{"name": "z", "shape": [1, 3], "datatype": "FP64",
                                                  "data": [0, 0, 0]}]}, 400, "z"),
    ("/v2/models/tiny-sample/infer", {"inputs": [{"name": "z", "shape": [1, 2], "datatype": "FP64",
                                                  "data": [0, 0]}], "parameters": {"n": 2}}, 400, "parameters.n"),
    # found by schemathesis: a non-boolean binary switch was taken as true
    ("/v2/models/tiny-sample/infer", {"inputs": [], "parameters": {"binary_data_output": {}}}, 400,
     "parameters.binary_data_output"),
    ("/v2/models/tiny-sample/infer", {"inputs": [], "parameters": {"n": 1}, "outputs": [
        {"name": "samples", "parameters": {"binary_data": "yes"}}]}, 400, "binary_data: expected true or false"),
    # found by schemathesis: null is not an object (the schema says object, or leave it out)
    ("/v2/models/tiny-sample/infer", {"inputs": [], "parameters": None}, 400, "parameters: expected an object"),
    # found by schemathesis: malformed output parameters are a 400 before the solve, not its 504
    ("/v2/models/tiny-sample/infer", {"inputs": [], "parameters": {"n": 4096, "timeout_s": 0.001}, "outputs": [
        {"name": "samples", "parameters": "AAA"}]}, 400, "outputs (samples).parameters: expected an object"),
    ("/v2/models/tiny-sample/infer", {"inputs": [], "parameters": {"n": 4096, "timeout_s": 0.001}, "outputs": [
        {"name": "samples", "parameters": {"binary_data": 1}}]}, 400, "binary_data: expected true or false"),
]


@pytest.mark.parametrize("path,body,status,text", BAD)
def test_bad_requests_get_oip_error_bodies(oip, path, body, status, text):
    _, client = oip
    code, answer = _post(client, path, body)
    assert code == status and set(answer) == {"error"} and text in answer["error"], answer


def test_shared_limits_and_solve_budget(oip):
    _, client = oip
    r = client.post("/v2/models/tiny/infer", content=b"x" * (MAX_BODY + 1))
    assert r.status_code == 413 and "error" in r.json()
    code, answer = _post(client, "/v2/models/tiny-sample/infer",
                         {"inputs": [], "parameters": {"n": 4096, "timeout_s": 0.001}})
    assert code == 504 and "timeout_s" in answer["error"]
    assert client.get("/v2/health/ready").status_code == 200
