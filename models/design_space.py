"""Design space of a KirchhoffNet chip: which C, I0 and V0 to build it with.

For every point of a log grid over the node capacitance C, the device current scale I0 and
the voltage scale V0 this reports:

- projected latency T·τ + DAC + ADC with τ = C·V0/I0 (converter times fixed: the model's
  hardware constants);
- energy per sample C·V0²·(N/2 + Σ_l E_l·d_l) (capacitor charging plus device dissipation
  at full-scale currents, ``models.hardware.energy_per_sample_j``; independent of I0, because
  a larger I0 shortens τ in proportion) plus the converters' energy
  (:data:`WALDEN_FOM_J` · 2^bits per conversion, one DAC conversion per input and one ADC
  conversion per output);
- thermal noise √(kT/C)/V0 relative to V0;
- the switching error of a layer switch of fixed duration (``switching_s``, a cross-fade):
  the rms change of the samples it causes, model volts; infeasible where the switch outlasts
  a layer (τ too short);
- the quality of the resulting chip: the exact test NLL of the switched chip (switching keeps
  a flow) and the energy distance of its samples with noise on to held-out data, as in
  ``models.robustness``; a point *keeps quality* when both stay within stated tolerances of
  the ideal model, and the Pareto front (latency, energy) is taken among those.

Not modelled: parasitic capacitance and resistance, 1/f noise, drift and ageing, device
mismatch (see ``knet robustness``), converter non-linearity, supply and bias circuits.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .chip import Chip, UnsupportedChip, noise_scale
from .config import ChipConfig
from .data import Task
from .flow import KirchhoffNet
from .hardware import chip_timing, energy_per_sample_j
from .robustness import DATA_SEED, EVAL_SEED, SAMPLE_SEED, EnergyDistance, with_hardware

WALDEN_FOM_J = 10e-15  # joules per conversion step: a good published SAR converter
CONVERTER_BITS = 10
DEFAULT_CAPACITANCES_F = tuple(float(x) for x in np.logspace(-14, -11, 7))  # 10 fF … 10 pF
DEFAULT_CURRENTS_A = tuple(float(x) for x in np.logspace(-7, -3, 5))  # 100 nA … 1 mA
DEFAULT_VOLTAGES_V = tuple(float(x) for x in np.logspace(-1, 0, 3))  # 0.1 V … 1 V
DEFAULT_SWITCHING_S = 2e-11
NLL_TOLERANCE = 0.01  # nats: a design "keeps quality" within this of the ideal model's NLL …
DISTANCE_TOLERANCE = 0.002  # … and this of its energy distance (≈ the spread of two data draws)


@dataclass
class DesignPoint:
    """One (C, I0, V0) design. Latency and energy per sample; noise relative to V0;
    ``switching_error`` rms sample change, model volts, and ``nll`` the exact test NLL of the
    switched chip (None where infeasible or for energies); ``distance`` energy distance of
    the noisy switched chip's samples to held-out data; ``keeps_quality`` both within the
    tolerances of the ideal model; ``pareto`` on (latency, energy) among those."""

    capacitance_f: float
    current_scale_a: float
    voltage_scale_v: float
    tau_s: float
    settle_s: float  # T·τ, the analog part of the latency
    latency_s: float
    analog_energy_j: float  # without the converters
    energy_j: float
    noise_rel: float
    switching_error: float | None
    nll: float | None
    distance: float | None
    feasible: bool
    keeps_quality: bool = False
    pareto: bool = False


def converter_energy_j(data_dim: int, bits: int = CONVERTER_BITS) -> float:
    """DAC + ADC energy per sample: 2·d conversions at Walden FoM × 2^bits, joules."""
    return 2 * data_dim * WALDEN_FOM_J * 2**bits


def pareto_mask(costs: np.ndarray) -> np.ndarray:
    """Rows of ``costs (n, k)`` (lower is better) that no other row dominates."""
    n = costs.shape[0]
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(costs <= costs[i], axis=1) & np.any(costs < costs[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def design_space(model: KirchhoffNet, task: Task, capacitances_f: Sequence[float] = DEFAULT_CAPACITANCES_F,
                 currents_a: Sequence[float] = DEFAULT_CURRENTS_A, voltages_v: Sequence[float] = DEFAULT_VOLTAGES_V,
                 switching_s: float = DEFAULT_SWITCHING_S, samples: int = 2048,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Sweep the grid (see the module docstring); the JSON-ready report. ``progress(done,
    total)`` is called after each point."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    z = torch.randn(samples, model.data_dim, generator=gen, dtype=torch.float64)
    if task.kind == "data":
        reference = task.sample(samples, DATA_SEED, split="test")
        test_points = task.sample(samples, EVAL_SEED, split="test")
    else:
        reference = model.sample(samples, torch.Generator().manual_seed(DATA_SEED), with_logprob=False).x.double()
        test_points = None
    distance = EnergyDistance(reference, draws=1)
    ideal = model.sample(samples, z=z, with_logprob=False).x.double()
    ideal_nll = None if test_points is None else float(-model.log_prob(test_points).logp.double().mean())
    switched_by_tau: dict[float, tuple[float, float | None] | None] = {}  # τ → (rms error, NLL)

    def switched(hw_model: KirchhoffNet) -> tuple[float, float | None] | None:
        """The switch's effect depends on τ only: rms sample change and exact NLL, or None
        where the switch outlasts a layer."""
        key = round(math.log10(hw_model.spec.hardware.tau_s), 9)
        if key not in switched_by_tau:
            try:
                chip = Chip(hw_model, ChipConfig(switching_s=switching_s))
                x = chip.sample(0, z=z, with_logprob=False).x.double()
                nll = None if test_points is None else float(-chip.log_prob(test_points).logp.double().mean())
                switched_by_tau[key] = (float(((x - ideal) ** 2).sum(-1).mean().sqrt()), nll)
            except UnsupportedChip:
                switched_by_tau[key] = None
        return switched_by_tau[key]

    grid = [(c, i, v) for c in capacitances_f for i in currents_a for v in voltages_v]
    points = []
    for n, (c, i0, v0) in enumerate(grid):
        hw_model = with_hardware(model, capacitance_f=c, current_scale_a=i0, voltage_scale_v=v0)
        spec = hw_model.spec
        timing = chip_timing(spec.end_time, spec.hardware)
        analog = energy_per_sample_j(spec)
        point = DesignPoint(c, i0, v0, timing.tau_s, timing.settle_s, timing.total_s, analog,
                            analog + converter_energy_j(spec.data_dim), noise_scale(spec), None, None, None, False)
        effect = switched(hw_model)
        if effect is not None:
            both = Chip(hw_model, ChipConfig(switching_s=switching_s, noise=True)).sample(
                0, z=z, with_logprob=False, noise_generator=torch.Generator().manual_seed(SAMPLE_SEED + 1))
            point.switching_error, point.nll = effect
            point.distance = distance(both.x)[0] if both.stats.ok else None
            point.feasible = both.stats.ok
        points.append(point)
        if progress is not None:
            progress(n + 1, len(grid))
    ideal_distance = distance(ideal)[0]
    for p in points:
        p.keeps_quality = p.feasible and p.distance <= ideal_distance + DISTANCE_TOLERANCE and (
            ideal_nll is None or p.nll <= ideal_nll + NLL_TOLERANCE)
    kept = [p for p in points if p.keeps_quality]
    if kept:
        for p, keep in zip(kept, pareto_mask(np.array([[p.latency_s, p.energy_j] for p in kept]))):
            p.pareto = bool(keep)
    return {
        "model": model.spec.name,
        "task": task.name,
        "switching_s": switching_s,
        "samples": samples,
        "ideal_distance": ideal_distance,
        "ideal_nll": ideal_nll,
        "quality_rule": {"nll_tolerance": NLL_TOLERANCE, "distance_tolerance": DISTANCE_TOLERANCE},
        "converter": {"bits": CONVERTER_BITS, "walden_fom_j": WALDEN_FOM_J,
                      "dac_setup_s": model.spec.hardware.dac_setup_s,
                      "adc_readout_s": model.spec.hardware.adc_readout_s,
                      "energy_j": converter_energy_j(model.data_dim)},
        "temperature_k": model.spec.hardware.temperature_k,
        "points": [asdict(p) for p in points],
        "note": ("latency = T·τ + DAC + ADC (converter times fixed); energy = C·V0²·(N/2 + Σ E_l·d_l) + "
                 "2·d·FoM·2^bits; a point keeps quality when its switched chip's exact NLL is within "
                 "nll_tolerance of the ideal model's and its samples' energy distance (noise + switching) "
                 "within distance_tolerance; the Pareto front is over (latency, energy) among those"),
    }

