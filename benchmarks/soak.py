"""Soak and fault run against real servers on 127.0.0.1, written up as reports/reliability.md.

    knet soak [--compare-s 20] [--soak-s 150] [--clients 8] [--out reports]

Every run starts its own ``bentoml serve`` on zoo models copied into a temporary BentoML store:

1. **one vs two workers** (batching on and off for each): ``--compare-clients`` closed-loop
   clients of one-row requests for ``--compare-s`` → requests/s, p50, p99, and the batching
   gain (requests/s with batching over without). With batching on, a worker is then killed
   with SIGKILL under light traffic → how long no request succeeds (the outage), how many
   fail even after one retry 100 ms later, and when the worker is back.
2. **soak** with two workers: ``--clients`` closed-loop clients of mixed models and sizes for
   ``--soak-s``, one worker killed half-way, RSS and ``/livez`` sampled every second, and a
   SIGTERM at the end with requests in flight → answers by status, p50/p99 and RSS per
   minute, recovery and exit times, and a plot.

Defaults take about 6 minutes on a quiet 2-vCPU machine (9 when busy). Clients share the
server's CPUs, so the figures describe this machine, not a capacity; the report gives the load
average beside them.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from models.errors import UserInputError
from models.zoo import ZOO_DIR, available
from service.launch import SERVICE, ServerProcess, bentoml_command

SOAK_MODELS = ("twomoon", "potential1", "digits")
# (model, endpoint, rows, weight): mostly small requests, some large ones, every zoo size
MIX = (("twomoon", "sample", 1, 6), ("twomoon", "logprob", 1, 4), ("twomoon", "sample", 64, 2),
       ("twomoon", "logprob", 256, 1), ("potential1", "sample", 16, 2), ("digits", "sample", 1, 2),
       ("digits", "logprob", 32, 1), ("twomoon", "sample", 1024, 1))
SMALL_MIX = (("twomoon", "sample", 1, 1), ("twomoon", "logprob", 1, 1))
RETRY_DELAY_S = 0.1
INITIALIZED = "Service kirchhoffnet initialized"  # BentoML logs it once per worker start
RETRYABLE = ("ConnectError", "ReadError", "RemoteProtocolError", "WriteError", "ConnectTimeout", 503)


@dataclass
class Answer:
    """One request as the client saw it: ``outcome`` is the HTTP status of the last attempt or
    the name of the connection error; ``first`` that of the first attempt."""

    sent_s: float  # seconds since the run's start
    latency_s: float
    model: str
    endpoint: str
    rows: int
    outcome: int | str
    first: int | str


@dataclass
class Sample:
    """Once a second: resident memory of the server's processes and one ``/livez`` probe."""

    at_s: float
    rss_mib: float
    workers: int
    livez_s: float | None  # None: no answer


@dataclass
class Run:
    """Everything measured on one server."""

    name: str
    workers: int
    batching: bool
    answers: list[Answer] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)  # name → seconds since start
    window: tuple[float, float] = (0.0, 0.0)  # the throughput window, seconds since start
    exit_code: int | None = None


class Clients:
    """Closed-loop clients, each sending requests from ``mix`` back to back (one retry after
    100 ms on a connection error or 503) until stopped."""

    def __init__(self, url: str, mix, clients: int, t0: float, points: dict[str, list]):
        self.url, self.mix, self.t0, self.points = url, mix, t0, points
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def _body(self, model: str, endpoint: str, rows: int, seed: int) -> dict:
        if endpoint == "sample":
            return {"model": model, "n": rows, "seed": seed}
        pts = self.points[model]
        return {"model": model, "points": [pts[(seed + k) % len(pts)] for k in range(rows)]}

    def _loop(self, index: int) -> None:
        weighted = [m for m in self.mix for _ in range(m[3])]
        with httpx.Client(base_url=self.url, timeout=120) as c:
            for k in itertools.count():
                if self._stop.is_set():
                    return
                model, endpoint, rows, _ = weighted[(index * 7 + k) % len(weighted)]
                sent = time.monotonic()
                first = outcome = self._send(c, f"/{endpoint}", self._body(model, endpoint, rows, index * 100_003 + k))
                if outcome in RETRYABLE:
                    time.sleep(RETRY_DELAY_S)
                    outcome = self._send(c, f"/{endpoint}", self._body(model, endpoint, rows, index * 100_003 + k))
                self.answers.append(Answer(sent - self.t0, time.monotonic() - sent, model, endpoint, rows,
                                           outcome, first))
                if outcome in RETRYABLE:
                    time.sleep(RETRY_DELAY_S)  # a client backs off instead of spinning on a refused port

    @staticmethod
    def _send(c: httpx.Client, path: str, body: dict) -> int | str:
        try:
            return c.post(path, json=body).status_code
        except httpx.HTTPError as err:
            return type(err).__name__


