"""The server under test: a loopback URL given by the user, or ``knet serve`` started here.

A started server runs in its own process group on a free 127.0.0.1 port, optionally pinned
to chosen CPUs with ``taskset``, and is always stopped (SIGTERM, then SIGKILL) on exit.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def check_loopback(url: str) -> str:
    """Return ``url`` without a trailing slash if it points at this machine's loopback.

    Raises:
        ValueError: not an http(s) URL, or a host other than localhost / 127.0.0.0/8 / ::1.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"--url must look like http://127.0.0.1:PORT, got {url!r}")
    host = parsed.hostname
    ok = host == "localhost"
    if not ok:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"--url host {host!r} is not loopback: load tests only target this machine "
                         "(localhost, 127.0.0.1 or ::1)")
    return url.rstrip("/")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url/readyz`` until it answers 200.

    Raises:
        RuntimeError: the server process exited, or ``timeout_s`` passed.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before /readyz turned 200")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as err:
            last = type(err).__name__
        time.sleep(0.5)
    raise RuntimeError(f"{url}/readyz not ready after {timeout_s:.0f} s (last: {last})")


def taskset_prefix(cpus: str | None) -> list[str]:
    """``["taskset", "-c", cpus]`` when pinning was asked for and ``taskset`` exists."""
    if not cpus or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", cpus]


def affinity(pid: int) -> str | None:
    """The CPU list process ``pid`` may run on (``"0-1"``, ``"1"``), from /proc; None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_count(cpus: str | None) -> int:
    """Number of CPUs in a list like ``"0-1,3"``."""
    if not cpus:
        return 0
    n = 0
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


class ServedService:
    """``knet serve --port P`` in a subprocess: a context manager that yields the base URL.

    Args:
        cpus: ``taskset`` CPU list for the server (None: no pinning).
        extra_args: appended to ``knet serve`` (e.g. ``["--device", "cuda"]`` where supported).
        ready_timeout_s: how long to wait for ``/readyz``.
        log_path: where the server's stdout/stderr go.
    """

    def __init__(self, cpus: str | None = None, extra_args: list[str] | None = None,
                 ready_timeout_s: float = 120.0, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = taskset_prefix(cpus) + [sys.executable, "-m", "knet", "serve", "--port", str(self.port),
                                           *(extra_args or [])]
        self.ready_timeout_s = ready_timeout_s
        self.log_path = log_path
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "BENTOML_DO_NOT_TRACK": "True", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> "ServedService":
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=REPO_ROOT, start_new_session=True)
        try:
            wait_ready(self.url, self.ready_timeout_s, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def cpus(self) -> str | None:
        return affinity(self.proc.pid) if self.proc else None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace_s``."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None
