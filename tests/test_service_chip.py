"""The virtual chip (``POST /sample`` with ``chip``) and the robustness files a model ships with.

HTTP tests run against the session's one real ``bentoml serve`` (``server`` in tests/conftest.py:
tiny models of 2 layers × 0.5 τ = 0.5 ns each; tiny3 stored with a hand-written robustness
table, helpers.ROBUSTNESS_DOC). The summary and the store are also tested offline with a
temporary BENTOML_HOME (``knet store`` in a subprocess).
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import math
import time
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import MAX_SAMPLES, ROBUSTNESS_DOC, run_knet, tiny_checkpoint, tiny_model, write_robustness

from export.artifacts import build_all, build_artifact
from models.checkpoint import load_model
from models.chip import Chip
from models.config import ChipConfig
from service.chip import ChipCache
from service.registry import ServedModel
from service.store import robustness_summary

CHIP = {"mismatch": 0.05, "quant_bits": 8, "instance": 7}


def _sample(client, chip=None, **kw):
    body = {"model": "tiny3", "n": 8, "seed": 3, **kw}
    if chip is not None:
        body["chip"] = chip
    return client.post("/sample", json=body)


# -- the virtual chip over HTTP ------------------------------------------------------------------
@pytest.mark.http
def test_same_instance_same_samples_other_instance_differs_and_matches_the_emulation(server):
    client, cks, *_ = server
    a, b = _sample(client, CHIP), _sample(client, CHIP)
    assert a.status_code == 200, a.text
    a, b = a.json(), b.json()
    assert a["samples"] == b["samples"] and a["logprob"] == b["logprob"]
    assert a["chip"]["effects"] == ["mismatch", "quantization"]
    assert a["chip"]["config"]["mismatch"] == 0.05 and a["chip"]["config"]["instance"] == 7
    assert a["status"] == "success" and a["nfe"] > 0 and len(a["logprob"]) == 8
    other = _sample(client, {**CHIP, "instance": 8}).json()
    assert other["samples"] != a["samples"]
    ideal = _sample(client).json()
    assert ideal["samples"] != a["samples"]
    # the served chip is models.chip's instance 7 of the stored checkpoint, fed the request's latents
    model = load_model(cks["tiny3"])
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    offline = Chip(model, ChipConfig(**CHIP)).sample(8, z=z)
    torch.testing.assert_close(torch.tensor(a["samples"], dtype=torch.float64), offline.x.double(),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(a["logprob"], dtype=torch.float64), offline.logp.double(),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.http
@pytest.mark.parametrize("chip", [{}, {"mismatch": 0.0, "instance": 5, "switching_s": 0.0}])
def test_ideal_chip_answers_like_no_chip(server, chip):
    client, *_ = server
    plain, ideal = _sample(client).json(), _sample(client, chip).json()
    assert ideal["samples"] == plain["samples"] and ideal["logprob"] == plain["logprob"]
    assert ideal["chip"]["effects"] == [] and plain["chip"] is None


@pytest.mark.http
def test_noise_and_converters_have_no_logprob_and_are_listed(server):
    client, *_ = server
    chip = {"noise": True, "dac_bits": 10, "adc_bits": 10, "instance": 2}
    a, b = _sample(client, chip), _sample(client, chip)
    assert a.status_code == 200, a.text
    a, b = a.json(), b.json()
    assert a["logprob"] is None and a["chip"]["effects"] == ["noise", "dac", "adc"]
    assert a["samples"] == b["samples"]  # the noise stream follows the request's seed
    assert all(v is not None and math.isfinite(v) for row in a["samples"] for v in row)
    # a 10-bit ADC over ±4 model volts: every output is a multiple of its step
    step = 4.0 / (2 ** 9 - 1)
    assert all(abs(v / step - round(v / step)) < 1e-3 for row in a["samples"] for v in row)
    assert _sample(client, {**chip}, seed=4).json()["samples"] != a["samples"]


@pytest.mark.http
def test_short_switching_is_emulated(server):
    client, *_ = server
    r = _sample(client, {"switching_s": 2e-11, "switching_mode": "break"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chip"]["effects"] == ["switching"] and body["logprob"] is not None
    assert body["samples"] != _sample(client).json()["samples"]


BAD_CHIPS = [  # (chip, field named in the answer)
    ({"quant_bits": 1}, "chip.quant_bits"),
    ({"mismatch": -0.1}, "chip.mismatch"),
    ({"mismatch": 0.9}, "chip.mismatch"),
    ({"mismatch": "big"}, "chip.mismatch"),
    ({"instance": -1}, "chip.instance"),
    ({"switching_s": 1.0}, "chip.switching_s"),
    ({"switching_mode": "slow"}, "chip.switching_mode"),
    ({"noise": "loud"}, "chip.noise"),
    ({"adc_bits": 0}, "chip.adc_bits"),
    ({"volts": 3}, "chip.volts"),
]


@pytest.mark.http
@pytest.mark.parametrize("chip,field", BAD_CHIPS, ids=[f for _, f in BAD_CHIPS])
def test_bad_chip_values_are_400_naming_the_field(server, chip, field):
    client, *_ = server
    r = _sample(client, chip)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == field and field in body["error"] and "Traceback" not in r.text


@pytest.mark.http
def test_chip_that_is_not_an_object_is_400(server):
    client, *_ = server
    r = client.post("/sample", json={"model": "tiny3", "chip": 5})
    assert r.status_code == 400 and "chip" in r.text and "Traceback" not in r.text


@pytest.mark.http
def test_switching_longer_than_a_layer_is_422_naming_switching_s(server):
    client, *_ = server
    r = _sample(client, {"switching_s": 5e-9})  # each layer lasts 0.5 ns
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "chip.switching_s" and "longer than layer" in r.json()["error"]
    assert _sample(client, CHIP).status_code == 200  # and the server keeps serving chips


@pytest.mark.http
def test_chip_solve_is_bounded_by_timeout_s(server):
    client, *_ = server
    r = _sample(client, {"noise": True}, n=MAX_SAMPLES, timeout_s=0.001)
    assert r.status_code == 504, r.text
    assert "wall-clock budget of 0.001 s" in r.json()["error"]
    assert client.get("/readyz").status_code == 200


def _in_progress(client, endpoint: str) -> float:
    """bentoml_service_request_in_progress for ``endpoint`` (/metrics is never limited)."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("bentoml_service_request_in_progress{") and f'endpoint="{endpoint}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.http
def test_ideal_requests_complete_while_a_slow_chip_solve_runs(server):
    """A noisy chip of MAX_SAMPLES rows (~1 s) is solved off the event loop and off the
    batcher: one-row ideal requests sent while it is in flight are answered before it."""
    client, *_ = server
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_sample, client, {"noise": True, "instance": 4}, n=MAX_SAMPLES)
        deadline = time.monotonic() + 30
        while _in_progress(client, "/sample") < 1 and not slow.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not slow.done(), "the chip request finished before it could be observed in flight"
        for seed in range(5):
            assert _sample(client, seed=seed, n=1).status_code == 200
        assert not slow.done(), "ideal requests waited for the chip solve"
        assert slow.result().status_code == 200


