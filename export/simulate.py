"""Circuit simulation of exported netlists with ngspice or VACASK, checked against the model.

For ``n`` inputs and each netlist variant, the deck is simulated by ngspice (behavioural
sources, ``export.spice``) or VACASK (compiled Verilog-A devices, ``export.vacask``) and the node
voltages at T·τ are compared with a tight float64 solution of the model (dopri5, rtol 1e-9,
atol 1e-10, so the reference error is far below the 1e-3 bar):

- ``sample``: z ~ N(0, I) → x;
- ``logprob``: z → (x, log q(x));
- ``reverse``: the reference samples x → (z, log p(x)).

Errors per quantity: ``max_abs`` = max |sim − ref| over inputs and coordinates (model units)
and ``max_rel`` = max_abs / max |ref| (norm-wise relative error, stable where a coordinate
crosses 0).

Cost: ngspice evaluates every behavioural source at every Newton iteration, so one deck
costs about ``devices × time points × iterations``; :func:`estimate_seconds` projects it
from the constant measured in docs/export.md, and :func:`simulate` refuses (``TooLarge``)
when the projection exceeds the caller's limit. VACASK's cost (:func:`estimate_seconds_vacask`)
is ~20× lower per instance·point; ``simulator="auto"`` (:func:`choose_simulator`) keeps
ngspice for small circuits and takes the one projected faster for large ones.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import torch

from models.config import SolverConfig
from models.errors import UserInputError
from models.flow import KirchhoffNet, standard_normal_log_prob
from models.hardware import projected_latency_s, settle_time_s

from .netlist import VARIANTS, SpiceOptions, build_deck
from .spice import run_deck

REFERENCE_SOLVER = SolverConfig(method="dopri5", rtol=1e-9, atol=1e-10, max_steps=1_000_000, max_wall_s=600.0)
# ngspice CPU cost model, fitted to `knet bench-ngspice` (benchmarks/spice_scaling.py) and the zoo
# (docs/export.md):
# CPU ≈ sources × time points × µs per source-point; the time points (~1200 per unit of
# model time at the default tolerances, 1631 for the digits-sized circuit) hardly depend on the layer
# count, and the cost per
# source-point grows with the node count (denser matrix rows) and is ~3× higher for the
# divergence sources of the log-density decks.
POINTS_PER_TIME_UNIT = 1500
US_PER_SOURCE_POINT = {"sample": (2.0, 0.12, 12.0), "logprob": (6.0, 0.5, 18.0)}  # (base, per node, cap)
PROCESS_OVERHEAD_S = 0.05
# VACASK CPU cost model (benchmarks/sim_scaling.py, docs/export.md): compiled devices cost
# ~0.1 µs per instance·point (KLU solve included) but VACASK takes ~4× more time points
# than ngspice at the same tolerances; compiling the Verilog-A library adds ~0.1 s per run.
VACASK_POINTS_PER_TIME_UNIT = 6000
VACASK_US_PER_INSTANCE_POINT = 0.1
VACASK_OVERHEAD_S = 0.15
SIMULATORS = ("ngspice", "vacask")
# `--simulator auto`: ngspice (the reference path) for circuits below this many devices,
# whichever simulator is projected faster from there (ngspice needs ~30 s of CPU per input
# for the 3144-device digits sample deck and does not finish its log-density deck in 300 s).
LARGE_CIRCUIT_DEVICES = 2000


class TooLarge(UserInputError):
    """The projected ngspice time exceeds the limit; the message gives the figures."""


@dataclass(frozen=True)
class ErrorRow:
    variant: str
    quantity: str
    max_abs: float
    max_rel: float


@dataclass
class SimulationReport:
    """What ``knet simulate`` prints (``to_json`` is its ``--json``)."""

    model: str
    n: int
    mode: str
    rows: list[ErrorRow]
    projected_latency_s: float
    simulated_time_s: float
    ngspice_wall_s: float
    ngspice_cpu_s: float
    ngspice_elapsed_s: float
    ngspice_runs: int
    reference_wall_s: float
    variants: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    simulator: str = "ngspice"  # the ngspice_* fields hold this simulator's figures

    def max_rel_error(self) -> dict[str, float]:
        return {v: max(r.max_rel for r in self.rows if r.variant == v) for v in self.variants}

    def max_abs_error(self) -> dict[str, float]:
        return {v: max(r.max_abs for r in self.rows if r.variant == v) for v in self.variants}

    def to_json(self) -> dict:
        """The same keys for every simulator: ``<simulator>_wall_s`` … and ``simulator_wall_s`` …"""
        timing = {"wall_s": self.ngspice_wall_s, "cpu_s": self.ngspice_cpu_s, "elapsed_s": self.ngspice_elapsed_s,
                  "runs": self.ngspice_runs}
        return {
            "model": self.model, "n": self.n, "mode": self.mode, "simulator": self.simulator,
            "max_rel_error": self.max_rel_error(), "max_abs_error": self.max_abs_error(),
            "errors": [asdict(r) for r in self.rows],
            "projected_latency_s": self.projected_latency_s, "simulated_time_s": self.simulated_time_s,
            **{f"{self.simulator}_{k}": v for k, v in timing.items()},
            **{f"simulator_{k}": v for k, v in timing.items()},
            "reference_wall_s": self.reference_wall_s, "skipped": self.skipped,
        }

    def table(self) -> str:
        lines = [f"{'variant':<9} {'quantity':<9} {'max abs err':>12} {'max rel err':>12}"]
        for r in self.rows:
            lines.append(f"{r.variant:<9} {r.quantity:<9} {r.max_abs:>12.3e} {r.max_rel:>12.3e}")
        for v, why in self.skipped.items():
            lines.append(f"{v:<9} skipped: {why}")
        lines += [
            "",
            f"inputs: {self.n}   mode: {self.mode}   {self.simulator} runs: {self.ngspice_runs}",
            f"projected chip latency (T*tau + DAC + ADC): {self.projected_latency_s:.4g} s",
            f"simulated circuit time per run (T*tau):      {self.simulated_time_s:.4g} s",
            f"{self.simulator + ' wall time (sum over runs):':<44} {self.ngspice_wall_s:.3f} s "
            f"(CPU {self.ngspice_cpu_s:.3f} s, elapsed {self.ngspice_elapsed_s:.3f} s)",
            f"reference solve wall time (float64 dopri5):  {self.reference_wall_s:.3f} s",
        ]
        return "\n".join(lines)


def source_count(model: KirchhoffNet, variant: str) -> int:
    """Behavioural sources in one copy of the ``variant`` deck."""
    edges = model.spec.num_edges
    return edges * (2 if variant in ("logprob", "reverse") else 1) + (variant == "reverse")


def estimate_seconds(model: KirchhoffNet, variant: str, copies: int = 1) -> float:
    """Projected ngspice CPU seconds of one ``variant`` deck holding ``copies`` inputs (on an
    idle core; a busy machine stretches the wall time, not the CPU time)."""
    nodes = max(layer.nodes for layer in model.spec.layers) * copies
    base, per_node, cap = US_PER_SOURCE_POINT["sample" if variant == "sample" else "logprob"]
    us = min(base + per_node * nodes, cap)
    points = POINTS_PER_TIME_UNIT * max(model.spec.end_time, 1.0)
    return PROCESS_OVERHEAD_S + 1e-6 * us * source_count(model, variant) * copies * points


def estimate_seconds_vacask(model: KirchhoffNet, variant: str, copies: int = 1) -> float:
    """Projected VACASK CPU seconds of one ``variant`` deck holding ``copies`` inputs."""
    points = VACASK_POINTS_PER_TIME_UNIT * max(model.spec.end_time, 1.0)
    instances = source_count(model, variant) * copies
    return VACASK_OVERHEAD_S + 1e-6 * VACASK_US_PER_INSTANCE_POINT * instances * points


def projected_seconds(model: KirchhoffNet, simulator: str, variants: list[str], n: int, per_deck: int) -> float:
    """Projected CPU seconds of a whole job (``n`` inputs, ``per_deck`` copies per deck)."""
    one = estimate_seconds if simulator == "ngspice" else estimate_seconds_vacask
    return sum(math.ceil(n / per_deck) * one(model, v, per_deck) for v in variants)


def choose_simulator(model: KirchhoffNet, variants: list[str], n: int, per_deck: int) -> str:
    """``auto``: ngspice for circuits below LARGE_CIRCUIT_DEVICES, else the one projected faster."""
    if model.spec.num_edges < LARGE_CIRCUIT_DEVICES:
        return "ngspice"
    cost = {s: projected_seconds(model, s, variants, n, per_deck) for s in SIMULATORS}
    return min(SIMULATORS, key=cost.__getitem__)


def _checked_simulator(model: KirchhoffNet, simulator: str, wanted: list[str], n: int, per_deck: int,
                       max_seconds: float, force: bool) -> str:
    """Resolve ``auto`` and refuse (:class:`TooLarge`) a job projected past ``max_seconds``."""
    if simulator == "auto":
        simulator = choose_simulator(model, wanted, n, per_deck)
    if simulator not in SIMULATORS:
        raise UserInputError(f"unknown simulator {simulator!r}; expected one of {', '.join(SIMULATORS)} or auto")
    projected = projected_seconds(model, simulator, wanted, n, per_deck)
    if projected > max_seconds and not force:
        other = next(s for s in SIMULATORS if s != simulator)
        raise TooLarge(
            f"simulating {model.spec.name!r} ({model.spec.num_edges} devices, {len(model.spec.layers)} layers) "
            f"for {n} inputs and variants {', '.join(wanted)} is projected to take {projected:.0f} s of {simulator} "
            f"CPU time ({other}: {projected_seconds(model, other, wanted, n, per_deck):.0f} s; limit "
            f"{max_seconds:g} s; the cost grows with devices x time points, see docs/export.md). "
            "Use fewer inputs or variants, the other --simulator, raise --max-seconds, or pass --force.")
    return simulator


def reference(model: KirchhoffNet, z: torch.Tensor, variants: list[str]
              ) -> tuple[dict[str, dict[str, torch.Tensor]], float]:
    """Tight float64 solutions of ``model`` for latents ``z (n, d)``: per variant, quantity →
    ``(n, k)`` tensor, and the wall time. ``reverse`` starts from the reference samples."""
    m = copy.deepcopy(model).to(torch.float64)
    z = z.to(torch.float64)
    started = time.perf_counter()
    out: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        want_div = m.spec.bijective
        x, ell, stats = m.integrate(z, REFERENCE_SOLVER, with_divergence=want_div)
        _require(stats, "forward")
        out["sample"] = {"x": x}
        if "logprob" in variants:
            out["logprob"] = {"x": x, "log q": (standard_normal_log_prob(z) - ell)[:, None]}
        if "reverse" in variants:
            res = m.log_prob(x, REFERENCE_SOLVER)
            _require(res.stats, "reverse")
            out["reverse"] = {"z": res.x, "log p": res.logp[:, None]}
            out["reverse_inputs"] = {"x": x}
    return out, time.perf_counter() - started


def _require(stats, what: str) -> None:
    if not stats.ok:
        raise RuntimeError(f"reference {what} solve failed: {stats.status.name} {stats.message}")


def _checked_variants(model: KirchhoffNet, n: int, jobs: int, mode: str, variants: list[str] | None
                      ) -> tuple[list[str], dict[str, str]]:
    """The variants to run and the ones skipped (with why); ValueError for bad arguments."""
    if n < 1:
        raise UserInputError("-n must be >= 1")
    if jobs < 1:
        raise UserInputError("--jobs must be >= 1")
    if mode not in ("batch", "per-input"):
        raise UserInputError("mode must be 'batch' or 'per-input'")
    wanted = list(variants or VARIANTS)
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        raise UserInputError(f"unknown variant {unknown[0]!r}; expected one of {', '.join(VARIANTS)}")
    skipped = {}
    if not model.spec.bijective:
        for v in ("logprob", "reverse"):
            if v in wanted:
                wanted.remove(v)
                skipped[v] = "node count changes between layers, so the log-density is not defined"
    if not wanted:
        raise UserInputError("no variant left to simulate")
    return wanted, skipped


def simulate(model: KirchhoffNet, n: int = 16, seed: int = 0, variants: list[str] | None = None,
             mode: str = "per-input", chunk: int = 4, timeout_s: float = 600.0, max_seconds: float = 900.0,
             force: bool = False, options: SpiceOptions | None = None, jobs: int = 1,
             progress: Callable[[int], None] | None = None, simulator: str = "ngspice") -> SimulationReport:
    """Simulate the exported netlists for ``n`` inputs and compare with the model.

    Args:
        mode: ``batch`` puts up to ``chunk`` independent copies of the circuit in one deck
            (one ngspice process per chunk); ``per-input`` runs one deck per input.
        max_seconds: refuse (:class:`TooLarge`) when the projected ngspice CPU time of the
            whole job exceeds this, unless ``force``.
        timeout_s: limit per ngspice process.
        jobs: ngspice processes run at once (threads waiting on subprocesses).
        progress: called with the number of inputs finished after each run.
        simulator: ``ngspice``, ``vacask`` (compiled Verilog-A devices) or ``auto``
            (:func:`choose_simulator`).

    Raises:
        TooLarge, ValueError (bad arguments), export.spice.SpiceError (ngspice failures),
        export.vacask.VacaskError (VACASK failures).
    """
    options = options or SpiceOptions()
    wanted, skipped = _checked_variants(model, n, jobs, mode, variants)
    per_deck = 1 if mode == "per-input" else max(1, min(chunk, n))
    simulator = _checked_simulator(model, simulator, wanted, n, per_deck, max_seconds, force)
    if simulator == "vacask":
        from .vacask import run_deck as run_one
    else:
        run_one = run_deck

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.data_dim, generator=gen, dtype=torch.float64)
    ref, ref_wall = reference(model, z, wanted)
    v0 = model.spec.hardware.voltage_scale_v
    rows: list[ErrorRow] = []
    wall, cpu, n_runs = 0.0, 0.0, 0
    started = time.perf_counter()
    for variant in wanted:
        inputs = ref["reverse_inputs"]["x"] if variant == "reverse" else z
        sims = {q: torch.empty_like(t) for q, t in ref[variant].items()}
        decks = [(start, build_deck(model, variant, inputs[start:start + per_deck], options=options, measures=False))
                 for start in range(0, n, per_deck)]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = pool.map(lambda sd: run_one(sd[1], timeout_s=timeout_s), decks)
            for (start, deck), result in zip(decks, results):
                wall += result.wall_s
                cpu += result.cpu_s
                n_runs += 1
                for r in deck.readouts:
                    value = result.values[r.label] / v0
                    row = start + r.copy
                    if r.quantity == "logp":
                        sims["log q" if variant == "logprob" else "log p"][row, 0] = value
                    else:
                        sims["z" if variant == "reverse" else "x"][row, int(r.quantity[1:]) - 1] = value
                if progress is not None:
                    progress(deck.meta["copies"])
        for q, ref_t in ref[variant].items():
            err = (sims[q] - ref_t).abs().max().item()
            scale = ref_t.abs().max().item()
            rows.append(ErrorRow(variant, q, err, err / scale if scale > 0 else err))
    return SimulationReport(
        model=model.spec.name, n=n, mode=mode, rows=rows, projected_latency_s=projected_latency_s(model.spec),
        simulated_time_s=settle_time_s(model.spec), ngspice_wall_s=wall, ngspice_cpu_s=cpu,
        ngspice_elapsed_s=time.perf_counter() - started,
        ngspice_runs=n_runs, reference_wall_s=ref_wall, variants=wanted, skipped=skipped, simulator=simulator)
