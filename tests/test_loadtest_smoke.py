"""Smoke run of `knet loadtest --quick` against a real `knet serve` of a tiny model:
one scenario for a few seconds, then check the report is well formed.

A service that cannot start here is a failure (with the server's own log), never a skip.
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
    assert stored.returncode == 0, f"`knet store` failed: {stored.stderr.strip()[-1000:]}"
    out = tmp / "report"
    run = knet(["loadtest", "--quick", "--step-s", "2", "--models", str(ckpt), "--serve-arg=--no-store",
                "--no-simulate", "--out", str(out), "--ready-timeout", "150"], env, 300)
    log = out / "raw" / "server.log"
    server_log = log.read_text()[-1500:] if log.is_file() else "(no server log)"
    assert run.returncode == 0, f"{run.stderr[-2000:]}\n--- server log ---\n{server_log}"
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


def test_rows_csv_has_the_typed_columns(quick_report):
    from loadtest.results import StepRow
    with open(quick_report / "rows.csv") as fh:
        assert tuple(next(csv.reader(fh))) == StepRow.columns()


def test_render_only_reproduces_the_report(quick_report, tmp_path):
    # results.json → typed result → the same report.md: nothing the report shows is lost
    before = (quick_report / "report.md").read_text()
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    again = knet(["loadtest", "--render-only", "--out", str(quick_report)], env, 120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (quick_report / "report.md").read_text() == before