# -- the chip cache ------------------------------------------------------------------------------
def _served(name: str = "tiny", version: str = "v1") -> ServedModel:
    model = tiny_model(torch.float32, name=name, steps=8)
    return ServedModel(name, version, Path("."), model, {}, model.spec.solver, 1e-9)


def test_chip_cache_builds_once_per_model_version_and_chip_and_evicts_the_least_recent():
    cache, served = ChipCache(capacity=2), _served()
    a = cache.get(served, ChipConfig(mismatch=0.02, instance=1))
    assert cache.get(served, ChipConfig(mismatch=0.02, instance=1)) is a and cache.builds == 1
    b = cache.get(served, ChipConfig(mismatch=0.02, instance=2))
    assert b is not a and cache.builds == 2
    other_version = cache.get(_served(version="v2"), ChipConfig(mismatch=0.02, instance=1))
    assert other_version is not a and cache.builds == 3 and len(cache) == 2
    assert cache.get(served, ChipConfig(mismatch=0.02, instance=2)) is b and cache.builds == 3
    cache.get(served, ChipConfig(mismatch=0.02, instance=1))  # evicted by the v2 chip: rebuilt
    assert cache.builds == 4
    # without mismatch the seed changes nothing: one chip serves every instance
    q = cache.get(served, ChipConfig(quant_bits=6, instance=1))
    assert cache.get(served, ChipConfig(quant_bits=6, instance=9)) is q and cache.builds == 5


# -- robustness: summary, store, downloads -------------------------------------------------------
EXPECTED_WITHIN = {"mismatch": 0.01, "quantization": 8, "noise": 0.1, "adc": 8}  # from the doc's numbers


