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

import contextlib
import json
import os
import signal
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


def resolve_models(args: tuple[str, ...]) -> dict[str, tuple[str, CircuitSpec | None]]:
    """MODEL arguments (zoo names or checkpoint directories) → ``{served name: (argument, spec)}``.

    The served name is the circuit's name in lower case (what ``knet store`` registers); an
    argument with no local checkpoint is kept as a served name with spec None (the report
    then takes the chip latency from the service's answers).
    """
    out: dict[str, tuple[str, CircuitSpec | None]] = {}
    for arg in args:
        try:
            spec = load_spec(arg)
        except ValueError:
            out[arg] = (arg, None)
            continue
        out[spec.name.lower()] = (arg, spec)
    return out


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
                found.update({(f"{path}.{kk}" if path else str(kk)): float(vv) for kk, vv in v.items()
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


def simulate(model: str, timeout_s: float = 240.0, n: int = 1,
             variants: str = "sample") -> tuple[dict | None, str | None]:
    """Run ``knet simulate MODEL -n N --variants V --json`` (ngspice) in its own process group.

    A few inputs of one variant confirm the timing and show the agreement; the full sweep is
    the export report's job. Returns ``(parsed, None)``, or ``(None, reason)`` when the
    command is missing, fails without JSON or times out (its whole group is then killed):
    a load test never fails because the simulator is unavailable. ``parsed["exit_code"]``
    is 1 when ngspice disagreed with the model by more than ``knet simulate``'s tolerance.
    """
    # --max-seconds: knet simulate refuses at once when it projects a longer ngspice run
    cmd = [sys.executable, "-m", "knet", "simulate", model, "-n", str(n), "--variants", variants,
           "--max-seconds", f"{0.8 * timeout_s:g}", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, f"knet simulate timed out after {timeout_s:.0f} s"
    try:
        parsed = parse_simulation(json.loads(out))
    except json.JSONDecodeError:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return None, f"knet simulate exited {proc.returncode}: {tail[:200]}"
    return {**parsed, "exit_code": proc.returncode, "command": " ".join(cmd[2:])}, None
