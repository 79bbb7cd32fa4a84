"""Running an external tool (ngspice, VACASK, openvaf-r) bounded in time, leaving nothing behind.

The tool starts in its own process group (a new session), so a timeout, or any exception
while waiting (Ctrl+C included), kills the whole group: nothing it started survives. The
child is reaped with ``os.wait4``, so its own CPU time is known even when several runs go on
in parallel threads (RUSAGE_CHILDREN would mix them).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


class ToolTimeout(TimeoutError):
    """The tool did not finish in time; its process group was killed."""


def run_in_group(argv: list[str], work: Path, log_name: str, timeout_s: float) -> tuple[int, float]:
    """Run ``argv`` in ``work`` with stdout and stderr in ``work/log_name``; returns (exit
    code, CPU seconds of the child). Raises :class:`ToolTimeout` after ``timeout_s``."""
    with open(work / log_name, "wb") as log:
        proc = subprocess.Popen(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, usage.ru_utime + usage.ru_stime
            if time.monotonic() > deadline:
                raise ToolTimeout(f"{Path(argv[0]).name} did not finish within {timeout_s:g} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (whatever is still in it) and reap the child."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group id is the child's pid (new session)
    if proc.returncode is None:
        with contextlib.suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        proc.returncode = -signal.SIGKILL
