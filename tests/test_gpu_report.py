"""benchmarks/gpu_report.sh, the one command for a GPU machine: it refuses without CUDA (writing
nothing) and, rehearsed on the CPU at its smallest, writes every file it promises."""
from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_report.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    out = tmp_path / "gpu"
    full = {**os.environ, "KNET_GPU_REPORT_OUT": str(out), "KNET_GPU_REPORT_BENCH_OUT": str(out / "bench-gpu"),
            "KNET_GPU_REPORT_MODELS": "twomoon", "BENTOML_HOME": str(tmp_path / "bentoml"), **env}
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_refuses_without_cuda_and_writes_nothing(tmp_path):
    r = _run(tmp_path, CUDA_VISIBLE_DEVICES="")  # hides any GPU from torch
    assert r.returncode == 2, r.stderr[-2000:]
    assert "no CUDA device" in r.stderr and not (tmp_path / "gpu").exists()
    r = _run(tmp_path, KNET_GPU_REPORT_DEVICE="tpu")
    assert r.returncode == 2 and "must be cuda or cpu" in r.stderr


def test_cpu_rehearsal_writes_the_bench_rows_the_report_and_the_overhead(tmp_path):
    r = _run(tmp_path, KNET_GPU_REPORT_DEVICE="cpu", KNET_GPU_REPORT_QUICK="1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "gpu"
    log = (out / "run.log").read_text()
    assert [line.split(":")[0] for line in log.splitlines()[2:]] == ["bench", "loadtest", "overhead"]
    assert all(": exit 0 in " in line for line in log.splitlines()[2:]), log
    rows = list(csv.DictReader((out / "bench-gpu.csv").open()))
    assert rows and {row["model"] for row in rows} == {"twomoon"}
    assert json.loads((out / "bench-gpu.json").read_text())["rows"]
    assert (out / "report.md").stat().st_size > 0 and (out / "results.json").exists()
    assert list(out.glob("*.png"))
    overhead = (out / "overhead.txt").read_text()
    assert "÷ no-op" in overhead and overhead.count("\nsample") + overhead.count("\nlogprob") == 2
