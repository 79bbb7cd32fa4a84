"""The service against a real ``bentoml serve`` on a free localhost port.

The session-scoped ``server`` fixture (tests/conftest.py: tiny models in a test-local BentoML
store, one of them corrupt), started once, waited for with a bound, always stopped; shared with
tests/test_service_chip.py. Limits are lowered through ``KNET_SERVICE_*`` so overload cases are
quick to provoke.
"""
from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import MAX_BODY, MAX_POINTS, MAX_SAMPLES
from helpers import run_knet as _knet

from models.checkpoint import content_hash, load_model
from models.hardware import projected_latency_s

pytestmark = pytest.mark.http


def _metric(client, name: str, **labels) -> float:
    text = client.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_health_and_openapi(server):
    client, *_ = server
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    paths = client.get("/docs.json").json()["paths"]
    assert {"/sample", "/logprob"} <= set(paths)


def test_models_listing_and_corrupt_model_isolated(server):
    client, cks, log, _ = server
    body = client.get("/models").json()
    names = {m["name"] for m in body["models"]}
    assert names == {"tiny", "tiny3", "tiered"}
    assert "broken" in body["unavailable"] and "weights" in body["unavailable"]["broken"]
    assert "model broken" in log.read_text() and "not served" in log.read_text()
    info = client.get("/models/tiny3").json()
    spec = load_model(cks["tiny3"]).spec
    assert info["checkpoint_sha256"] == content_hash(cks["tiny3"])
    assert (info["data_dim"], info["edges"]) == (3, spec.num_edges)
    assert info["projected_chip_latency_s"] == pytest.approx(projected_latency_s(spec))
    # the runtimes measured at warm-up (KNET_SERVICE_RUNTIME=auto): every probe, and who answers it
    runtimes = info["runtimes"]
    assert {(r["direction"], r["batch"]) for r in runtimes} == {(d, b) for d in ("sample", "logprob")
                                                                for b in (1, 16, 64, 256, 1024)}
    assert all(r["answers"] in ("engine", "onnxruntime") and r["parity"] >= 0 for r in runtimes)
    assert all(r["answers"] == "engine" for r in runtimes if r["parity"] > 1e-5)
    r = client.get("/models/broken")
    assert r.status_code == 404 and "not loadable" in r.json()["error"]


def test_sample_same_seed_same_samples_and_matches_offline(server):
    client, cks, *_ = server
    body = {"model": "tiny3", "n": 5, "seed": 11, "with_logprob": True}
    a, b = client.post("/sample", json=body).json(), client.post("/sample", json=body).json()
    assert a["samples"] == b["samples"] and a["seed"] == 11
    assert (a["model"], a["status"]) == ("tiny3", "success") and a["nfe"] > 0
    assert len(a["samples"]) == 5 and len(a["samples"][0]) == 3 and len(a["logprob"]) == 5
    assert a["version"] and a["projected_chip_latency_s"] > 0
    offline = load_model(cks["tiny3"]).sample(5, torch.Generator().manual_seed(11))
    torch.testing.assert_close(torch.tensor(a["samples"]), offline.x, rtol=1e-5, atol=1e-5)
    other = client.post("/sample", json={**body, "seed": 12}).json()
    assert other["samples"] != a["samples"]
    assert client.post("/sample", json={**body, "with_logprob": False}).json()["logprob"] is None


def test_logprob_of_served_samples_equals_with_logprob(server):
    client, *_ = server
    s = client.post("/sample", json={"model": "tiny", "n": 16, "seed": 5}).json()
    r = client.post("/logprob", json={"model": "tiny", "points": s["samples"]})
    assert r.status_code == 200, r.text
    torch.testing.assert_close(torch.tensor(r.json()["logprob"]), torch.tensor(s["logprob"]), rtol=1e-4, atol=1e-4)


