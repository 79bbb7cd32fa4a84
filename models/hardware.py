"""Projected timing and energy of a KirchhoffNet built as a chip (docs/design.md §3)."""
from __future__ import annotations

from dataclasses import dataclass

from .config import CircuitSpec, HardwareConstants


@dataclass(frozen=True)
class ChipTiming:
    """Projected forward-pass timing of one inference on the chip, all in seconds."""

    tau_s: float  # seconds per unit of model time, C·V0/I0
    settle_s: float  # T·τ, the analog evolution
    dac_s: float
    adc_s: float

    @property
    def total_s(self) -> float:
        return self.settle_s + self.dac_s + self.adc_s


def model_time_s(t: float, hw: HardwareConstants) -> float:
    """Model time ``t`` (dimensionless) as seconds on the chip: t·τ, τ = C·V0/I0. Every
    conversion of model time to physical time (T·τ, layer windows) goes through here."""
    return t * hw.tau_s


def chip_timing(end_time: float, hw: HardwareConstants) -> ChipTiming:
    """Timing of a solve of ``end_time`` model-time units on hardware ``hw``."""
    return ChipTiming(hw.tau_s, model_time_s(end_time, hw), hw.dac_setup_s, hw.adc_readout_s)


def settle_time_s(spec: CircuitSpec) -> float:
    """T·τ: the analog evolution of one forward pass of ``spec``, seconds."""
    return chip_timing(spec.end_time, spec.hardware).settle_s


def layer_windows_s(spec: CircuitSpec) -> list[tuple[float, float]]:
    """``[(start, end)]`` of every layer in seconds on the chip (its model-time bounds × τ)."""
    return [(model_time_s(t0, spec.hardware), model_time_s(t1, spec.hardware)) for t0, t1 in spec.layer_bounds]


def projected_latency_s(spec: CircuitSpec) -> float:
    """Projected chip latency of one forward pass: T·τ + DAC set-up + ADC read-out, seconds."""
    return chip_timing(spec.end_time, spec.hardware).total_s


def capacitor_energy_j(spec: CircuitSpec, swing_model_volts: float = 1.0) -> float:
    """Energy to charge every node capacitor through a swing of ``swing_model_volts``:
    E = Σ_layers nodes · ½·C·(ΔV·V0)², joules (a lower bound on dynamic energy)."""
    hw = spec.hardware
    nodes = max(layer.nodes for layer in spec.layers)
    return nodes * 0.5 * hw.capacitance_f * (swing_model_volts * hw.voltage_scale_v) ** 2


def device_energy_bound_j(spec: CircuitSpec, mean_abs_current: float = 1.0,
                          mean_abs_voltage: float = 1.0) -> float:
    """Device dissipation over the solve: Σ_layers edges·|i|·|Δv|·duration·τ·I0·V0, joules,
    with |i| and |Δv| in model units (1 is the device's full scale for a tanh device)."""
    hw = spec.hardware
    return sum(
        len(layer.edges) * mean_abs_current * hw.current_scale_a * mean_abs_voltage * hw.voltage_scale_v
        * layer.duration * hw.tau_s
        for layer in spec.layers
    )


def energy_per_sample_j(spec: CircuitSpec) -> float:
    """Projected analog energy of one forward pass: capacitor charging plus device
    dissipation at full scale, C·V0²·(N/2 + Σ_l E_l·d_l) joules (independent of I0: a larger
    I0 dissipates more per second but shortens τ in proportion). Converters not included."""
    return capacitor_energy_j(spec) + device_energy_bound_j(spec)
