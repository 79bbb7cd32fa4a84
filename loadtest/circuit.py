"""The circuit side of the comparison: projected chip timing, its ngspice confirmation, energy.

Projected latency of one forward pass (one sample) on the chip (DESIGN.md §3):

    t_chip = T·τ + t_DAC + t_ADC,   τ = C·V0/I0,   T = Σ_layers duration

Energy of one forward pass, from the hardware constants (``models.hardware``):

    E_chip = N·½·C·(V0)²  +  Σ_layers E_l·I0·V0·d_l·τ

(capacitor charging of the widest layer's N nodes through one model volt, plus every
device conducting its full-scale current I0 across V0 for its layer's duration: an upper
bound for tanh devices, whose |i| ≤ 1 in model units).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from models.checkpoint import CIRCUIT_FILE
from models.config import CircuitSpec
from models.hardware import capacitor_energy_j, chip_timing, device_energy_bound_j
from models.zoo import resolve

ENERGY_FORMULA = ("E_chip = N·½·C·V0² + Σ_l E_l·I0·V0·d_l·τ  (N: nodes of the widest layer, "
                  "E_l edges and d_l duration of layer l, τ = C·V0/I0; device term at full-scale "
                  "current, an upper bound for tanh devices)")
TIMING_FORMULA = "t_chip = T·τ + t_DAC + t_ADC,  τ = C·V0/I0,  T = Σ_l d_l"


@dataclass(frozen=True)
class CircuitFigures:
    """Everything the report says about one model as a chip; seconds, joules, farads…"""

    model: str
    end_time: float
    tau_s: float
    settle_s: float
    dac_s: float
    adc_s: float
    chip_latency_s: float
    capacitance_f: float
    voltage_scale_v: float
    current_scale_a: float
    nodes: int
    edges: int
    data_dim: int
    capacitor_energy_j: float
    device_energy_j: float
    simulated: dict | None = None  # parsed `knet simulate --json`, when it ran

    @property
    def energy_j(self) -> float:
        return self.capacitor_energy_j + self.device_energy_j

    def as_dict(self) -> dict:
        return {**asdict(self), "energy_j": self.energy_j}


def load_spec(model: str) -> CircuitSpec:
    """The :class:`CircuitSpec` of a zoo name or checkpoint directory (weights not loaded).

    Raises:
        ValueError: unknown model or invalid ``circuit.json``.
    """
    path = resolve(model) / CIRCUIT_FILE
    try:
        return CircuitSpec.model_validate_json(path.read_text())
    except Exception as err:  # pydantic ValidationError or JSON error
        raise ValueError(f"{path}: not a valid circuit spec ({str(err).splitlines()[0]})") from None


def figures(spec: CircuitSpec, model: str | None = None) -> CircuitFigures:
    """Projected timing and energy of ``spec`` from its hardware constants."""
    hw = spec.hardware
    t = chip_timing(spec.end_time, hw)
    return CircuitFigures(
        model=model or spec.name, end_time=spec.end_time, tau_s=t.tau_s, settle_s=t.settle_s,
        dac_s=t.dac_s, adc_s=t.adc_s, chip_latency_s=t.total_s, capacitance_f=hw.capacitance_f,
        voltage_scale_v=hw.voltage_scale_v, current_scale_a=hw.current_scale_a,
        nodes=max(layer.nodes for layer in spec.layers), edges=spec.num_edges, data_dim=spec.data_dim,
        capacitor_energy_j=capacitor_energy_j(spec), device_energy_j=device_energy_bound_j(spec),
    )


def _collect(obj, key: str, path: str = "") -> dict[str, float]:
    """Every numeric value stored under ``key`` anywhere in ``obj``, keyed by its JSON path."""
    found: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            where = f"{path}.{k}" if path else str(k)
            if k == key and isinstance(v, int | float) and not isinstance(v, bool):
                found[path or key] = float(v)
            elif k == key and isinstance(v, dict):
                found.update({f"{where}.{kk}": float(vv) for kk, vv in v.items()
                              if isinstance(vv, int | float) and not isinstance(vv, bool)})
            else:
                found.update(_collect(v, key, where))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.update(_collect(v, key, f"{path}[{i}]"))
    return found


def parse_simulation(data: dict) -> dict:
    """Normalise ``knet simulate MODEL --json`` output: the circuit time, the projection it
    checks, ngspice's wall time and the worst relative error per variant."""
    errors = _collect(data, "max_rel_error")

    def first(key: str) -> float | None:
        vals = _collect(data, key)
        return next(iter(vals.values())) if vals else None

    return {
        "simulated_time_s": first("simulated_time_s"),
        "projected_latency_s": first("projected_latency_s"),
        "ngspice_wall_s": first("ngspice_wall_s"),
        "max_rel_error": errors,
        "worst_rel_error": max(errors.values()) if errors else None,
    }


def simulate(model: str, timeout_s: float = 300.0) -> tuple[dict | None, str | None]:
    """Run ``knet simulate MODEL --json`` (ngspice) in a subprocess.

    Returns ``(parsed, None)`` on success or ``(None, reason)`` when the command is missing,
    fails or times out; a load test never fails because the simulator is unavailable.
    """
    cmd = [sys.executable, "-m", "knet", "simulate", model, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                              cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return None, f"knet simulate timed out after {timeout_s:.0f} s"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"knet simulate exited {proc.returncode}: {tail[:200]}"
    try:
        return parse_simulation(json.loads(proc.stdout)), None
    except json.JSONDecodeError:
        return None, "knet simulate printed no JSON"