BAD = [  # (path, raw JSON body, status, text the error must contain)
    ("/sample", '{"model": "nope", "n": 2}', 404, "model"),
    ("/logprob", '{"model": "nope", "points": [[0, 0]]}', 404, "model"),
    ("/logprob", '{"model": "tiny", "points": [[0, 0, 0]]}', 400, "points[0]"),
    ("/logprob", '{"model": "tiny", "points": [[NaN, 0]]}', 400, "points"),
    ("/logprob", '{"model": "tiny", "points": [[Infinity, 0]]}', 400, "points"),
    ("/logprob", '{"model": "tiny", "points": [[1e300, 0]]}', 400, "points"),
    ("/logprob", '{"model": "tiny", "points": []}', 400, "points"),
    ("/logprob", '{"model": "tiny", "points": [' + ", ".join(["[0, 0]"] * (MAX_POINTS + 1)) + "]}", 400, "points"),
    ("/logprob", '{"model": "tiny", "points": [["a", 0]]}', 400, "points"),
    ("/logprob", '{"model": "tiny"}', 400, "points"),
    ("/sample", '{"model": "tiny", "n": 0}', 400, '"n"'),
    ("/sample", f'{{"model": "tiny", "n": {MAX_SAMPLES + 1}}}', 400, '"n"'),
    ("/sample", '{"model": "tiny", "n": "many"}', 400, '"n"'),
    ("/sample", '{"model": "tiny", "seed": -1}', 400, "seed"),
    ("/sample", '{"model": "tiny", "timeout_s": -1}', 400, "timeout_s"),
    ("/sample", '{"model": "tiny", "extra": 1}', 400, "extra"),
    ("/sample", '{"model": "tiny", "n": ', 400, "json"),
    ("/sample", '[1, 2]', 400, "error"),
]
FORM = ("/sample", '{"model": "tiny"}', 415, "application/json")


@pytest.mark.parametrize("path,raw,status,names", BAD, ids=[f"{p}:{s}:{i}" for i, (p, _, s, _) in enumerate(BAD)])
def test_bad_input_gets_a_clear_4xx(server, path, raw, status, names):
    client, *_ = server
    r = client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert names in r.text and "Traceback" not in r.text
    r.json()  # always a JSON body


