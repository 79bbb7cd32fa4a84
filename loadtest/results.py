"""The typed results of a load test and how their numbers are written.

:class:`StepRow` is one measured step: the client's view (locust or the open-loop
generator), the server's (``/metrics`` deltas) and the circuit's (projected chip latency).
It is what ``rows.csv`` holds (one column per field, in field order), what ``results.json``
stores under ``rows`` and what the report and the plots read. Times are in seconds, rates per
second, energy in joules, power in watts.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Literal

from .circuit import CircuitFigures


@dataclass(frozen=True)
class StepRow:
    """One step of a load test (see the module docstring for units)."""

    model: str
    endpoint: Literal["sample", "logprob"]
    rows: int  # samples drawn or points scored per request
    mode: Literal["closed", "open"]
    users: int | None  # closed-loop clients (None in open loop)
    offered_rps: float | None  # open-loop arrival rate (None in closed loop)
    duration_s: float  # the step's planned load time
    wall_s: float  # the step's measured wall time, load generator start to exit
    drained_before_s: float  # waiting for the previous step's requests to finish
    requests: int
    failures: int
    ok_requests: int
    errors_by_status: dict[str, int]
    rps: float  # answered-200 requests per second
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    max_s: float | None
    error_rate: float | None
    samples_per_s: float  # rps × rows
    server_requests: float | None
    server_solves: float | None
    server_rows: float | None
    solve_mean_s: float | None
    solve_p50_s: float | None
    solve_p99_s: float | None
    nfe_mean: float | None
    batch_mean: float | None
    solver_failures: dict[str, float] | None
    chip_latency_s: float | None
    ratio_request: float | None  # served p50 ÷ chip latency
    ratio_sample: float | None  # (1 ÷ samples_per_s) ÷ chip latency
    gpu_power_w: float | None
    gpu_j_per_sample: float | None
    peak_closed_rps: float | None = None  # open loop: the closed-loop peak its rates are multiples of
    extra: dict = field(default_factory=dict, compare=False)  # fields of a newer results.json, kept

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The CSV columns: every field but ``extra``, in order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, data: dict) -> StepRow:
        """A row from its ``results.json`` form.

        Raises:
            ValueError: a field without a default is missing.
        """
        names = set(cls.columns())
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name in names and f.name not in data
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ValueError(f"load-test row lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names},
                   extra={k: v for k, v in data.items() if k not in names and k != "extra"})

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.columns()}
        return {**out, **self.extra}

    def csv_cells(self) -> dict[str, str | int | float]:
        """The row for ``csv.DictWriter``: dicts as JSON, None as an empty cell."""
        return {name: (json.dumps(v) if isinstance(v, dict) else ("" if v is None else v))
                for name, v in ((n, getattr(self, n)) for n in self.columns())}


def fmt_time(s: float | None) -> str:
    """Seconds → a short string in ns/µs/ms/s (``–`` for missing)."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(s) >= scale or unit == "ns":
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "–"
    e = math.floor(math.log10(x)) if x > 0 else 0
    if abs(e) >= 4:
        return f"{x / 10 ** e:.2f}·10^{e}×"
    return f"{x:,.0f}×" if x >= 100 else f"{x:.3g}×"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def fmt_errors(d: dict | None) -> str:
    return "; ".join(f"{k}: {v:g}" for k, v in sorted(d.items())) if d else "0"


@dataclass
class LoadTestResult:
    """Everything one ``knet loadtest`` run measured: ``results.json`` and the report's input.

    ``circuit`` maps each served model to its projected chip figures (None without a local
    checkpoint); ``service`` to the fields of its first ``/sample`` answer (without arrays);
    ``machine`` is :func:`loadtest.machine.describe` plus the service settings; ``plan`` the
    scenario matrix as run.
    """

    circuit: dict[str, CircuitFigures | None]
    service: dict[str, dict]
    rows: list[StepRow]
    notes: list[str]
    machine: dict = field(default_factory=dict)
    server: str = ""
    cores_statement: str = ""
    started_utc: str = ""
    command: str = ""
    wall_s: float = 0.0
    plan: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["circuit"] = {m: (c.as_dict() if c else None) for m, c in self.circuit.items()}
        out["rows"] = [r.to_dict() for r in self.rows]
        return out

    @classmethod
    def from_json(cls, data: dict) -> LoadTestResult:
        """The result from its ``results.json`` form (the ``headline`` there is recomputed, not read).

        Raises:
            ValueError: a required part is missing or malformed.
        """
        try:
            kept = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
            kept["circuit"] = {m: (CircuitFigures.from_dict(c) if c else None) for m, c in data["circuit"].items()}
            kept["rows"] = [StepRow.from_dict(r) for r in data["rows"]]
            return cls(**kept)
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a load-test result ({type(err).__name__}: {err})") from None
