"""Simulate a cell-realised model at transistor level and compare it with its references
(``knet simulate MODEL --pdk PDK``).

For each latent z (seeded), one deck (``silicon.deck``) runs in ngspice; its end voltages
are compared, in model volts (units of V0), with three references:

- *tabulated*: the circuit built from the cell's DC tables only (``silicon.tabulated``);
- *as characterized*: the served model (the fitted law, ``models.cell_law``), float64, tight;
- *ideal*: the same weights with ideal devices and node capacitors of C (the behavioural chip).

Measured from the same runs: energy per forward pass (∫ V·I of every source, load phase and
evolution, parked layers' bias included), the schedule's latency, and simulator time.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from export.spice import SpiceError
from models.config import SolverConfig
from models.flow import KirchhoffNet

from .benches import CoreDC
from .cell import CellCalibration, CellDesign
from .deck import TransistorDeck, build_deck
from .pdk import PdkInfo
from .spice_run import RawTable, run_bench
from .tabulated import TabulatedChip

TIGHT = SolverConfig(method="dopri5", rtol=1e-10, atol=1e-10, max_steps=1_000_000, max_wall_s=600.0)


@dataclass(frozen=True)
class SampleResult:
    """One latent's outcome: end voltages (model volts) from SPICE and each reference, the
    energy of the forward pass (joules: whole run, and the evolution window alone), the
    simulator's CPU seconds and time points; ``error`` when the run failed (then no values)."""

    z: tuple[float, ...]
    spice: tuple[float, ...] | None
    tabulated: tuple[float, ...]
    characterized: tuple[float, ...]
    ideal: tuple[float, ...]
    energy_j: float | None
    evolution_energy_j: float | None
    cpu_s: float
    points: int
    error: str | None = None


@dataclass
class TransistorReport:
    """What ``knet simulate --pdk`` prints; ``to_json`` is its ``--json``."""

    model: str
    pdk: str
    corner: str
    temp_c: float
    transistors: int
    devices: int
    problems: list[str]
    schedule: dict
    samples: list[SampleResult] = field(default_factory=list)

    def errors(self, reference: str) -> np.ndarray:
        """Per finished sample, max |SPICE − reference| over coordinates (model volts)."""
        rows = [np.max(np.abs(np.subtract(s.spice, getattr(s, reference)))) for s in self.samples if s.spice]
        return np.array(rows)

    def summary(self) -> dict:
        done = [s for s in self.samples if s.spice is not None]
        out = {"samples": len(self.samples), "finished": len(done),
               "failed": [{"z": s.z, "error": s.error} for s in self.samples if s.spice is None]}
        for ref in ("tabulated", "characterized", "ideal"):
            e = self.errors(ref)
            if len(e):
                out[f"error_vs_{ref}"] = {"median": float(np.median(e)), "max": float(e.max()),
                                          "mean": float(e.mean())}
        if done:
            out["energy_per_sample_j"] = float(np.mean([s.energy_j for s in done]))
            out["evolution_energy_j"] = float(np.mean([s.evolution_energy_j for s in done]))
            out["spice_cpu_s_per_sample"] = float(np.mean([s.cpu_s for s in done]))
            out["time_points"] = float(np.mean([s.points for s in done]))
        return out

    def to_json(self) -> dict:
        return {"model": self.model, "pdk": self.pdk, "corner": self.corner, "temp_c": self.temp_c,
                "transistors": self.transistors, "devices": self.devices, "problems": self.problems,
                "schedule": self.schedule, "summary": self.summary(), "samples": [asdict(s) for s in self.samples]}


def _energy(table: RawTable, deck: TransistorDeck, t_from: float = 0.0) -> float:
    """∫ Σ_sources V·I dt from ``t_from`` to the end (joules): the power every source delivers
    (ngspice's i(V) flows into the + node, so a source delivers −V·i)."""
    t = table["time"]
    keep = t >= t_from
    power = sum(-table[f"v({node})"][keep] * table[f"i({name.lower()})"][keep] for name, node in deck.sources.items())
    return float(np.trapezoid(power, t[keep]))


