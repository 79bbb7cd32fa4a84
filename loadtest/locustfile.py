"""Closed-loop load for ``locust -f loadtest/locustfile.py --headless``; runs only inside locust.

Never import this module from the project: locust's gevent monkey-patches the interpreter.
Configured by the environment that ``loadtest.locust_run`` sets for the locust process:

| variable | meaning |
| --- | --- |
| ``KNET_LT_PATH`` | request path, ``/sample`` or ``/logprob`` |
| ``KNET_LT_BODY`` | file holding the JSON request body (sent as is, pre-encoded) |
| ``KNET_LT_MAX_REQUESTS`` | stop the whole run after this many requests (the step's cap) |
| ``KNET_LT_CSV`` | prefix of the final ``_stats.csv`` / ``_failures.csv`` written at quit |

The final CSVs are written here, on locust's ``quit`` event, with locust's own CSV writer:
``locust --csv`` only rewrites its files once a second from a background greenlet and does
not write them again at shutdown, so on a busy machine a short step can end with a stale
(even empty) ``_stats.csv`` while the printed summary is right.

Each user sends the next request as soon as the previous one answers (``constant(0)``).
A non-200 answer is a failure named ``HTTP <status>`` so the failures CSV groups by status;
a transport error is named after its exception.
"""
from __future__ import annotations

import csv
import os

from locust import HttpUser, constant, events, task
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

PATH = os.environ["KNET_LT_PATH"]
with open(os.environ["KNET_LT_BODY"], "rb") as fh:
    BODY = fh.read()
MAX_REQUESTS = int(os.environ.get("KNET_LT_MAX_REQUESTS", "1000000"))
HEADERS = {"Content-Type": "application/json"}
CSV_PREFIX = os.environ.get("KNET_LT_CSV")
_sent = 0
_env = None


@events.init.add_listener
def _keep_environment(environment, **_kw) -> None:
    global _env
    _env = environment


@events.quit.add_listener
def _write_final_csv(**_kw) -> None:
    if CSV_PREFIX and _env is not None:
        writer = StatsCSV(_env, PERCENTILES_TO_REPORT)
        with open(f"{CSV_PREFIX}_stats.csv", "w", newline="") as fh:
            writer.requests_csv(csv.writer(fh))
        with open(f"{CSV_PREFIX}_failures.csv", "w", newline="") as fh:
            writer.failures_csv(csv.writer(fh))


class ServiceUser(HttpUser):
    wait_time = constant(0)

    @task
    def call(self) -> None:
        global _sent
        if _sent >= MAX_REQUESTS:
            self.environment.runner.quit()
            return
        _sent += 1
        with self.client.post(PATH, data=BODY, headers=HEADERS, name=PATH, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
            else:
                r.success()
