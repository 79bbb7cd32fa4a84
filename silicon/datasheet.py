"""One characterization run end to end, and its files: datasheet JSON, law JSON, tables, figure.

:func:`characterize` runs every bench of ``silicon.benches`` at one condition and fits the
law; :func:`write` stores ``datasheet.json`` (everything measured), ``law.json`` (the
``models.cell_law.CellLaw`` training and the exact log-density use), ``tables.npz`` (the raw
DC sweeps: the *tabulated* cell the transistor-level comparison integrates) and
``datasheet.png`` (law against SPICE, residuals, output conductance, noise).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .benches import Conditions, CoreDC, core_ac, core_dc, core_noise, core_power, core_switching
from .characterize import Datasheet, build_datasheet, cell_law

DATASHEET, LAW, TABLES, FIGURE = "datasheet.json", "law.json", "tables.npz", "datasheet.png"
GATE_CM_OFFSETS = (-0.2, -0.1, 0.0, 0.1, 0.2)
STEPS = ("core DC sweeps", "AC: output admittance, gate parasitic, transfer", "output noise", "operating point power",
         "layer switching")


def characterize(cond: Conditions, z_range: tuple[float, float], dvg_max: float = 0.35,
                 progress: Callable[[str], None] | None = None) -> tuple[Datasheet, CoreDC]:
    """Every bench at ``cond`` and the fitted datasheet; ``progress`` is told each step's name."""
    d = cond.design
    say = progress or (lambda _: None)
    say(STEPS[0])
    dc = core_dc(cond, dvg_max, GATE_CM_OFFSETS, 0.1, round(d.vdd_v - 0.1, 6))
    say(STEPS[1])
    ac = core_ac(cond)
    say(STEPS[2])
    noise = core_noise(cond)
    say(STEPS[3])
    power = core_power(cond)
    say(STEPS[4])
    switching = core_switching(cond)
    return build_datasheet(cond, dc, ac, noise, power, switching, z_range), dc


