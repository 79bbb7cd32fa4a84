"""Characterize the cell in SPICE and fit the device law it realises (``knet cells characterize``).

The fitted law, per output t ∈ {d, s} (currents into the node, model units: I0, V0):

    i_d =  γ_d·tanh(z) + o_d − g_d·v_d        i_s = −γ_s·tanh(z) + o_s − g_s·v_s
    z = k·ΔV_G + z0,   ΔV_G = the floating gates' difference (volts)

with a parked cell's outputs o_p − g_p·v. The realised (a, b, c) enter through ΔV_G
(``silicon.cell.realise`` inverts k, z0 and the gate parasitic). The fit uses the DC sweep
at the gate reset level and the node common mode; the *law error* is measured over the whole
table (every gate common mode and output voltage in the node range) against the fitted law.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import least_squares

from models.cell_law import CellLaw

from .benches import Conditions, CoreAC, CoreDC, CoreNoise, CorePower, CoreSwitching
from .cell import CellCalibration, CellDesign, gain_limit

BOLTZMANN = 1.380649e-23


@dataclass(frozen=True)
class FittedLaw:
    """The law's constants in model units (see the module doc) and how well it fits.

    ``slope_per_v`` k (1/V) and ``input_offset`` z0; ``gain_*`` γ; ``offset_*`` o (I0);
    ``conductance_*`` g (I0/V0) active and parked; ``rms_pct``/``max_pct``: the tanh's error
    at the reset level and common mode over the operating ΔV_G range (% of I0·γ);
    ``table_rms_pct``/``table_max_pct``: the whole law against every table point inside the
    node range and gate window; ``node_range_model_volts``: where the outputs hold their
    current within 1 % of I0 (the supply clips beyond)."""

    slope_per_v: float
    input_offset: float
    gain_dst: float
    gain_src: float
    offset_dst: float
    offset_src: float
    conductance_dst: float
    conductance_src: float
    conductance_parked: float
    offset_parked: float
    rms_pct: float
    max_pct: float
    table_rms_pct: float
    table_max_pct: float
    dvg_range_v: tuple[float, float]
    node_range_model_volts: tuple[float, float]
    slope_by_gate_cm: dict[str, float] = field(default_factory=dict)


def _tanh_fit(dvg: np.ndarray, i_d: np.ndarray, i_s: np.ndarray, i0: float) -> np.ndarray:
    """Joint least squares of i_d = i0(γ_d·tanh(k·x + z0) + o_d), i_s = i0(−γ_s·tanh(…) + o_s);
    returns (k, z0, γ_d, γ_s, o_d, o_s)."""
    def residual(p):
        k, z0, gd, gs, od, os_ = p
        t = np.tanh(k * dvg + z0)
        return np.concatenate([i_d / i0 - (gd * t + od), i_s / i0 - (-gs * t + os_)])
    return least_squares(residual, x0=[11.0, 0.0, 1.0, 1.0, 0.0, 0.0]).x


def fit_law(dc: CoreDC, design: CellDesign, z_range: tuple[float, float]) -> FittedLaw:
    """Fit the law to ``dc`` (``silicon.benches.core_dc``) over the operating range ``z_range``
    (the tanh arguments the zoo uses)."""
    i0, v0 = design.i0_a, design.v0_v
    cm0 = int(np.argmin(abs(dc.gate_cm - design.vref_v)))
    vm = int(np.argmin(abs(dc.vout - design.vcm_v)))
    k, z0, gd, gs, od, os_ = _tanh_fit(dc.dvg, dc.i_d[cm0, vm], dc.i_s[cm0, vm], i0)
    lo, hi = (z_range[0] - z0) / k, (z_range[1] - z0) / k
    inside = (dc.dvg >= lo) & (dc.dvg <= hi)
    t = np.tanh(k * dc.dvg + z0)
    err = dc.i_d[cm0, vm] / i0 - (gd * t + od)
    rms, mx = 100 * np.sqrt(np.mean(err[inside] ** 2)) / gd, 100 * np.max(abs(err[inside])) / gd
    # output conductance: slope of the current against the output voltage (model units)
    v_model = (dc.vout - design.vcm_v) / v0
    node = np.nonzero(abs(dc.i_d[cm0, :, :] - dc.i_d[cm0, vm:vm + 1, :]).max(axis=1) <= 0.01 * i0)[0]
    node_lo, node_hi = float(v_model[node.min()]), float(v_model[node.max()])
    in_node = (v_model >= node_lo) & (v_model <= node_hi)
    g_d = -float(np.polyfit(v_model[in_node], dc.i_d[cm0][in_node][:, inside].mean(axis=1) / i0, 1)[0])
    g_s = -float(np.polyfit(v_model[in_node], dc.i_s[cm0][in_node][:, inside].mean(axis=1) / i0, 1)[0])
    vp = (dc.parked_vout - design.vcm_v) / v0
    in_p = (vp >= node_lo) & (vp <= node_hi)
    g_p, o_p = np.polyfit(vp[in_p], dc.parked_d[in_p] / i0, 1)
    # the whole law against the whole table inside the node range and the gate window
    window = abs(dc.gate_cm - design.vref_v) <= design.gate_window_v + 1e-9
    law_d = gd * t[None, None, :] + od - g_d * v_model[None, :, None]
    table_err = (dc.i_d / i0 - law_d)[window][:, in_node][:, :, inside] / gd
    slopes = {}
    for j, cm in enumerate(dc.gate_cm):
        kj = _tanh_fit(dc.dvg, dc.i_d[j, vm], dc.i_s[j, vm], i0)[0]
        slopes[f"{cm - design.vref_v:+.2f}"] = float(kj)
    return FittedLaw(float(k), float(z0), float(gd), float(gs), float(od), float(os_), g_d, g_s, -float(g_p),
                     float(o_p), float(rms), float(mx), float(100 * np.sqrt(np.mean(table_err ** 2))),
                     float(100 * np.max(abs(table_err))), (float(lo), float(hi)), (node_lo, node_hi), slopes)


@dataclass(frozen=True)
class NoiseFigures:
    """``white_a_per_rthz``: the output noise density at 1 MHz; ``corner_hz``: where the 1/f
    part equals it; ``thermal_ratio``: S_i / (4kT·g_eff), with g_eff = I0·k·V0·(|a|+|b|)/2/V0
    … as the chip emulation's thermal model counts it for a unit-gain device (docs/silicon.md)."""

    white_a_per_rthz: float
    corner_hz: float
    thermal_ratio: float


