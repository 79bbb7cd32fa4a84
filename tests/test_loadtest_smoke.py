"""Smoke run of `knet loadtest --quick` against a real `knet serve` of a tiny model:
one scenario for a few seconds, then check the report is well formed.

Skipped (with the server's own reason) only when the service cannot start here.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_checkpoint
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.http


def knet(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "knet", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("loadtest")
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
           "OMP_NUM_THREADS": "1"}
    ckpt = tiny_checkpoint(tmp / "tiny")
    stored = knet(["store", "--no-zoo", str(ckpt)], env, 120)
    if stored.returncode != 0:
        pytest.skip(f"service cannot start: `knet store` failed: {stored.stderr.strip()[-300:]}")
    out = tmp / "report"
    run = knet(["loadtest", "--quick", "--step-s", "2", "--models", str(ckpt), "--serve-arg=--no-store",
                "--no-simulate", "--out", str(out), "--ready-timeout", "150"], env, 300)
    if run.returncode == 2 and "could not start the service" in run.stderr:
        log = out / "raw" / "server.log"
        tail = log.read_text()[-500:] if log.is_file() else ""
        pytest.skip(f"service cannot start here: {run.stderr.strip()[-300:]} {tail}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert Path(run.stdout.strip().splitlines()[-1]) == out / "report.md"
    return out


def test_report_files(quick_report):
    for name in ("report.md", "rows.csv", "results.json", "latency_tiny.png", "served_vs_chip.png"):
        assert (quick_report / name).is_file(), name
    for png in quick_report.glob("*.png"):
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 300
    raw = sorted(p.name for p in (quick_report / "raw").iterdir())
    assert "step000_stats.csv" in raw and "step000_metrics_after.txt" in raw


def test_row_measured_and_consistent(quick_report):
    rows = list(csv.DictReader(open(quick_report / "rows.csv")))
    assert len(rows) == 1
    r = rows[0]
    assert (r["model"], r["endpoint"], r["rows"], r["users"]) == ("tiny", "sample", "64", "2")
    requests, rps = int(r["requests"]), float(r["rps"])
    assert requests > 0 and int(r["failures"]) == 0 and float(r["error_rate"]) == 0
    assert 0 < float(r["p50_s"]) <= float(r["p95_s"]) <= float(r["p99_s"])
    assert float(r["samples_per_s"]) == pytest.approx(64 * rps)
    # the server saw at least what locust counted (requests cut off at the stop still reach it);
    # batching may merge concurrent requests into fewer solves
    server_requests = float(r["server_requests"])
    assert server_requests >= requests and float(r["server_rows"]) == 64 * server_requests
    assert 0 < float(r["server_solves"]) <= server_requests
    assert float(r["nfe_mean"]) == 256  # rk4: 4 evaluations × 32 steps × 2 layers
    assert float(r["chip_latency_s"]) == pytest.approx(11e-9)
    assert float(r["ratio_request"]) == pytest.approx(float(r["p50_s"]) / 11e-9)


def test_report_text_states_setup_and_headline(quick_report):
    text = (quick_report / "report.md").read_text()
    assert text.startswith("# Load test: CPU")
    assert "per request" in text and "the chip's time per sample" in text
    assert "pinned with `taskset`" in text or "not pinned" in text
    assert "| /sample | 64 | 2 |" in text
    assert "E_chip = N·½·C·V0²" in text
    result = json.loads((quick_report / "results.json").read_text())
    assert result["headline"]["model"] == "tiny"
    assert result["machine"]["torch"].startswith("2.")
    assert result["circuit"]["tiny"]["chip_latency_s"] == pytest.approx(11e-9)
