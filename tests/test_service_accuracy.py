"""The accuracy contract over HTTP (session server, model ``tiered`` with tiers 1e-2 and 1e-3):
``tolerance`` picks the tier, every answer says its ``error_bound`` and ``in_verified_region``,
an unmeetable tolerance is a 422 naming the best tier, natively and through the OIP."""
from __future__ import annotations

import json

import pytest

from models.checkpoint import load_model

pytestmark = pytest.mark.http


def _tiers(cks):
    return {t.tolerance_nats: t for t in load_model(cks["tiered"]).spec.accuracy_tiers}


def _inside(tier) -> list[float]:
    """The middle of the tier's verified box: a point inside its region."""
    return [(lo + hi) / 2 for lo, hi in zip(tier.region_low, tier.region_high)]


def test_default_and_chosen_tiers_carry_their_bound(server):
    client, cks, *_ = server
    tiers = _tiers(cks)
    mid = _inside(tiers[1e-3])
    r = client.post("/logprob", json={"model": "tiered", "points": [mid, [60.0, 0.0]]}).json()
    assert r["error_bound"] == tiers[1e-3].max_error_logp and r["nfe"] == 4 * sum(tiers[1e-3].steps_per_layer)
    assert r["in_verified_region"] is False  # (60, 0) lies outside the verified box
    assert r["accuracy_tier"] == 1e-3  # the default tier answers, and says so
    r = client.post("/logprob", json={"model": "tiered", "points": [mid], "tolerance": 0.05}).json()
    assert r["error_bound"] == tiers[1e-2].max_error_logp and r["in_verified_region"] is True
    assert r["nfe"] == 4 * sum(tiers[1e-2].steps_per_layer) and r["accuracy_tier"] == 1e-2
    s = client.post("/sample", json={"model": "tiered", "n": 3, "seed": 1, "tolerance": 0.05}).json()
    assert s["error_bound"] == tiers[1e-2].max_error_logp and s["in_verified_region"] is True
    s = client.post("/sample", json={"model": "tiered", "n": 3, "seed": 1, "with_logprob": False}).json()
    assert s["error_bound"] is None and s["logprob"] is None  # no log-density, no bound on it


def test_an_unmeetable_tolerance_is_a_422_naming_the_best_tier(server):
    client, cks, *_ = server
    best = min(t.max_error_logp for t in _tiers(cks).values())
    r = client.post("/logprob", json={"model": "tiered", "points": [[0.1, 0.2]], "tolerance": 1e-8})
    assert r.status_code == 422 and r.json()["field"] == "tolerance"
    assert f"verified to {best:.2g} nats" in r.json()["error"]
    # a model without tiers: no bound, and a tolerance cannot be promised
    plain = client.post("/logprob", json={"model": "tiny", "points": [[0.1, 0.2]]}).json()
    assert plain["error_bound"] is None and plain["in_verified_region"] is None and plain["accuracy_tier"] is None
    described = client.get("/models/tiny").json()["accuracy"]
    assert described["tiers"] == [] and "no verified accuracy tiers" in described["warning"]
    described = client.get("/models/tiered").json()["accuracy"]
    assert described["warning"] is None and described["default_tier_nats"] == 1e-3
    assert [t["tolerance_nats"] for t in described["tiers"]] == [1e-2, 1e-3]
    r = client.post("/sample", json={"model": "tiny", "n": 1, "tolerance": 0.1})
    assert r.status_code == 422 and "no verified accuracy tiers" in r.json()["error"]


def test_open_inference_protocol_carries_tolerance_and_bound(server):
    client, cks, *_ = server
    tiers = _tiers(cks)
    body = {"inputs": [{"name": "points", "datatype": "FP64", "shape": [1, 2], "data": _inside(tiers[1e-2])}],
            "parameters": {"tolerance": 0.05}}
    r = client.post("/v2/models/tiered/infer", json=body)
    assert r.status_code == 200, r.text
    params = r.json()["parameters"]
    assert params["error_bound"] == tiers[1e-2].max_error_logp and params["in_verified_region"] is True
    assert params["accuracy_tier"] == 1e-2
    body["parameters"] = {"tolerance": 1e-8}
    r = client.post("/v2/models/tiered/infer", content=json.dumps(body))
    assert r.status_code == 422 and "no accuracy tier meets" in r.json()["error"]