def noise_figures(noise: CoreNoise, design: CellDesign, law: FittedLaw, temp_c: float) -> NoiseFigures:
    white = float(np.interp(1e6, noise.freq_hz, noise.density_a_per_rthz))
    above = np.nonzero(noise.density_a_per_rthz <= np.sqrt(2) * white)[0]
    corner = float(noise.freq_hz[above[0]]) if len(above) else float("nan")
    # the emulation's device noise: 4kT·|g| with g = ∂i/∂v of a device of unit gain, in siemens
    g_unit = design.i0_a / design.v0_v
    thermal = 4 * BOLTZMANN * (temp_c + 273.15) * g_unit
    return NoiseFigures(white, corner, float(white ** 2 / thermal))


@dataclass
class Datasheet:
    """Everything ``knet cells characterize`` measures for one cell at one condition; the
    JSON file is :meth:`to_json`, the tables go beside it (``*.npz``)."""

    pdk: str
    corner: str
    temp_c: float
    design: dict
    law: FittedLaw
    gate_parasitic_f: dict[str, float]
    output: dict[str, dict[str, float]]
    bandwidth_hz: float
    noise: NoiseFigures
    power: dict[str, float]
    switching: dict[str, object]
    area_um2: dict[str, float]
    gain_limit: float
    z_range: tuple[float, float]
    spice_cpu_s: float

    def calibration(self) -> CellCalibration:
        """The constants :func:`silicon.cell.realise` needs."""
        return CellCalibration(self.law.slope_per_v, self.law.input_offset, self.gate_parasitic_f["+0.0"])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Datasheet:
        """The datasheet ``to_json`` wrote (nested records rebuilt, lists back to tuples)."""
        law = {k: tuple(v) if isinstance(v, list) else v for k, v in data["law"].items()}
        return cls(**{**data, "law": FittedLaw(**law), "noise": NoiseFigures(**data["noise"]),
                      "z_range": tuple(data["z_range"])})


