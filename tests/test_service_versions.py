"""Pinned model versions (service/registry.py): every stored version is served, requests may pin
one, the latest answers otherwise; and the tests' own store (tests/conftest.py) is not the user's."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import USER_STORES, store_fingerprint
from helpers import tiny_checkpoint

from models.checkpoint import WEIGHTS_FILE, content_hash, load_model
from service.config import ServiceSettings
from service.errors import ServiceError
from service.registry import Registry, stored_versions
from service.store import import_checkpoint

POINTS = [[0.25, -0.5], [1.0, 0.75], [-1.5, 0.1]]


def test_registry_serves_every_version_and_a_broken_latest_makes_the_name_unavailable(tmp_path):
    cks = [tiny_checkpoint(tmp_path / f"v{i}", name="reg-unit", seed=i) for i in range(3)]
    tags = [import_checkpoint(ck)[0].tag for ck in cks]
    assert len({t.version for t in tags}) == 3
    mine = [m for m in stored_versions() if m.tag.name == "reg-unit"]
    assert [m.tag for m in mine] == tags  # oldest first

    registry = Registry(ServiceSettings(warmup=False))
    registry.load(mine)
    assert registry.served("reg-unit").version == tags[2].version == registry.served("reg-unit", "latest").version
    assert list(registry.versions["reg-unit"]) == [t.version for t in tags]
    older = registry.served("reg-unit", tags[0].version)
    x = torch.tensor(POINTS)
    torch.testing.assert_close(older.model.log_prob(x).logp, load_model(cks[0]).log_prob(x.double()).logp.float())
    with pytest.raises(ServiceError) as err:
        registry.served("reg-unit", "nope")
    assert err.value.status == 404 and err.value.field == "version"
    assert all(t.version in err.value.message for t in tags)

    # the latest version's stored weights corrupted: the name is unavailable, pinned older ones still answer
    (Path(mine[2].path) / WEIGHTS_FILE).write_bytes(b"\x00garbage")
    broken = Registry(ServiceSettings(warmup=False))
    broken.load(mine)
    assert "reg-unit" in broken.failed and "reg-unit" not in broken.models
    with pytest.raises(ServiceError, match="not loadable"):
        broken.served("reg-unit")
    assert broken.served("reg-unit", tags[1].version).version == tags[1].version


@pytest.mark.http
def test_versions_listing_newest_first_with_metadata(server):
    client, cks, *_ = server
    body = client.get("/models/tiny/versions").json()
    versions = body["versions"]
    assert [v["checkpoint_sha256"] for v in versions] == [content_hash(cks["tiny"]), content_hash(cks["tiny-older"])]
    assert body["latest"] == versions[0]["version"] == client.get("/models/tiny").json()["version"]
    assert versions[0]["created"] > versions[1]["created"]
    assert {m["name"] for m in client.get("/models").json()["models"]} == {"tiny", "tiny3", "tiered"}
    r = client.get("/models/nope/versions")
    assert r.status_code == 404 and "tiny3" in r.json()["error"]


@pytest.mark.http
def test_pinned_requests_answer_from_that_version(server):
    client, cks, *_ = server
    latest, older = [v["version"] for v in client.get("/models/tiny/versions").json()["versions"]]
    pins = ((older, cks["tiny-older"]), (latest, cks["tiny"]), ("latest", cks["tiny"]), (None, cks["tiny"]))
    for version, ck in pins:
        r = client.post("/logprob", json={"model": "tiny", "version": version, "points": POINTS})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == (latest if version in (None, "latest") else version)
        offline = load_model(ck).log_prob(torch.tensor(POINTS, dtype=torch.float64)).logp
        torch.testing.assert_close(torch.tensor(r.json()["logprob"]), offline, rtol=1e-4, atol=1e-4)
    s = client.post("/sample", json={"model": "tiny", "version": older, "n": 4, "seed": 3}).json()
    offline = load_model(cks["tiny-older"]).sample(4, torch.Generator().manual_seed(3))
    assert s["version"] == older
    torch.testing.assert_close(torch.tensor(s["samples"]), offline.x, rtol=1e-5, atol=1e-5)


@pytest.mark.http
@pytest.mark.parametrize("path,body", [("/logprob", {"points": POINTS}), ("/sample", {"n": 1})])
def test_unknown_version_is_404_naming_the_available_ones(server, path, body):
    client, *_ = server
    latest, older = [v["version"] for v in client.get("/models/tiny/versions").json()["versions"]]
    r = client.post(path, json={"model": "tiny", "version": "nope", **body})
    assert r.status_code == 404 and r.json()["field"] == "version"
    assert latest in r.json()["error"] and older in r.json()["error"]
    r = client.post(path, json={"model": "tiny", "version": "", **body})
    assert r.status_code == 400 and "version" in r.text


def test_the_suite_runs_on_a_temporary_store_and_would_notice_a_change(tmp_path):
    home = Path(os.environ["BENTOML_HOME"]).resolve()
    assert home not in USER_STORES and not any(home.is_relative_to(u) for u in USER_STORES)
    store = tmp_path / "store"
    before = store_fingerprint(store)
    (store / "models" / "svc-unit-a" / "v1").mkdir(parents=True)
    (store / "models" / "svc-unit-a" / "v1" / "model.yaml").write_text("x")
    assert before == {} and list(store_fingerprint(store)) == ["models/svc-unit-a/v1/model.yaml"]
