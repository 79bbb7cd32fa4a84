"""The circuit side of the comparison: projected chip timing, its ngspice confirmation, energy.

Projected latency of one forward pass (one sample) on the chip (docs/design.md §3):

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
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from models.checkpoint import CIRCUIT_FILE, TRANSISTOR_FILE
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
    simulated: SimulationSummary | None = None  # `knet simulate --json`, when it ran
    # measured at transistor level (transistor.json beside the checkpoint): label, latency_s,
    # energy_per_sample_j; None when the model was not realised in cells
    transistor: dict | None = None

    @property
    def energy_j(self) -> float:
        return self.capacitor_energy_j + self.device_energy_j

    def as_dict(self) -> dict:
        out = {**asdict(self), "energy_j": self.energy_j}
        out["simulated"] = self.simulated.as_dict() if self.simulated else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> CircuitFigures:
        """Figures from their ``as_dict`` form (``results.json``)."""
        names = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        sim = kept.get("simulated")
        if sim is not None:
            kept["simulated"] = SimulationSummary(
                **{k: v for k, v in sim.items() if k in {f.name for f in fields(SimulationSummary)}})
        return cls(**kept)


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


def transistor_level(model: str | None) -> dict | None:
    """The chip measured at transistor level beside ``model``'s checkpoint (``transistor.json``):
    ``{"label", "latency_s", "energy_per_sample_j"}``, or None."""
    try:
        path = resolve(model) / TRANSISTOR_FILE if model else None
    except ValueError:
        return None
    if path is None or not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return {"label": f"transistor level, {doc['pdk']} {doc['corner']}, {doc['temp_c']:g} °C",
            "latency_s": doc["latency_s"], "energy_per_sample_j": doc["energy_per_sample_j"]}


def figures(spec: CircuitSpec, model: str | None = None) -> CircuitFigures:
    """Projected timing and energy of ``spec`` from its hardware constants, and the measured
    transistor-level figures where the model has them."""
    hw = spec.hardware
    t = chip_timing(spec.end_time, hw)
    return CircuitFigures(transistor=transistor_level(model),
        model=model or spec.name, end_time=spec.end_time, tau_s=t.tau_s, settle_s=t.settle_s,
        dac_s=t.dac_s, adc_s=t.adc_s, chip_latency_s=t.total_s, capacitance_f=hw.capacitance_f,
        voltage_scale_v=hw.voltage_scale_v, current_scale_a=hw.current_scale_a,
        nodes=max(layer.nodes for layer in spec.layers), edges=spec.num_edges, data_dim=spec.data_dim,
        capacitor_energy_j=capacitor_energy_j(spec), device_energy_j=device_energy_bound_j(spec),
    )


@dataclass(frozen=True)
class SimulationSummary:
    """What the load-test report uses of ``knet simulate MODEL --json``
    (``export.simulate.SimulationReport.to_json``): the circuit time T·τ and the projected
    latency it checks (seconds), ngspice's wall time (seconds, summed over runs) and the worst
    relative error per netlist variant; ``exit_code`` is 1 when ngspice disagreed with the
    model by more than ``knet simulate``'s tolerance."""

    simulated_time_s: float
    projected_latency_s: float
    ngspice_wall_s: float
    max_rel_error: dict[str, float]
    exit_code: int = 0
    command: str = ""

    @property
    def worst_rel_error(self) -> float | None:
        return max(self.max_rel_error.values()) if self.max_rel_error else None

    @classmethod
    def from_simulate_json(cls, data: object, exit_code: int = 0, command: str = "") -> SimulationSummary:
        """Parse ``knet simulate --json`` output by its schema.

        Raises:
            ValueError: not a JSON object, a field missing, or a field of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"knet simulate --json: expected an object, got {type(data).__name__}")
        numbers = {}
        for key in ("simulated_time_s", "projected_latency_s", "ngspice_wall_s"):
            value = data.get(key)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"knet simulate --json: {key!r} must be a number, got {value!r}")
            numbers[key] = float(value)
        errors = data.get("max_rel_error")
        if not isinstance(errors, dict) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                for k, v in errors.items()):
            raise ValueError(f"knet simulate --json: 'max_rel_error' must map variants to numbers, got {errors!r}")
        return cls(**numbers, max_rel_error={k: float(v) for k, v in errors.items()}, exit_code=exit_code,
                   command=command)

    def as_dict(self) -> dict:
        return {**asdict(self), "worst_rel_error": self.worst_rel_error}


def simulate(model: str, timeout_s: float = 240.0, n: int = 1,
             variants: str = "sample") -> tuple[SimulationSummary | None, str | None]:
    """Run ``knet simulate MODEL -n N --variants V --json`` (ngspice) in its own process group.

    A few inputs of one variant confirm the timing and show the agreement; the full sweep is
    the export report's job. Returns ``(summary, None)``, or ``(None, reason)`` when the
    command is missing, fails without its JSON or times out (its whole group is then killed):
    a load test never fails because the simulator is unavailable.
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
        return SimulationSummary.from_simulate_json(json.loads(out), proc.returncode, " ".join(cmd[2:])), None
    except (json.JSONDecodeError, ValueError) as parse_error:
        tail = (err.strip().splitlines() or [str(parse_error)])[-1]
        return None, f"knet simulate exited {proc.returncode}: {tail[:200]}"
