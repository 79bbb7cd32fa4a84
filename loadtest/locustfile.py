"""Closed-loop load for ``locust -f loadtest/locustfile.py --headless``; runs only inside locust.

Never import this module from the project: locust's gevent monkey-patches the interpreter.
Configured by the environment that ``loadtest.locust_run`` sets for the locust process:

| variable | meaning |
| --- | --- |
| ``KNET_LT_PATH`` | request path, ``/sample`` or ``/logprob`` |
| ``KNET_LT_BODY`` | file holding the JSON request body (sent as is, pre-encoded) |
| ``KNET_LT_MAX_REQUESTS`` | stop the whole run after this many requests (the step's cap) |

Each user sends the next request as soon as the previous one answers (``constant(0)``).
A non-200 answer is a failure named ``HTTP <status>`` so the failures CSV groups by status;
a transport error is named after its exception.
"""
from __future__ import annotations

import os

from locust import HttpUser, constant, task

PATH = os.environ["KNET_LT_PATH"]
with open(os.environ["KNET_LT_BODY"], "rb") as fh:
    BODY = fh.read()
MAX_REQUESTS = int(os.environ.get("KNET_LT_MAX_REQUESTS", "1000000"))
HEADERS = {"Content-Type": "application/json"}
_sent = 0


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
