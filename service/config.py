"""Service configuration: every operational limit in one typed, validated object.

Defaults are below; each field can be overridden by an environment variable
``KNET_SERVICE_<FIELD>`` (e.g. ``KNET_SERVICE_MAX_CONCURRENCY=64``), read here and nowhere else.

| field | default | meaning |
| --- | --- | --- |
| ``max_samples`` | 4096 | largest ``n`` accepted by ``/sample`` |
| ``max_points`` | 4096 | most rows accepted by ``/logprob`` |
| ``max_abs_coordinate`` | 1e6 | largest \\|coordinate\\| accepted in ``points`` (model volts) |
| ``max_body_bytes`` | 8 MiB | request bodies past this get 413 |
| ``max_concurrency`` | 64 | requests in flight per worker; more get 429 with ``Retry-After`` |
| ``retry_after_s`` | 1 | the ``Retry-After`` value sent with 429, seconds |
| ``solve_timeout_s`` | 10 | wall-clock budget of one solve, seconds (504 past it) |
| ``max_solver_steps`` | 100000 | step budget of one solve (504 past it) |
| ``request_timeout_s`` | 60 | BentoML's whole-request timeout, seconds (504 past it) |
| ``batching`` | true | merge concurrent requests per model into one solve |
| ``max_batch_rows`` | 256 | rows per merged solve; larger requests are chunked (small ones wait less) |
| ``slice_rows`` | 32 | rows a request may add to a shared batch: max(slice_rows, max_batch_rows / waiting requests) |
| ``solver_threads`` | 2 | batches of one model solved at once (threads) |
| ``workers`` | 1 | BentoML worker processes |
| ``threads`` | 1 | torch intra-op threads per worker |
| ``device`` | auto | ``auto`` (CUDA when available), ``cpu`` or ``cuda`` |
| ``warmup`` | true | run one tiny solve per model before reporting ready |
| ``runtime`` | auto | ``auto``: onnxruntime per model and batch size where measured faster; ``engine``: never |
| ``noop_routes`` | false | also serve ``POST /noop/sample``, ``/noop/logprob``: same schemas, no solve |
"""
from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "KNET_SERVICE_"


class ServiceSettings(BaseModel):
    """Operational limits of the service (see the module docstring for the table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_samples: int = Field(4096, ge=1, description="largest n for /sample")
    max_points: int = Field(4096, ge=1, description="most points for /logprob")
    max_abs_coordinate: float = Field(1e6, gt=0, description="largest |coordinate| in points")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body limit, bytes")
    max_concurrency: int = Field(64, ge=1, description="requests in flight per worker")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with 429, seconds")
    solve_timeout_s: float = Field(10.0, gt=0, description="wall-clock budget of a solve, seconds")
    max_solver_steps: int = Field(100_000, ge=1, description="step budget of a solve")
    request_timeout_s: float = Field(60.0, gt=0, description="whole-request timeout, seconds")
    batching: bool = Field(True, description="merge concurrent requests into one solve")
    max_batch_rows: int = Field(256, ge=1, description="rows per merged solve")
    slice_rows: int = Field(32, ge=1, description="least rows per request in a shared batch")
    solver_threads: int = Field(2, ge=1, description="batches of one model solved at once")
    workers: int = Field(1, ge=1, description="BentoML worker processes")
    threads: int = Field(1, ge=1, description="torch intra-op threads per worker")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    warmup: bool = True
    runtime: Literal["auto", "engine"] = "auto"
    noop_routes: bool = Field(False, description="serve /noop/sample and /noop/logprob (benchmark reference)")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServiceSettings:
        """Defaults overridden by ``KNET_SERVICE_*`` variables; ValueError naming a bad one."""
        env = os.environ if environ is None else environ
        values = {name: env[ENV_PREFIX + name.upper()] for name in cls.model_fields
                  if ENV_PREFIX + name.upper() in env}
        try:
            return cls(**values)
        except ValidationError as err:
            e = err.errors()[0]
            field = ENV_PREFIX + str(e["loc"][0]).upper() if e.get("loc") else "settings"
            raise ValueError(f"{field}: {e['msg']}") from None

    def torch_device(self) -> str:
        """The torch device the models run on: CUDA when available unless ``device=cpu``."""
        if self.device == "auto":
            import torch
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


_current: ServiceSettings | None = None


def current() -> ServiceSettings:
    """The process's settings, read from the environment once."""
    global _current
    if _current is None:
        _current = ServiceSettings.from_env()
    return _current