class Sampler:
    """A thread that records a :class:`Sample` every second."""

    def __init__(self, server: ServerProcess, t0: float):
        self.server, self.t0 = server, t0
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            procs = _server_processes(self.server)
            rss = sum(_rss(p) for p in procs) / 2**20
            t = time.monotonic()
            try:  # a new connection each time, as a liveness probe makes
                ok = httpx.get(self.server.url + "/livez", timeout=5).status_code == 200
                livez = time.monotonic() - t if ok else None
            except httpx.HTTPError:
                livez = None
            self.samples.append(Sample(t - self.t0, rss, len(procs) - 1, livez))


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def _server_processes(server: ServerProcess) -> list[psutil.Process]:
    try:
        main = psutil.Process(server.pid)
        return [main] + [w for w in main.children() if w.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def kill_worker(server: ServerProcess, log: Path, t0: float, events: dict[str, float],
                timeout_s: float = 120) -> threading.Thread:
    """SIGKILL the first worker and record when; the returned (started) thread records when
    BentoML has initialised a replacement (``worker_back``), waiting at most ``timeout_s``."""
    started = log.read_text(errors="replace").count(INITIALIZED)
    victim = _server_processes(server)[1]
    events["worker_killed"] = time.monotonic() - t0
    victim.send_signal(signal.SIGKILL)

    def wait_back() -> None:
        if _wait(lambda: log.read_text(errors="replace").count(INITIALIZED) > started, timeout_s):
            events["worker_back"] = time.monotonic() - t0

    waiter = threading.Thread(target=wait_back, daemon=True)
    waiter.start()
    return waiter


def sigterm(server: ServerProcess, t0: float, events: dict[str, float], timeout_s: float = 120) -> int | None:
    """SIGTERM the server's main process (as a supervisor does); its exit code, None if it hung.
    Workers still alive after it exited are counted (``events["workers_left"]``) and killed."""
    workers = _server_processes(server)[1:]
    events["sigterm"] = time.monotonic() - t0
    os.kill(server.pid, signal.SIGTERM)
    try:
        code = server.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None
    events["exited"] = time.monotonic() - t0
    left = [w for w in workers if _alive(w)]
    events["workers_left"] = float(len(left))
    for w in left:
        with contextlib.suppress(psutil.Error):
            w.kill()
    return code


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def prepare_store(home: Path, models=SOAK_MODELS) -> None:
    missing = [m for m in models if m not in available()]
    if missing:
        raise UserInputError(f"zoo models {', '.join(missing)} have no checkpoint in {ZOO_DIR}")
    r = subprocess.run([sys.executable, "-m", "knet", "store", "--no-zoo", *(str(ZOO_DIR / m) for m in models)],
                       env={**os.environ, "BENTOML_HOME": str(home)}, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"knet store failed: {r.stderr[-2000:]}")


def _points(url: str, models) -> dict[str, list]:
    """Valid inputs for /logprob: 256 of each model's own samples."""
    return {m: httpx.post(url + "/sample", json={"model": m, "n": 256, "seed": 1}, timeout=120).json()["samples"]
            for m in models}


def run_server(name: str, home: Path, work: Path, workers: int, batching: bool, mix, clients: int,
               seconds: float, kill: str, terminate: bool, progress, warmup_s: float = 0.0) -> Run:
    """One server: load for ``warmup_s`` (not counted), then ``seconds``; ``kill`` = "after" (a
    worker killed after that, under light traffic), "middle" (half-way, under this load) or "";
    ``terminate``: SIGTERM at the end with the load still running."""
    run = Run(name, workers, batching)
    log = work / f"{name}.log"
    env = {"BENTOML_HOME": str(home), "KNET_SERVICE_WORKERS": str(workers),
           "KNET_SERVICE_BATCHING": str(batching).lower()}
    with ServerProcess(lambda port: bentoml_command(SERVICE, port), env=env, log_path=log,
                       ready_timeout_s=180) as server:
        points = _points(server.url, {m for m, e, *_ in mix if e == "logprob"})
        t0 = time.monotonic()
        with Sampler(server, t0) as sampler:
            with Clients(server.url, mix, clients, t0, points) as load:
                time.sleep(warmup_s)  # first requests of each size pay one-off costs
                run.window = (warmup_s, warmup_s + seconds)
                waiter = None
                for second in range(int(warmup_s), int(warmup_s + seconds)):
                    if kill == "middle" and second == int(warmup_s + seconds / 2):
                        waiter = kill_worker(server, log, t0, run.events)
                    time.sleep(max(0.0, t0 + second + 1 - time.monotonic()))
                    progress(1)
                if waiter is not None:
                    waiter.join(120)  # the replacement's start time belongs in this run
                if terminate:
                    run.exit_code = sigterm(server, t0, run.events)
            if kill == "after":
                with Clients(server.url, SMALL_MIX, 2, t0, points) as light:
                    time.sleep(2.0)
                    kill_worker(server, log, t0, run.events).join(120)
                    time.sleep(1.0)
                load.answers += light.answers
        run.answers, run.samples = load.answers, sampler.samples
    return run


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compare-s", type=float, default=20.0, help="seconds of load per one-vs-two-workers run")
    p.add_argument("--compare-clients", type=int, default=16, help="one-row clients in those runs")
    p.add_argument("--soak-s", type=float, default=150.0, help="seconds of mixed traffic in the soak run")
    p.add_argument("--clients", type=int, default=8, help="mixed-traffic clients in the soak run")
    p.add_argument("--no-compare", action="store_true", help="only the soak run")
    p.add_argument("--out", type=Path, default=Path("reports"), help="writes reliability.md/.png/.json here")


def run_from_args(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from benchmarks.soak_report import write_report

    if args.compare_s < 5 or args.soak_s < 20 or args.clients < 1 or args.compare_clients < 1:
        raise UserInputError("--compare-s must be >= 5, --soak-s >= 20, --clients and --compare-clients >= 1")
    plan = [] if args.no_compare else [(w, b) for w in (1, 2) for b in (True, False)]
    total = int(args.compare_s) * len(plan) + int(args.soak_s)
    runs: list[Run] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="knet-soak-") as tmp, \
            tqdm(total=total, desc="soak", unit="s", dynamic_ncols=True) as bar:
        work = Path(tmp)
        prepare_store(work / "bentoml")
        for workers, batching in plan:
            name = f"{workers}w-{'batch' if batching else 'nobatch'}"
            bar.set_postfix_str(name)
            runs.append(run_server(name, work / "bentoml", work, workers, batching, SMALL_MIX,
                                   args.compare_clients, args.compare_s, "after" if batching else "", False,
                                   bar.update, warmup_s=3.0))
        bar.set_postfix_str("soak")
        runs.append(run_server("soak", work / "bentoml", work, 2, True, MIX, args.clients, args.soak_s,
                               "middle", True, bar.update))
    path = write_report(runs, args, args.out, load_before, os.getloadavg())
    print(f"wrote {path}", file=sys.stderr)
    return 0