def write(sheet: Datasheet, dc: CoreDC, out: Path) -> list[Path]:
    """The datasheet's files in ``out`` (created); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / DATASHEET, out / LAW, out / TABLES, out / FIGURE]
    paths[0].write_text(json.dumps(sheet.to_json(), indent=1) + "\n")
    paths[1].write_text(cell_law(sheet).model_dump_json(indent=1) + "\n")
    np.savez_compressed(paths[2], **{k: np.asarray(v) for k, v in asdict(dc).items() if k != "cpu_s"})
    figure(sheet, dc, paths[3])
    return paths


def read_tables(path: Path) -> CoreDC:
    """``tables.npz`` back as the :class:`~silicon.benches.CoreDC` it was written from."""
    with np.load(path) as data:
        return CoreDC(**{k: data[k] for k in data.files}, cpu_s=0.0)


def figure(sheet: Datasheet, dc: CoreDC, path: Path) -> None:
    """Four panels: law vs SPICE, residuals by gate common mode, output vs node voltage, noise."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d, law = sheet.design, sheet.law
    i0, v0 = d["i0_a"], d["v0_v"]
    cm0 = int(np.argmin(abs(dc.gate_cm - d["vref_v"])))
    vm = int(np.argmin(abs(dc.vout - d["vcm_v"])))
    t = np.tanh(law.slope_per_v * dc.dvg + law.input_offset)
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    a = ax[0, 0]
    a.plot(dc.dvg * 1e3, dc.i_d[cm0, vm] / i0, ".", ms=3, label="SPICE, into d")
    a.plot(dc.dvg * 1e3, dc.i_s[cm0, vm] / i0, ".", ms=3, label="SPICE, into s")
    a.plot(dc.dvg * 1e3, law.gain_dst * t + law.offset_dst, "k-", lw=0.8, label="fitted law")
    lo, hi = law.dvg_range_v
    a.axvspan(lo * 1e3, hi * 1e3, color="0.9", zorder=0, label="zoo's operating range")
    a.set(xlabel="gate difference ΔV_G (mV)", ylabel="output current (I0)",
          title=f"{sheet.pdk} {sheet.corner} {sheet.temp_c:g} °C: k = {law.slope_per_v:.2f} /V")
    a.legend(fontsize=8)
    a = ax[0, 1]
    for j, cm in enumerate(dc.gate_cm):
        err = dc.i_d[j, vm] / i0 - (law.gain_dst * t + law.offset_dst)
        a.plot(dc.dvg * 1e3, 100 * err / law.gain_dst, lw=1, label=f"gate CM {cm - d['vref_v']:+.1f} V")
    a.axvspan(lo * 1e3, hi * 1e3, color="0.9", zorder=0)
    a.set(xlabel="ΔV_G (mV)", ylabel="residual (% of full scale)",
          title=f"residual: {law.rms_pct:.2f} % rms, {law.max_pct:.2f} % max (range, reset level)")
    a.legend(fontsize=8)
    a = ax[1, 0]
    v_model = (dc.vout - d["vcm_v"]) / v0
    for x in (-0.15, -0.05, 0.0, 0.05, 0.15):
        k = int(np.argmin(abs(dc.dvg - x)))
        a.plot(v_model, dc.i_d[cm0, :, k] / i0, lw=1, label=f"ΔV_G = {dc.dvg[k] * 1e3:.0f} mV")
    a.plot((dc.parked_vout - d["vcm_v"]) / v0, dc.parked_d / i0, "k--", lw=1, label="parked")
    a.axvspan(*law.node_range_model_volts, color="0.93", zorder=0, label="node range")
    a.set(xlabel="output node voltage (model volts)", ylabel="current into d (I0)",
          title=f"output conductance {law.conductance_dst:.1e} I0/V0 (parked {law.conductance_parked:.1e})")
    a.legend(fontsize=7)
    a = ax[1, 1]
    a.text(0.02, 0.98, _summary(sheet), va="top", ha="left", family="monospace", fontsize=8, transform=a.transAxes)
    a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _summary(sheet: Datasheet) -> str:
    law, p, ar = sheet.law, sheet.power, sheet.area_um2
    return "\n".join([
        f"cell {sheet.design['name']} on {sheet.pdk} ({sheet.corner}, {sheet.temp_c:g} °C)",
        f"I0 {sheet.design['i0_a'] * 1e6:g} µA   V0 {sheet.design['v0_v'] * 1e3:g} mV   VDD {p['vdd_v']:g} V",
        f"gains γ_d {law.gain_dst:.4f}  γ_s {law.gain_src:.4f}",
        f"offsets o_d {law.offset_dst:+.1e}  o_s {law.offset_src:+.1e} I0",
        f"law error: {law.rms_pct:.2f} % rms / {law.max_pct:.2f} % max",
        f"  whole table (CM, node range): {law.table_rms_pct:.2f} / {law.table_max_pct:.2f} %",
        f"node range {law.node_range_model_volts[0]:+.1f} … {law.node_range_model_volts[1]:+.1f} model volts",
        f"gate parasitic {sheet.gate_parasitic_f['+0.0'] * 1e15:.1f} fF (parked "
        f"{sheet.gate_parasitic_f['parked'] * 1e15:.1f})",
        f"output C {sheet.output['capacitance_f']['active'] * 1e15:.2f} fF, "
        f"g {sheet.output['conductance_s']['active'] * 1e9:.2f} nS",
        f"bandwidth (−3 dB) {sheet.bandwidth_hz / 1e6:.1f} MHz",
        f"noise {sheet.noise.white_a_per_rthz * 1e12:.2f} pA/√Hz, 1/f corner "
        f"{sheet.noise.corner_hz / 1e3:.0f} kHz",
        f"  = {sheet.noise.thermal_ratio:.1f} × the emulation's 4kT·I0/V0",
        f"supply {p['cell_two_outputs_active_a'] * 1e6:.2f} µA per two-output cell "
        f"(parked {p['cell_two_outputs_parked_a'] * 1e6:.2f})",
        f"switch: rise {sheet.switching['rise_s'] * 1e9:.0f} ns, fall {sheet.switching['fall_s'] * 1e9:.0f} ns",
        f"area {ar['cell_two_outputs']:.0f} µm² (two outputs, layout ×{ar['layout_factor']:g})",
        f"gain limit per gate {sheet.gain_limit:.3f} (c = 0)",
    ])