def _check_summary(summary: dict) -> None:
    assert summary["metric"] == "nll" and summary["ideal"]["nll"] == 2.5
    inc = summary["nll_increase_at_mismatch"]
    assert set(inc) == {"0.01", "0.05"}
    assert inc["0.01"] == pytest.approx(0.015) and inc["0.05"] == pytest.approx(0.4)
    assert summary["within_ideal"] == EXPECTED_WITHIN
    assert summary["levels"]["quantization"] == [4, 6, 8, 10]


def test_robustness_summary_of_a_stored_model_and_the_files_travel(tmp_path):
    home = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    ck = write_robustness(tiny_checkpoint(tmp_path / "ck", name="robust"), png=b"\x89PNG fake")
    r = run_knet("store", "--no-zoo", str(ck), env=home)
    assert r.returncode == 0, r.stderr
    (stored,) = (tmp_path / "bentoml" / "models" / "robust").glob("*/robustness.json")
    folder = stored.parent
    for fname in ("robustness.json", "robustness.csv", "robustness.png"):
        assert (folder / fname).read_bytes() == (ck / fname).read_bytes(), fname
    summary = robustness_summary(folder)
    _check_summary(summary)
    assert summary["files"] == ["robustness.json", "robustness.csv", "robustness.png"]
    # a table computed after the first import travels too: the store takes a new version
    doc = {**ROBUSTNESS_DOC, "ideal": {**ROBUSTNESS_DOC["ideal"], "nll": 2.4}}
    (ck / "robustness.json").write_text(json.dumps(doc))
    again = run_knet("store", "--no-zoo", str(ck), env=home)
    assert again.returncode == 0 and "stored" in again.stdout and "unchanged" not in again.stdout, again.stdout
    assert len(list((tmp_path / "bentoml" / "models" / "robust").glob("*/robustness.json"))) == 2
    assert "unchanged" in run_knet("store", "--no-zoo", str(ck), env=home).stdout


def test_robustness_summary_absent_or_unreadable(tmp_path):
    assert robustness_summary(tmp_path) is None
    (tmp_path / "robustness.json").write_text("{not json")
    assert "unreadable" in robustness_summary(tmp_path)["error"]
    (tmp_path / "robustness.json").write_text(json.dumps({"model": "x"}))
    assert "rows" in robustness_summary(tmp_path)["error"]


def test_bundle_and_exports_carry_the_robustness_files(tmp_path):
    ck = write_robustness(tiny_checkpoint(tmp_path / "ck", name="robust"), png=b"\x89PNG fake")
    model = load_model(ck)
    with zipfile.ZipFile(io.BytesIO(build_artifact(model, "bundle", ck).data)) as zf:
        names = set(zf.namelist())
        assert zf.read("robust-robustness.json") == (ck / "robustness.json").read_bytes()
        manifest = json.loads(zf.read("manifest.json"))
    assert {"robust-robustness.csv", "robust-robustness.png"} <= names
    assert {"robustness-json", "robustness-csv", "robustness-png"} <= {f["kind"] for f in manifest["files"]}
    assert "robust-robustness.csv" in {a.filename for a in build_all(model, ck)}
    assert build_artifact(model, "robustness-csv", ck).data == (ck / "robustness.csv").read_bytes()
    bare = tiny_checkpoint(tmp_path / "bare", name="robust")
    with zipfile.ZipFile(io.BytesIO(build_artifact(model, "bundle", bare).data)) as zf:
        assert not any("robustness" in n for n in zf.namelist())
    with pytest.raises(ValueError, match="robustness.json"):
        build_artifact(model, "robustness-json", bare)


@pytest.mark.http
def test_model_info_summarises_robustness_and_links_its_files(server):
    client, cks, *_ = server
    info = client.get("/models/tiny3").json()
    _check_summary(info["robustness"])
    assert info["artifacts"]["robustness-json"] == "/models/tiny3/artifacts/robustness-json"
    r = client.get("/models/tiny3/artifacts/robustness-csv")
    assert r.status_code == 200 and r.content == (cks["tiny3"] / "robustness.csv").read_bytes()
    assert r.headers["content-type"].startswith("text/csv")
    with zipfile.ZipFile(io.BytesIO(client.get("/models/tiny3/artifacts/bundle").content)) as zf:
        assert zf.read("tiny3-robustness.json") == (cks["tiny3"] / "robustness.json").read_bytes()
    plain = client.get("/models/tiny").json()
    assert plain["robustness"] is None and "robustness-json" not in plain["artifacts"]
    assert client.get("/models/tiny/artifacts/robustness-json").status_code == 404
