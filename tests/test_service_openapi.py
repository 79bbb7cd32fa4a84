"""The OpenAPI schema at /docs.json (service/openapi_doc.py) tells the truth: every route is in
it, every status the service answers is declared with its body, the served models' shapes are
stated, and schemathesis, with all its checks, finds nothing against the session's real server."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.http

# schemathesis' expectations, widened by what the service legitimately answers to valid input:
# 413 (a valid body past the byte limit), 422 (a solve that fails, e.g. non-finite), 504 (a solve
# past its budget, e.g. 4096 rows within timeout_s=0.001); every one is declared in the schema
SCHEMATHESIS_CONFIG = '''
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "503", "504"]
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "413", "422", "429", "503", "504"]
[checks.negative_data_rejection]
expected-statuses = ["400", "404", "405", "413", "415", "422", "429"]

# the protocol's tensors: that `data` fills `shape` cannot be said in OpenAPI, so a request valid
# by the schema may still be answered 400 (every other check still runs on these operations)
[[operations]]
include-path-regex = "/infer$"
checks.positive_data_acceptance.enabled = false
'''


def _spec(client) -> dict:
    return client.get("/docs.json").json()


def test_every_route_is_in_the_schema(server):
    from service.service import routes_app
    client, *_ = server
    paths = _spec(client)["paths"]
    served = {r.path for r in routes_app.routes} | {"/sample", "/logprob", "/livez", "/readyz", "/metrics"}
    assert served <= set(paths), sorted(served - set(paths))
    assert {"/models/{name}/versions", "/v2/models/{model}/infer", "/ui/{name}"} <= set(paths)
    assert client.get("/").status_code == 200  # the Swagger page reads the same /docs.json


def test_statuses_and_shapes_are_declared(server):
    client, *_ = server
    spec = _spec(client)
    for path in ("/sample", "/logprob", "/v2/models/{model}/infer"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "404", "413", "415", "422", "429", "500", "504"} <= set(responses), path
        assert "Retry-After" in responses["429"]["headers"]
    assert set(spec["paths"]["/models/{name}"]["get"]["responses"]) >= {"200", "404", "429"}
    variants = spec["paths"]["/logprob"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    rows = {v["properties"]["model"]["enum"][0]: v["properties"]["points"]["items"] for v in variants}
    assert {m: (r["minItems"], r["maxItems"]) for m, r in rows.items()} == {"tiny": (2, 2), "tiny3": (3, 3),
                                                                          "tiered": (2, 2)}
    pinned = {m: v["properties"]["version"]["enum"] for m, v in zip(rows, variants)}
    versions = [v["version"] for v in client.get("/models/tiny/versions").json()["versions"]]
    assert pinned["tiny"] == [None, *versions, "latest"]
    # what the schema calls invalid the server rejects, and what it declares the server answers
    r = client.post("/logprob", json={"model": "tiny", "points": [[]]})
    assert r.status_code == 400 and "error" in r.json()
    bad_json = client.post("/sample", content=b'{"model": ')
    assert bad_json.status_code == 400  # BentoML's list-shaped answer, declared as ErrorList
    assert isinstance(bad_json.json(), list) or "error" in bad_json.json()


def test_schemathesis_all_checks_over_every_route(server, tmp_path):
    """Every check (schemathesis runs all of them unless --checks narrows the set; `--checks all`
    would also override the per-operation exception above), ~50 examples per operation, 60 s."""
    client, *_ = server
    (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    exe = Path(sys.executable).parent / "schemathesis"
    r = subprocess.run([str(exe), "run", str(client.base_url).rstrip("/") + "/docs.json",
                        "--max-examples", "50", "--max-time", "60", "--seed", "7",
                        "--workers", "1", "--no-shrink", "--request-timeout", "30",
                        "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all",
                        "--report-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert client.get("/readyz").status_code == 200


def test_the_documented_oip_parameters_are_the_accepted_ones():
    """The OIP request schema lists exactly the parameters the handler accepts (a parameter
    missing there is one schema-driven clients cannot send, and fuzzers call a violation)."""
    from service.oip import PROTOCOL_PARAMETERS, SAMPLER_PARAMETERS
    from service.openapi_doc import INFER_REQUEST
    documented = set(INFER_REQUEST["properties"]["parameters"]["properties"])
    assert documented == set(SAMPLER_PARAMETERS) | PROTOCOL_PARAMETERS