def references(model: KirchhoffNet, z: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(as characterized, ideal) end voltages for latents ``z (n, d)``, float64, tight."""
    m = copy.deepcopy(model).to(torch.float64)
    with torch.no_grad():
        x_char, _, s1 = m.integrate(z.to(torch.float64), TIGHT, with_divergence=False)
        ideal = copy.deepcopy(m)
        ideal.spec = m.spec.model_copy(update={"cell": None})
        x_ideal, _, s2 = ideal.integrate(z.to(torch.float64), TIGHT, with_divergence=False)
    if not (s1.ok and s2.ok):
        raise RuntimeError(f"reference solve failed: {s1.message or s2.message}")
    return x_char.numpy(), x_ideal.numpy()


def simulate(model: KirchhoffNet, pdk: PdkInfo, design: CellDesign, cal: CellCalibration, table: CoreDC,
             output_capacitance_f: float, n: int = 4, seed: int = 0, corner: str | None = None,
             temp_c: float = 27.0, timeout_s: float = 3600.0, read_delay_s: float = 200e-9,
             progress: Callable[[int, SampleResult], None] | None = None,
             run: Callable | None = None) -> TransistorReport:
    """Simulate ``n`` seeded latents (one deck each) and compare (see the module doc). A
    failing run is kept in the report with its reason, never dropped. ``run``: how one deck
    runs (default: here, sequentially; ``silicon.sweep`` passes a distributed one)."""
    z = torch.randn(n, model.data_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    probe = build_deck(model, pdk, design, cal, z[:1], corner, temp_c, read_delay_s)
    chip = TabulatedChip(design, table, probe.devices, model.data_dim, cal.gate_parasitic_f, output_capacitance_f,
                         design.node_cap_f)
    tab = chip.solve(z.numpy(), probe.schedule)
    char, ideal = references(model, z)
    report = TransistorReport(model.spec.name, pdk.name, corner or pdk.corners[0], temp_c, probe.transistors,
                              len(probe.devices), list(probe.problems),
                              {"load_start_s": probe.schedule.load_start_s, "dac_open_s": probe.schedule.dac_open_s,
                               "start_s": probe.schedule.start_s, "end_s": probe.schedule.end_s,
                               "read_s": probe.schedule.read_s,
                               "tau_s": model.spec.hardware.tau_s})
    decks = [build_deck(model, pdk, design, cal, z[i:i + 1], corner, temp_c, read_delay_s) for i in range(n)]
    runner = run or (lambda deck: _run_one(deck, timeout_s))
    for i, deck in enumerate(decks):
        report.samples.append(_result(deck, runner, z[i], tab[i], char[i], ideal[i]))
        if progress is not None:
            progress(i + 1, report.samples[-1])
    return report


def _run_one(deck: TransistorDeck, timeout_s: float) -> tuple[RawTable, float]:
    run = run_bench(deck.text, ["tran.raw"], timeout_s, "transistor-level deck")
    return run.tables["tran.raw"], run.cpu_s


def _result(deck: TransistorDeck, runner, z, tab, char, ideal) -> SampleResult:
    refs = dict(z=tuple(map(float, z)), tabulated=tuple(map(float, tab)), characterized=tuple(map(float, char)),
                ideal=tuple(map(float, ideal)))
    started = time.perf_counter()
    try:
        table, cpu = runner(deck)
    except SpiceError as err:
        return SampleResult(spice=None, energy_j=None, evolution_energy_j=None,
                            cpu_s=time.perf_counter() - started, points=0, error=str(err), **refs)
    design_v = _volts_at_end(table, deck)
    return SampleResult(spice=design_v, energy_j=_energy(table, deck),
                        evolution_energy_j=_energy(table, deck, deck.schedule.start_s), cpu_s=cpu,
                        points=len(table["time"]), **refs)


def _volts_at_end(table: RawTable, deck: TransistorDeck) -> tuple[float, ...]:
    return tuple(float((table[f"v({deck.node(k)})"][-1] - deck.vcm_v) / deck.v0_v) for k in range(1, deck.data_dim + 1))
