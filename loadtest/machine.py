"""Where the numbers came from: CPU/GPU, torch, threads, load, which CPUs the server and the
load generator were pinned to, and (on a GPU) board power.

The GPU parts are conditional: they run only where ``torch.cuda.is_available()`` or
``nvidia-smi`` exists, and report ``None`` otherwise.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` as a fallback)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_names() -> list[str]:
    """Names of visible NVIDIA GPUs (empty without a GPU or nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        try:
            import torch
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # no CUDA build / driver: no GPU to name
            return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


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


def pinning(no_pin: bool, started: bool, n: int | None = None) -> tuple[str | None, str | None]:
    """(server CPUs, client CPUs) as taskset lists: the load generator gets the lower half of
    the CPUs (CPU 0 on a 2-CPU box), the server the upper half, so neither steals the other's
    cores; None where not pinned (one CPU, ``no_pin``, or a server we did not start)."""
    n = n or os.cpu_count() or 1
    if no_pin or n < 2:
        return None, None
    half = n // 2
    client = "0" if half == 1 else f"0-{half - 1}"
    server = f"{half}" if n - half == 1 else f"{half}-{n - 1}"
    return (server if started else None), client


def cores_statement(server_cpus: str | None, client_cpus: str | None, started: bool, ncpu: int) -> str:
    """One paragraph of the report: who ran on which CPUs."""
    if started and server_cpus and client_cpus:
        return (f"The load generator (locust, and the open-loop generator) ran on this same machine, pinned with "
                f"`taskset` to CPU {client_cpus}; the server was pinned to CPU {server_cpus}, so it had "
                f"{cpu_count(server_cpus)} of the {ncpu} logical CPUs. Other processes on the machine were not "
                "pinned and could run on either CPU (see the load average).")
    if client_cpus:
        return (f"The load generator ran on this machine pinned to CPU {client_cpus}; the server was started "
                f"elsewhere on this machine (CPUs: {server_cpus or 'unknown'}).")
    return (f"The load generator and the server shared all {ncpu} logical CPUs of this machine (not pinned): "
            "the figures include their contention.")


def served_devices(url: str) -> list[str]:
    """The torch devices the service reports in ``GET /models`` (``torch_device``); empty if unknown."""
    import httpx
    try:
        models = httpx.get(f"{url}/models", timeout=10).json().get("models", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
    return sorted({str(m["torch_device"]) for m in models if isinstance(m, dict) and m.get("torch_device")})


def describe(server_cpus: str | None, client_cpus: str | None, server_threads: int,
             server_device: str) -> dict:
    """The machine block of the report: hardware, software and who ran on which cores."""
    import torch
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "gpus": gpu_names(),
        "server_device": server_device,
        "torch": torch.__version__,
        "torch_threads_server": server_threads,  # KNET_SERVICE_THREADS of the service
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server_cpus": server_cpus,
        "client_cpus": client_cpus,
        "loadavg_start": os.getloadavg(),
    }


class PowerSampler:
    """Board power of GPU 0 sampled with ``nvidia-smi`` every ``interval_s`` in a thread.

    ``available`` is False (and every figure None) where there is no nvidia-smi.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.available = shutil.which("nvidia-smi") is not None and bool(gpu_names())
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=power.draw", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            w = self._read()
            if w is not None:
                self._samples.append((time.monotonic(), w))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PowerSampler:
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._t0 = time.monotonic()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            self._t1 = time.monotonic()

    @property
    def mean_w(self) -> float | None:
        return sum(w for _, w in self._samples) / len(self._samples) if self._samples else None

    def energy_j(self) -> float | None:
        """Mean board power × the sampled interval, joules (None without samples)."""
        if not self._samples or self._thread is None:
            return None
        return self.mean_w * (self._t1 - self._t0)
