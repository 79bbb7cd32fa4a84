"""Characterization benches of the cell core: the SPICE decks and their raw results as arrays.

Each bench drives the core (``silicon.cell_netlist``) from ideal sources, runs ngspice once
(``silicon.spice_run``) and returns plain arrays; fitting and the datasheet are
``silicon.characterize``. Currents are *into the KirchhoffNet node* at each output (ngspice's
i(V) of the voltage source holding the output, positive when the cell pushes current in).

- :func:`core_dc`: I_d, I_s over (ΔV_G, gate common mode, output voltage), and the parked
  outputs over the output voltage;
- :func:`core_ac`: output admittance (active, parked), the ΔV_G → output transfer, and the
  floating gate's parasitic capacitance;
- :func:`core_noise`: output current noise density of an active cell;
- :func:`core_power`: supply and bias currents at the operating point, active and parked;
- :func:`core_switching`: the output charge a layer switch moves beyond the ideal window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cell import CellDesign
from .cell_netlist import bias_network, core_subckt
from .pdk import PdkInfo
from .spice_run import control_block, run_bench


@dataclass(frozen=True)
class Conditions:
    """Where a bench runs: PDK, corner (None = nominal), temperature (°C)."""

    pdk: PdkInfo
    design: CellDesign
    corner: str | None = None
    temp_c: float = 27.0

    @property
    def label(self) -> str:
        return f"{self.pdk.name} {self.corner or self.pdk.corners[0]}, {self.temp_c:g} °C"


def _header(cond: Conditions, title: str) -> list[str]:
    d = cond.design
    return [f"* {title} ({cond.label}) - kirchhoffnet-serve silicon bench", *cond.pdk.model_lines(cond.corner),
            f".temp {cond.temp_c!r}", ".option noinit", f"VDD vdd 0 {d.vdd_v!r}", f"VREF vref 0 {d.vref_v!r}",
            *bias_network(cond.pdk, d), *core_subckt(cond.pdk, d, "ds")]


def _driven_core(cond: Conditions, enabled: bool = True) -> list[str]:
    """The core with its gates at V(cmg) ± V(dif)/2 and both outputs held by sources."""
    d = cond.design
    return ["VDIF dif 0 0", f"VCMG cmg 0 {d.vref_v!r}",
            "BGP gp 0 V=V(cmg)+V(dif)/2", "BGM gm 0 V=V(cmg)-V(dif)/2",
            f"VEN en 0 {d.vdd_v if enabled else 0.0!r}", f"VENB enb 0 {0.0 if enabled else d.vdd_v!r}",
            f"VOD od 0 {d.vcm_v!r}", "VOS os osx 0", "EOS osx 0 od 0 1",
            "X1 gp gm od os en enb vdd nbias vpc vnc vref kn_core_ds"]


@dataclass(frozen=True)
class CoreDC:
    """``i_d``, ``i_s``: ``(gate_cm, vout, dvg)`` amperes into the node; ``parked_d``,
    ``parked_s``: at ``parked_vout`` with the cell parked. Axes in volts (outputs absolute)."""

    dvg: np.ndarray
    gate_cm: np.ndarray
    vout: np.ndarray
    i_d: np.ndarray
    i_s: np.ndarray
    parked_vout: np.ndarray
    parked_d: np.ndarray
    parked_s: np.ndarray
    cpu_s: float


def _grid(lo: float, hi: float, step: float) -> np.ndarray:
    return np.round(np.arange(lo, hi + step / 2, step), 12)


def core_dc(cond: Conditions, dvg_max: float, gate_cm_offsets: tuple[float, ...], vout_lo: float, vout_hi: float,
            dvg_step: float = 0.005, vout_step: float = 0.05, timeout_s: float = 600.0) -> CoreDC:
    """DC sweeps of the core over ΔV_G ∈ ±``dvg_max``, gate common mode ``vref + offsets``
    and outputs (both held at the same voltage) over [``vout_lo``, ``vout_hi``]."""
    d = cond.design
    dvg, vout = _grid(-dvg_max, dvg_max, dvg_step), _grid(vout_lo, vout_hi, vout_step)
    cms = tuple(d.vref_v + o for o in gate_cm_offsets)
    cmds, files = [], []
    for j, cm in enumerate(cms):
        cmds += [f"alter vcmg dc = {cm!r}", f"dc VDIF {-dvg_max!r} {dvg_max!r} {dvg_step!r} "
                 f"VOD {vout_lo!r} {vout_hi!r} {vout_step!r}", f"write dc{j}.raw i(vod) i(vos)"]
        files.append(f"dc{j}.raw")
    cmds += ["alter ven dc = 0", f"alter venb dc = {d.vdd_v!r}",
             f"dc VOD {vout_lo!r} {vout_hi!r} {vout_step / 5!r}", "write parked.raw v(od) i(vod) i(vos)"]
    files.append("parked.raw")
    text = "\n".join(_header(cond, "core DC") + _driven_core(cond) + control_block(cmds) + [".end"]) + "\n"
    run = run_bench(text, files, timeout_s, f"core DC bench ({cond.label})")
    shape = (len(vout), len(dvg))
    i_d = np.stack([run.tables[f"dc{j}.raw"]["i(vod)"].reshape(shape) for j in range(len(cms))])
    i_s = np.stack([run.tables[f"dc{j}.raw"]["i(vos)"].reshape(shape) for j in range(len(cms))])
    parked = run.tables["parked.raw"]
    return CoreDC(dvg, np.array(cms), vout, i_d, i_s, parked["v(od)"], parked["i(vod)"], parked["i(vos)"], run.cpu_s)


@dataclass(frozen=True)
class CoreAC:
    """Small-signal figures at the core's balanced operating point (outputs at ``vcm_v``):

    ``g_out_s``/``c_out_f``: output conductance and capacitance, active and parked (per
    output); ``gate_parasitic_f``: a floating gate's capacitance besides its external
    capacitors, by ΔV_G (keys ``-0.2`` … volts) and parked; ``transfer``: frequencies (Hz)
    and |∂I_d/∂ΔV_G| (A/V) active; ``bandwidth_hz``: its −3 dB frequency."""

    g_out_s: dict[str, float]
    c_out_f: dict[str, float]
    gate_parasitic_f: dict[str, float]
    freq_hz: np.ndarray
    transfer_a_per_v: np.ndarray
    bandwidth_hz: float
    cpu_s: float


TEST_COUPLING_F = 100e-15  # the parasitic bench's known capacitors
PARASITIC_FREQ_HZ = 1e3


def _floating_gate_core(cond: Conditions, enabled: bool) -> list[str]:
    """The core with both gates floating, each with a known coupling (G+ from ``vin``, G− from
    ``vinb``, driven in antiphase: a differential drive, as the cell's weights drive them) and
    a fill to ``vref``; their DC levels ``vref ± V(dif)/2`` (source ``VDIF``) through the reset
    leak; outputs held at ``vcm``."""
    d = cond.design
    return [f"VIN vin 0 dc {d.vcm_v!r} ac 1", f"VINB vinb 0 dc {d.vcm_v!r} ac 1 180",
            f"CTESTP vin gp {TEST_COUPLING_F!r}", f"CFILLP gp vref {TEST_COUPLING_F!r}",
            f"CTESTM vinb gm {TEST_COUPLING_F!r}", f"CFILLM gm vref {TEST_COUPLING_F!r}",
            "VDIF dif 0 0", "BRP rp 0 V=V(vref)+V(dif)/2", "BRM rm 0 V=V(vref)-V(dif)/2",
            "RLEAKP gp rp 1e15", "RLEAKM gm rm 1e15",
            f"VEN en 0 {d.vdd_v if enabled else 0.0!r}", f"VENB enb 0 {0.0 if enabled else d.vdd_v!r}",
            f"VOD od 0 {d.vcm_v!r}", f"VOS os 0 {d.vcm_v!r}",
            "X1 gp gm od os en enb vdd nbias vpc vnc vref kn_core_ds"]


def core_ac(cond: Conditions, timeout_s: float = 300.0) -> CoreAC:
    """AC benches: output admittance, ΔV_G → output transfer and the gate parasitic."""
    d = cond.design
    f_hz = PARASITIC_FREQ_HZ
    blocks = []
    # output admittance and transfer: the driven core, AC on one source at a time
    for state in ("active", "parked"):
        lines = _header(cond, f"core AC {state}") + _driven_core(cond, state == "active")
        lines = [ln.replace(f"VOD od 0 {d.vcm_v!r}", f"VOD od 0 dc {d.vcm_v!r} ac 1") for ln in lines]
        cmds = [f"ac lin 1 {f_hz!r} {f_hz!r}", f"write y_{state}.raw i(vod)"]
        if state == "active":
            cmds += ["alter vod ac = 0", "alter vdif ac = 1", "ac dec 10 1e3 1e9", "write tf.raw i(vod)"]
        blocks.append(("\n".join(lines + control_block(cmds) + [".end"]) + "\n",
                       [f"y_{state}.raw"] + (["tf.raw"] if state == "active" else [])))
    offsets = (-0.2, 0.0, 0.2)
    for state in ("active", "parked"):
        cmds = []
        for j, off in enumerate(offsets if state == "active" else (0.0,)):
            cmds += [f"alter vdif dc = {off!r}", f"ac lin 1 {f_hz!r} {f_hz!r}",
                     f"write gate_{state}{j}.raw v(gp) v(gm)"]
        lines = _header(cond, f"gate parasitic {state}") + _floating_gate_core(cond, state == "active")
        blocks.append(("\n".join(lines + control_block(cmds) + [".end"]) + "\n",
                       [f"gate_{state}{j}.raw" for j in range(len(offsets) if state == "active" else 1)]))
    tables, cpu = {}, 0.0
    for text, files in blocks:
        run = run_bench(text, files, timeout_s, f"core AC bench ({cond.label})")
        tables.update(run.tables)
        cpu += run.cpu_s
    omega = 2 * np.pi * f_hz
    g, c = {}, {}
    for state in ("active", "parked"):
        y = -tables[f"y_{state}.raw"].values[0, 1]  # columns: frequency, i(vod) (complex pairs flattened)
        g[state], c[state] = float(np.real(y)), float(np.imag(y) / omega)
    def parasitic(table) -> float:  # differential gain (V(gp) − V(gm))/2 per volt of drive
        h = abs(table.values[0, 1] - table.values[0, 2]) / 2
        return float(TEST_COUPLING_F / h - 2 * TEST_COUPLING_F)
    par = {f"{off:+.1f}": parasitic(tables[f"gate_active{j}.raw"]) for j, off in enumerate(offsets)}
    par["parked"] = parasitic(tables["gate_parked0.raw"])
    tf = tables["tf.raw"]
    freq, mag = np.real(tf.values[:, 0]), np.abs(tf.values[:, 1])
    below = np.nonzero(mag < mag[0] / np.sqrt(2))[0]
    bw = float(freq[below[0]]) if len(below) else float("inf")
    return CoreAC(g, c, par, freq, mag, bw, cpu)


@dataclass(frozen=True)
class CoreNoise:
    """Output current noise density of an active cell at ΔV_G = 0, output at ``vcm_v``:
    ``freq_hz``, ``density_a_per_rthz`` (A/√Hz, into the node)."""

    freq_hz: np.ndarray
    density_a_per_rthz: np.ndarray
    cpu_s: float


def core_noise(cond: Conditions, f_lo: float = 10.0, f_hi: float = 1e9, timeout_s: float = 300.0) -> CoreNoise:
    """``.noise`` of the output current (sensed by a 1 V/A current-controlled source)."""
    lines = _header(cond, "core noise") + _driven_core(cond) + ["HSENSE nsense 0 VOD 1"]
    cmds = ["alter vdif ac = 1", f"noise v(nsense) vdif dec 10 {f_lo!r} {f_hi!r}", "setplot noise1",
            "write noise.raw onoise_spectrum"]
    run = run_bench("\n".join(lines + control_block(cmds) + [".end"]) + "\n", ["noise.raw"], timeout_s,
                    f"core noise bench ({cond.label})")
    t = run.tables["noise.raw"]
    return CoreNoise(np.real(t.values[:, 0]), np.abs(t["onoise_spectrum"]), run.cpu_s)


@dataclass(frozen=True)
class CorePower:
    """Operating-point currents, amperes: the supply of one two-output cell active and
    parked, and of the shared bias network."""

    cell_active_a: float
    cell_parked_a: float
    bias_network_a: float
    cpu_s: float


def core_power(cond: Conditions, timeout_s: float = 120.0) -> CorePower:
    """Supply currents at the operating point: cell active, cell parked, bias network alone."""
    d = cond.design
    cmds = ["op", "write op_active.raw i(vdd)", "alter ven dc = 0", f"alter venb dc = {d.vdd_v!r}", "op",
            "write op_parked.raw i(vdd)"]
    lines = _header(cond, "core power") + _driven_core(cond)
    run = run_bench("\n".join(lines + control_block(cmds) + [".end"]) + "\n", ["op_active.raw", "op_parked.raw"],
                    timeout_s, f"core power bench ({cond.label})")
    bias = _header(cond, "bias network power")
    run_b = run_bench("\n".join(bias + control_block(["op", "write op_bias.raw i(vdd)"]) + [".end"]) + "\n",
                      ["op_bias.raw"], timeout_s, f"bias network power bench ({cond.label})")
    supply = lambda run_, f: -float(run_.tables[f]["i(vdd)"][0])  # noqa: E731 (current out of VDD's + node)
    bias_a = supply(run_b, "op_bias.raw")
    return CorePower(supply(run, "op_active.raw") - bias_a, supply(run, "op_parked.raw") - bias_a, bias_a,
                     run.cpu_s + run_b.cpu_s)


@dataclass(frozen=True)
class CoreSwitching:
    """A layer switch at ΔV_G = ``dvg``: the output charge beyond the ideal rectangular window
    (coulombs, into the node), and the time the output takes to reach 90 % after switching on
    and to fall below 10 % after switching off (seconds)."""

    dvg: tuple[float, ...]
    excess_charge_c: tuple[float, ...]
    rise_s: float
    fall_s: float
    window_s: float
    cpu_s: float


def core_switching(cond: Conditions, window_s: float = 500e-9, dvg: tuple[float, ...] = (0.0, 0.05, 0.2),
                   timeout_s: float = 300.0) -> CoreSwitching:
    """Transient of one enable pulse of ``window_s`` with the gates held at each ``dvg``."""
    d = cond.design
    t_on, edge = 100e-9, 0.1e-9
    t_off, t_end = t_on + window_s, t_on + window_s + 400e-9
    pwl = lambda lo, hi: (f"PWL(0 {lo!r} {t_on!r} {lo!r} {t_on + edge!r} {hi!r} {t_off!r} {hi!r} "  # noqa: E731
                          f"{t_off + edge!r} {lo!r})")
    cmds = []
    for j, v in enumerate(dvg):
        cmds += [f"alter vdif dc = {v!r}", f"tran 0.2n {t_end!r}", f"write sw{j}.raw i(vod)"]
    lines = [ln for ln in _header(cond, "core switching") + _driven_core(cond)
             if not ln.startswith(("VEN ", "VENB "))]
    lines += [f"VEN en 0 {pwl(0.0, d.vdd_v)}", f"VENB enb 0 {pwl(d.vdd_v, 0.0)}"]
    files = [f"sw{j}.raw" for j in range(len(dvg))]
    run = run_bench("\n".join(lines + control_block(cmds) + [".end"]) + "\n", files, timeout_s,
                    f"core switching bench ({cond.label})")
    excess, rise, fall = [], 0.0, 0.0
    for j, _ in enumerate(dvg):
        t, i = run.tables[f"sw{j}.raw"]["time"], run.tables[f"sw{j}.raw"]["i(vod)"]
        parked = float(np.mean(i[(t > 0.5 * t_on) & (t < t_on)]))
        on = float(np.mean(i[(t > t_off - 50e-9) & (t < t_off)])) - parked
        inside = t >= t_on
        charge = float(np.trapezoid(i[inside] - parked, t[inside]))
        excess.append(charge - on * window_s)
        if abs(on) > 0.1 * d.i0_a:
            frac = (i - parked) / on
            rise = max(rise, float(t[np.nonzero((t > t_on) & (frac >= 0.9))[0][0]] - t_on))
            fall = max(fall, float(t[np.nonzero((t > t_off) & (frac <= 0.1))[0][0]] - t_off))
    return CoreSwitching(tuple(dvg), tuple(excess), rise, fall, window_s, run.cpu_s)
