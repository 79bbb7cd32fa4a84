"""One closed-loop step: ``locust --headless`` in its own process, bounded in time and count."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .locust_csv import LocustResult, read_result
from .plan import Step
from .target import taskset_prefix

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# After -t, each client may finish the request it has in flight (so slow requests, e.g. 1024
# rows at 8 clients, are counted rather than cut off); longer ones are abandoned.
STOP_TIMEOUT_S = 30.0


def locust_command(step: Step, url: str) -> list[str]:
    """The locust command line for ``step`` (all users spawned at once, no UI); the
    locustfile writes the final CSVs itself (see its docstring)."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-H", url,
            "-u", str(step.users), "-r", str(step.users), "-t", f"{step.duration_s:g}s",
            "--stop-timeout", f"{STOP_TIMEOUT_S:g}", "--only-summary",
            "--exit-code-on-error", "0", "--loglevel", "WARNING"]


def run_closed(step: Step, url: str, body_path: Path, csv_prefix: Path, client_cpus: str | None = None,
               grace_s: float = STOP_TIMEOUT_S + 30.0) -> LocustResult:
    """Run ``step`` against ``url`` with the JSON body in ``body_path``; CSVs at ``csv_prefix``.

    Raises:
        RuntimeError: locust failed or overran ``step.duration_s + grace_s`` (it is killed).
    """
    if step.mode != "closed":
        raise ValueError("run_closed takes closed-loop steps")
    path = "/" + step.scenario.endpoint
    env = {**os.environ, "KNET_LT_PATH": path, "KNET_LT_BODY": str(body_path),
           "KNET_LT_MAX_REQUESTS": str(step.max_requests), "KNET_LT_CSV": str(csv_prefix),
           "OMP_NUM_THREADS": "1"}
    cmd = taskset_prefix(client_cpus) + locust_command(step, url)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=step.duration_s + grace_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"locust overran {step.duration_s + grace_s:.0f} s on {step.label}") from None
    Path(f"{csv_prefix}_locust.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"locust exited {proc.returncode} on {step.label}:\n{tail}")
    if not Path(f"{csv_prefix}_stats.csv").is_file():
        raise RuntimeError(f"locust wrote no final stats on {step.label} (see {csv_prefix}_locust.txt)")
    return read_result(csv_prefix)
