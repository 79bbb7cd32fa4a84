"""Start a real server in a subprocess on 127.0.0.1, wait for readiness (bounded) and always
stop it: the one launcher behind the HTTP tests, ``knet loadtest`` and ``knet bench-batching``.

The server runs in its own process group (so its workers are stopped with it), optionally
pinned to chosen CPUs with ``taskset``; it is stopped with SIGTERM, then SIGKILL.
"""
from __future__ import annotations

import contextlib
import os
import shutil
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
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def taskset_prefix(cpus: str | None) -> list[str]:
    """``["taskset", "-c", cpus]`` when pinning was asked for and ``taskset`` exists, else ``[]``."""
    if not cpus or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", cpus]


def bentoml_command(target: str, port: int) -> list[str]:
    """``bentoml serve TARGET`` (a service import path or a built bento's tag) on 127.0.0.1:PORT."""
    return [str(Path(sys.executable).parent / "bentoml"), "serve", target, "--host", HOST, "--port", str(port)]


def knet_serve_command(port: int, extra_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``knet serve --port PORT`` (stores the zoo first unless ``--no-store`` is among ``extra_args``)."""
    return [sys.executable, "-m", "knet", "serve", "--port", str(port), *extra_args]


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url/readyz`` until it answers 200.

    Raises:
        RuntimeError: the server process exited, or ``timeout_s`` passed (with the last answer).
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
        time.sleep(0.25)
    raise RuntimeError(f"{url}/readyz not ready after {timeout_s:.0f} s (last: {last})")


class ServerProcess:
    """A server subprocess as a context manager: ``with ServerProcess(cmd_for_port) as s: s.url``.

    Args:
        command: builds the server's command line from the port it must listen on
            (:func:`knet_serve_command`, or ``lambda p: bentoml_command(target, p)``).
        env: added to this process's environment (``OMP_NUM_THREADS=1`` and tracking off by default).
        cpus: ``taskset`` CPU list for the server (None: not pinned).
        ready_timeout_s: how long to wait for ``/readyz``.
        log_path: where the server's stdout/stderr go (None: discarded).
        port: the port (default: a free one).

    Raises (on enter):
        RuntimeError: the server exited or was not ready in time; the message ends with the
            tail of its log when there is one.
    """

    def __init__(self, command, env: dict[str, str] | None = None, cpus: str | None = None,
                 ready_timeout_s: float = 120.0, log_path: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.cmd = taskset_prefix(cpus) + list(command(self.port))
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "BENTOML_DO_NOT_TRACK": "True", **(env or {})}
        self.ready_timeout_s = ready_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> ServerProcess:
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=REPO_ROOT, start_new_session=True)
        try:
            wait_ready(self.url, self.ready_timeout_s, self.proc)
        except RuntimeError as err:
            self.stop()
            raise RuntimeError(f"{err}: {self.log_tail()}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace_s`` (and any stray worker)."""
        if self.proc is not None and self.proc.poll() is None:
            pgid = self.proc.pid  # start_new_session: the server leads its own group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)  # workers that outlived their parent
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def running_server(env: dict[str, str], target: str = SERVICE, port: int | None = None,
                   ready_timeout_s: float = 90.0, log_path: Path | None = None) -> Iterator[str]:
    """``bentoml serve target`` with ``env`` added to the environment; yields the base URL.

    Raises:
        RuntimeError: the server exited or was not ready within ``ready_timeout_s`` (with
            the tail of its log).
    """
    with ServerProcess(lambda p: bentoml_command(target, p), env=env, ready_timeout_s=ready_timeout_s,
                       log_path=log_path, port=port) as server:
        yield server.url


def require_stored(model: str) -> None:
    """Refuse (:class:`models.errors.UserInputError`) before starting a server that would not
    serve ``model``: the benchmarks serve the models already in the BentoML store."""
    from models.errors import UserInputError
    from service.store import stored_models
    names = [m.tag.name for m in stored_models()]
    if model not in names:
        raise UserInputError(f"model {model!r} is not in the BentoML store {os.environ.get('BENTOML_HOME')} "
                             f"(it holds: {', '.join(names) or 'nothing'}); run `knet store` first")