def test_form_body_is_415(server):
    client, *_ = server
    path, raw, status, names = FORM
    r = client.post(path, content=raw, headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == status and names in r.json()["error"]


def test_body_past_limit_is_413_with_length_or_chunked(server):
    client, *_ = server
    big = b'{"model": "tiny", "points": [' + b"[0, 0], " * (MAX_BODY // 8) + b"[0, 0]]}"
    r = client.post("/logprob", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "KNET_SERVICE_MAX_BODY_BYTES" in r.json()["error"]

    def chunks():
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]
    r = client.post("/logprob", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert client.post("/logprob", json={"model": "tiny", "points": [[0, 0]]}).status_code == 200


def test_unknown_artifact_and_route(server):
    client, *_ = server
    r = client.get("/models/tiny/artifacts/nonsense")
    assert r.status_code in (404, 503) and "Traceback" not in r.text
    assert client.get("/models/nope/artifacts/bundle").status_code == 404


def test_over_concurrency_is_429_with_retry_after(server):
    client, *_ = server
    body = {"model": "tiny", "n": MAX_SAMPLES, "with_logprob": True}
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        rs = list(pool.map(lambda _: client.post("/sample", json=body), range(12)))
    codes = [r.status_code for r in rs]
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}, codes
    limited = next(r for r in rs if r.status_code == 429)
    assert limited.headers["Retry-After"] == "2" and "MAX_CONCURRENCY" in limited.json()["error"]
    assert client.get("/readyz").status_code == 200


def test_over_budget_solve_is_504_naming_the_limit_and_server_keeps_serving(server):
    client, *_ = server
    r = client.post("/sample", json={"model": "tiny", "n": MAX_SAMPLES, "timeout_s": 0.001})
    assert r.status_code == 504, r.text
    assert "wall-clock budget of 0.001 s" in r.json()["error"] and "timeout_s" in r.json()["error"]
    assert client.post("/sample", json={"model": "tiny", "n": 2}).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_metrics_count_what_was_sent(server):
    client, cks, *_ = server
    labels = {"model": "tiny3", "endpoint": "logprob"}
    before = {k: _metric(client, k, **labels) for k in ("knet_requests_total", "knet_samples_total",
                                                        "knet_solver_nfe_count", "knet_solve_seconds_count")}
    batches = _metric(client, "knet_batch_size_count", endpoint="logprob")
    for _ in range(3):
        assert client.post("/logprob", json={"model": "tiny3", "points": [[0.1, 0.2, 0.3]] * 5}).status_code == 200
    assert _metric(client, "knet_requests_total", **labels) - before["knet_requests_total"] == 3
    assert _metric(client, "knet_samples_total", **labels) - before["knet_samples_total"] == 15
    assert _metric(client, "knet_solver_nfe_count", **labels) - before["knet_solver_nfe_count"] == 3
    assert _metric(client, "knet_solve_seconds_count", **labels) - before["knet_solve_seconds_count"] == 3
    assert _metric(client, "knet_batch_size_count", endpoint="logprob") - batches == 3
    # (no solver failure is asserted here: the over-budget request of the test above is chunked, and since
    # the compiled path solves each 256-row chunk of the tiny model within its 1 ms, its 504 comes from the
    # chunks' summed time (service/batching.py), which no single solve fails; request-level timeouts are
    # not counted in knet_solver_failures_total)
    spec = load_model(cks["tiny3"]).spec
    assert _metric(client, "knet_projected_chip_latency_seconds", model="tiny3") == pytest.approx(
        projected_latency_s(spec))
    assert _metric(client, "bentoml_service_request_total", endpoint="/logprob", http_response_code="200") >= 3


def test_downloads_are_byte_identical_to_knet_export(server, tmp_path):
    artifacts = pytest.importorskip("export.artifacts")
    client, cks, _, home = server
    for kind in artifacts.ARTIFACT_KINDS:
        r = client.get(f"/models/tiny/artifacts/{kind}")
        assert r.status_code == 200, (kind, r.text)
        art = artifacts.build_artifact(load_model(cks["tiny"]), kind, cks["tiny"])
        assert r.content == art.data, kind
        assert r.headers["content-type"].split(";")[0] == art.content_type
        assert f'filename="{art.filename}"' in r.headers["content-disposition"]
    out = tmp_path / "bundle.zip"
    res = _knet("export", "bundle", str(cks["tiny"]), "--out", str(out), env=home)
    assert res.returncode == 0, res.stderr
    assert client.get("/models/tiny/artifacts/bundle").content == out.read_bytes()


def test_schemathesis_finds_no_server_error(server, tmp_path):
    client, *_ = server
    # 504: a solve past its budget (e.g. timeout_s=0.001) is a declared, legitimate answer to valid
    # input; tests/test_service_openapi.py runs every other check too
    (tmp_path / "schemathesis.toml").write_text('[checks.not_a_server_error]\n'
                                                'expected-statuses = ["2xx", "3xx", "4xx", "504"]\n')
    exe = Path(sys.executable).parent / "schemathesis"
    r = subprocess.run([str(exe), "run", str(client.base_url).rstrip("/") + "/docs.json",
                        "--checks", "not_a_server_error", "--max-examples", "25", "--max-time", "30",
                        "--seed", "1", "--workers", "1", "--no-shrink", "--request-timeout", "30",
                        "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all",
                        "--report-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert client.get("/readyz").status_code == 200


def test_noop_routes_validate_like_the_real_ones_and_feed_the_overhead_benchmark(server):
    """KNET_SERVICE_NOOP_ROUTES (on in this server): the same request schemas, nothing solved;
    the overhead benchmark's measurement runs against them (a handful of rounds, no timing asserted)."""
    from benchmarks.overhead import measure, summarize
    from service.service import KirchhoffNetService

    client, *_ = server
    assert set(KirchhoffNetService.apis) == {"sample", "logprob"}  # off by default (this process)
    assert client.post("/noop/sample", json={"model": "tiny", "n": 1}).json() == {"status": "noop"}
    for path, body in (("/sample", {"model": "tiny", "n": 0}), ("/logprob", {"model": "tiny", "points": []}),
                       ("/sample", {"model": "tiny", "extra": 1})):
        real, noop = client.post(path, json=body), client.post("/noop" + path, json=body)
        assert real.status_code == noop.status_code == 400, (path, real.text, noop.text)
    seen = measure(str(client.base_url).rstrip("/"), "tiny", rounds=3, warmup=1)
    assert {k: len(v["latency_s"]) for k, v in seen.items()} == dict.fromkeys(seen, 3)
    assert len(seen["sample"]["solve_s"]) == len(seen["logprob"]["solve_s"]) == 3
    assert not seen["noop_sample"]["solve_s"]
    s = summarize(seen)
    assert s["sample"]["solve_p50_ms"] > 0 and s["sample"]["noop_p50_ms"] > 0
