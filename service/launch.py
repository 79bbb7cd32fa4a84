"""Start a real ``bentoml serve`` in a subprocess on 127.0.0.1, wait for readiness (bounded)
and always stop it: used by the HTTP tests and the batching benchmark."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE = "service.service:KirchhoffNetService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(env: dict[str, str], target: str = SERVICE, port: int | None = None,
                   ready_timeout_s: float = 90.0, log_path: Path | None = None) -> Iterator[str]:
    """Serve ``target`` with ``env`` added to the environment; yields the base URL.

    Raises:
        RuntimeError: the server exited or was not ready within ``ready_timeout_s`` (with
            the tail of its log).
    """
    port = port or free_port()
    full_env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "OMP_NUM_THREADS": "1", **env}
    bentoml_cli = Path(sys.executable).parent / "bentoml"
    log = open(log_path, "w+b") if log_path else open(os.devnull, "w+b")  # noqa: SIM115
    proc = subprocess.Popen([str(bentoml_cli), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {proc.returncode}: {_tail(log_path)}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout_s:g} s: {_tail(log_path)}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # stray workers of the group


def _tail(path: Path | None, chars: int = 3000) -> str:
    if path is None or not Path(path).exists():
        return "(no log)"
    return Path(path).read_text(errors="replace")[-chars:]
