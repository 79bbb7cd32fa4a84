"""The scenario matrix of a load test: what is requested, how hard and for how long.

A *scenario* is one request shape (model, endpoint, rows per request). A *step* runs one
scenario at one closed-loop concurrency (``users`` clients that each send the next request
as soon as the previous one answers) or at one open-loop rate (requests fired on a fixed
clock, whether or not earlier ones have answered). Every step is bounded twice: by
``duration_s`` and by ``max_requests``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Endpoint = Literal["sample", "logprob"]

DEFAULT_MODELS = ("twomoon", "potential1", "digits")
DEFAULT_ROWS = (1, 64, 1024)
DEFAULT_CONCURRENCY = (1, 2, 4, 8)
DEFAULT_OPEN_LOOP_FACTORS = (0.5, 1.0, 2.0)  # × the measured closed-loop peak throughput


@dataclass(frozen=True)
class Scenario:
    """One request shape: ``rows`` samples drawn (``sample``) or points scored (``logprob``)."""

    model: str
    endpoint: Endpoint
    rows: int

    @property
    def key(self) -> str:
        return f"{self.model}/{self.endpoint}/n={self.rows}"


@dataclass(frozen=True)
class Step:
    """One bounded measurement: ``users`` closed-loop clients, or an open-loop ``rate_rps``."""

    scenario: Scenario
    mode: Literal["closed", "open"]
    duration_s: float
    max_requests: int
    users: int = 1
    rate_rps: float | None = None
    max_in_flight: int = 64  # open loop only: requests beyond this are counted as dropped

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.max_requests < 1 or self.users < 1:
            raise ValueError("a step needs duration_s > 0, max_requests >= 1 and users >= 1")
        if self.mode == "open" and not (self.rate_rps and self.rate_rps > 0):
            raise ValueError("an open-loop step needs rate_rps > 0")

    @property
    def label(self) -> str:
        load = f"c={self.users}" if self.mode == "closed" else f"open {self.rate_rps:.3g} req/s"
        return f"{self.scenario.key} {load}"


@dataclass(frozen=True)
class Plan:
    """The whole run. ``open_loop`` names the scenario that gets the fixed-rate sweep."""

    models: tuple[str, ...] = DEFAULT_MODELS
    rows: tuple[int, ...] = DEFAULT_ROWS
    endpoints: tuple[Endpoint, ...] = ("sample", "logprob")
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    step_s: float = 5.0
    max_requests: int = 5000
    open_loop: Scenario | None = field(default_factory=lambda: Scenario("twomoon", "sample", 64))
    open_loop_factors: tuple[float, ...] = DEFAULT_OPEN_LOOP_FACTORS
    warmup_requests: int = 2
    with_logprob: bool = True  # /sample asks for the log-density channel too (the contract default)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("no models to load-test")
        if any(r < 1 for r in self.rows) or any(c < 1 for c in self.concurrency):
            raise ValueError("rows and concurrency must be >= 1")
        if self.step_s <= 0 or self.max_requests < 1:
            raise ValueError("step_s must be > 0 and max_requests >= 1")

    def scenarios(self) -> list[Scenario]:
        return [Scenario(m, e, n) for m in self.models for e in self.endpoints for n in self.rows]

    def closed_steps(self) -> list[Step]:
        return [Step(s, "closed", self.step_s, self.max_requests, users=c)
                for s in self.scenarios() for c in self.concurrency]

    def open_loop_scenario(self) -> Scenario | None:
        """``open_loop`` if the closed-loop steps measure it (its peak sets the rates), else the
        closest scenario they do measure: same model and endpoint if possible, middle size."""
        if self.open_loop is None:
            return None
        have = self.scenarios()
        if self.open_loop in have:
            return self.open_loop
        same = [s for s in have if (s.model, s.endpoint) == (self.open_loop.model, self.open_loop.endpoint)]
        pool = same or have
        return sorted(pool, key=lambda s: s.rows)[len(pool) // 2] if pool else None

    def open_steps(self, peak_rps: float) -> list[Step]:
        """Fixed-rate steps at ``factor × peak_rps`` for the open-loop scenario."""
        scenario = self.open_loop_scenario()
        if scenario is None or peak_rps <= 0:
            return []
        return [Step(scenario, "open", self.step_s, self.max_requests, rate_rps=f * peak_rps,
                     max_in_flight=max(64, 4 * max(self.concurrency)))
                for f in self.open_loop_factors]

    def estimated_s(self, per_step_overhead_s: float = 2.5) -> float:
        """Rough wall time: every step plus locust start-up and metric scrapes."""
        n = len(self.closed_steps()) + (len(self.open_loop_factors) if self.open_loop else 0)
        return n * (self.step_s + per_step_overhead_s)

    def with_models(self, models: tuple[str, ...]) -> Plan:
        ol = self.open_loop
        if ol is not None and ol.model not in models:
            ol = replace(ol, model=models[0])
        return replace(self, models=models, open_loop=ol)


def quick_plan(model: str, step_s: float = 3.0) -> Plan:
    """One scenario (``model`` /sample n=64), one closed-loop step, no open-loop sweep."""
    return Plan(models=(model,), rows=(64,), endpoints=("sample",), concurrency=(2,), step_s=step_s,
                max_requests=1000, open_loop=None, warmup_requests=1)