def build_datasheet(cond: Conditions, dc: CoreDC, ac: CoreAC, noise: CoreNoise, power: CorePower,
                    switching: CoreSwitching, z_range: tuple[float, float]) -> Datasheet:
    d = cond.design
    law = fit_law(dc, d, z_range)
    cal = CellCalibration(law.slope_per_v, law.input_offset, ac.gate_parasitic_f["+0.0"])
    from .pdk import get_pdk
    density = get_pdk(d.pdk).mim_f_per_um2
    caps = 2 * d.gate_cap_f
    area = {"transistors_two_outputs": d.transistor_area_um2(2), "transistors_one_output": d.transistor_area_um2(1),
            "gate_capacitors": caps / density if density else float("nan"),
            "layout_factor": d.layout_factor}
    area["cell_two_outputs"] = d.layout_factor * (area["transistors_two_outputs"] + area["gate_capacitors"])
    area["cell_one_output"] = d.layout_factor * (area["transistors_one_output"] + area["gate_capacitors"])
    return Datasheet(
        pdk=cond.pdk.name, corner=cond.corner or cond.pdk.corners[0], temp_c=cond.temp_c,
        design={**{k: v for k, v in asdict(d).items() if k != "transistors"},
                "transistors": {r: asdict(t) for r, t in d.transistors.items()}},
        law=law, gate_parasitic_f=ac.gate_parasitic_f,
        output={"conductance_s": ac.g_out_s, "capacitance_f": ac.c_out_f},
        bandwidth_hz=ac.bandwidth_hz, noise=noise_figures(noise, d, law, cond.temp_c),
        power={"cell_two_outputs_active_a": power.cell_active_a, "cell_two_outputs_parked_a": power.cell_parked_a,
               "bias_network_a": power.bias_network_a, "vdd_v": d.vdd_v},
        switching={"dvg_v": switching.dvg, "excess_charge_c": switching.excess_charge_c,
                   "rise_s": switching.rise_s, "fall_s": switching.fall_s, "window_s": switching.window_s},
        area_um2=area, gain_limit=gain_limit(d, cal), z_range=z_range,
        spice_cpu_s=dc.cpu_s + ac.cpu_s + noise.cpu_s + power.cpu_s + switching.cpu_s)


def cell_law(sheet: Datasheet) -> CellLaw:
    """The datasheet as the model-level law (``models.cell_law.CellLaw``), model units."""
    d, law = sheet.design, sheet.law
    c_unit = d["node_cap_f"]
    c_gt = d["gate_cap_f"] + sheet.gate_parasitic_f["+0.0"]
    k, v0 = law.slope_per_v, d["v0_v"]
    divider = (k * v0 * d["gate_cap_f"] / c_gt, v0 / (2 * d["offset_step_v"]))
    window = (k * d["gate_window_v"] / d["swing_model_volts"], 1 / (2 * d["swing_model_volts"]))
    return CellLaw(
        source=f"{sheet.pdk} {sheet.corner}, {sheet.temp_c:g} °C, cell {d['name']}",
        pdk=sheet.pdk, corner=sheet.corner, temp_c=sheet.temp_c,
        gain_dst=law.gain_dst, gain_src=law.gain_src, offset_dst=law.offset_dst, offset_src=law.offset_src,
        offset_parked=law.offset_parked, conductance_dst=law.conductance_dst, conductance_src=law.conductance_src,
        conductance_parked=law.conductance_parked, gate_capacitance=c_gt / c_unit,
        output_capacitance=sheet.output["capacitance_f"]["active"] / c_unit, coupling_per_gain=1 / (k * v0),
        gain_limits=(divider, window), node_range=law.node_range_model_volts)
