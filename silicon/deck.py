"""A whole KirchhoffNet at transistor level: the ngspice deck of a cell-realised model.

Every device becomes a cell (``silicon.cell``: its capacitors from :func:`silicon.cell.realise`,
its core from ``silicon.cell_netlist``), every node a capacitor of the design's ``node_cap_f``
with a CMOS transmission gate from its input DAC, and the chip gets the shared bias network,
the reference, two offset lines and one enable pair per layer. One forward pass (``sample``):

1. reset (the operating point): nodes at ``vcm_v`` through their closed DAC switches, gates at
   ``vref_v`` (their reset switches, modelled as 1 PΩ), offset lines at ``vref_v``, every
   layer *connected* (balanced gates draw no output current), so each gate's charge is set
   with its pair in the state it will be read in; then every layer parks;
2. load: the DACs ramp the nodes to vcm + V0·z while the offset lines step by ±V_step (the
   gates follow through their capacitors), then the DAC switches open;
3. evolve: layer l is connected (its tails steered from the park pairs to the main pairs)
   during [t_start + t_{l−1}·τ, t_start + t_l·τ];
4. read: the node voltages at the end, x = (V − vcm)/V0 (the ADC is not simulated).

Ideal elements, stated: VDD, the reference voltage, the offset lines, the DAC sources, the
digital enable/switch drivers and the reference current (with its two half copies) are
sources; everything else is a PDK transistor or a capacitor (PDK density for the area).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.errors import UserInputError
from models.flow import KirchhoffNet

from .cell import CellCalibration, CellDesign, CellElements, realise
from .cell_netlist import bias_network, core_subckt, device_instance
from .pdk import PdkInfo
from .spice_run import control_block

# reset (every layer active, gates at the reference), park, load, open the DACs, evolve (seconds)
PARK_S, LOAD_DELAY_S, LOAD_RAMP_S, LOAD_HOLD_S, SWITCH_EDGE_S, SETTLE_S = 2e-9, 5e-9, 20e-9, 200e-9, 1e-9, 10e-9
# the DAC switches open slowly: their channel charge drains back into the DAC instead of the node
DAC_OPEN_S = 40e-9
# transmission gate: NMOS and PMOS (W, L) in µm; ~2 kΩ on: the load settles in 200 ns (~4 RC at
# 25 pF) while the channel charge left on the node at opening stays near 1 mV (docs/silicon.md)
DAC_SWITCH = (("n", 4.0, 0.15), ("p", 8.0, 0.15))


@dataclass(frozen=True)
class Schedule:
    """The forward pass's times, seconds: load ramp, DAC switch opening, the layer windows
    and the read-out time."""

    load_start_s: float
    load_end_s: float
    dac_open_s: float
    layer_windows_s: tuple[tuple[float, float], ...]
    read_s: float

    @property
    def start_s(self) -> float:
        return self.layer_windows_s[0][0]

    @property
    def end_s(self) -> float:
        return self.layer_windows_s[-1][1]


@dataclass(frozen=True)
class RealisedDevice:
    """Device ``edge`` of ``layer`` (0-based) from node ``src`` to ``dst`` and its elements."""

    layer: int
    edge: int
    src: int
    dst: int
    elements: CellElements


@dataclass(frozen=True)
class TransistorDeck:
    """A rendered deck and what a simulation of it needs to read it back."""

    text: str
    schedule: Schedule
    copies: int
    data_dim: int
    devices: tuple[RealisedDevice, ...]
    problems: tuple[str, ...]
    transistors: int
    sources: dict[str, str]  # every voltage source whose power counts → its + node (the other is ground)
    vcm_v: float
    v0_v: float

    def node(self, k: int, copy: int = 0) -> str:
        return f"n{k}" if self.copies == 1 else f"n{k}_x{copy}"


def check_model(model: KirchhoffNet, design: CellDesign) -> None:
    """Refuse (UserInputError) a model not trained for this cell: no cell law, or hardware
    constants other than the design's."""
    spec = model.spec
    if spec.cell is None:
        raise UserInputError(f"model {spec.name!r} has no characterized cell law: a transistor-level chip needs a "
                             "model trained within the cell's limits (e.g. twomoon-sky130, docs/silicon.md)")
    hw = spec.hardware
    for what, have, want in (("C", hw.capacitance_f, design.node_cap_f), ("V0", hw.voltage_scale_v, design.v0_v),
                             ("I0", hw.current_scale_a, design.i0_a)):
        if abs(have - want) > 1e-9 * abs(want):
            raise UserInputError(f"model {spec.name!r} has {what} = {have:g}, the {design.pdk} cell {want:g}")


def realise_model(model: KirchhoffNet, design: CellDesign, cal: CellCalibration) -> list[RealisedDevice]:
    """Every device's elements, layer by layer."""
    out = []
    for l, layer in enumerate(model.layers):
        a, b, c = (t.detach().to(torch.float64) for t in layer.family.effective(dict(layer.params.items())))
        for e, (s, d) in enumerate(model.spec.layers[l].edges):
            out.append(RealisedDevice(l, e, s, d, realise(float(a[e]), float(b[e]), float(c[e]), s, d, design, cal)))
    return out


def schedule(model: KirchhoffNet, read_delay_s: float) -> Schedule:
    """The forward pass's times. The nodes are read ``read_delay_s`` after the last layer is
    disconnected: a cell's current follows its enable with the delay of its mirrors, so the
    last layer's charge has arrived only once its current has fallen (the charge of a window
    is preserved: docs/silicon.md)."""
    tau = model.spec.hardware.tau_s
    load_end = LOAD_DELAY_S + LOAD_RAMP_S
    dac_open = load_end + LOAD_HOLD_S
    start = dac_open + SETTLE_S
    windows = tuple((start + t0 * tau, start + t1 * tau) for t0, t1 in model.spec.layer_bounds)
    return Schedule(LOAD_DELAY_S, load_end, dac_open, windows, windows[-1][1] + read_delay_s)


def _pwl(points: list[tuple[float, str]]) -> str:
    return "PWL(" + " ".join(f"{t!r} {v}" for t, v in points) + ")"


def _step(lo: str, hi: str, t0: float, t1: float) -> str:
    return _pwl([(0.0, lo), (t0, lo), (t1, hi)])


def _window(lo: str, hi: str, t0: float, t1: float, end: float) -> str:
    """``hi`` during [t0, t1], ``lo`` else; and ``hi`` through the reset (until PARK_S)."""
    e = SWITCH_EDGE_S
    points = [(0.0, hi), (PARK_S - e / 2, hi), (PARK_S + e / 2, lo), (t0 - e / 2, lo), (t0 + e / 2, hi)]
    if t1 < end:
        points += [(t1 - e / 2, hi), (t1 + e / 2, lo)]
    return _pwl(points)


def build_deck(model: KirchhoffNet, pdk: PdkInfo, design: CellDesign, cal: CellCalibration,
               inputs: torch.Tensor | None = None, corner: str | None = None, temp_c: float = 27.0,
               read_delay_s: float = 200e-9, reltol: float = 1e-3, steps_per_window: int = 50) -> TransistorDeck:
    """The transistor-level ``sample`` deck of ``model``.

    Args:
        inputs: ``(copies, data_dim)`` latents z (model volts); None for one copy whose inputs
            are ``.param in1 … ind`` (0: edit them for another input).
        read_delay_s: from the last layer's disconnection to the read-out (:func:`schedule`).
        reltol, steps_per_window: ngspice's tolerance and the largest step (a window's fraction):
            against reltol 1e-5 and 200 steps the defaults move the outputs by ~1e-4 model
            volts for a third of the CPU time (docs/silicon.md).
        corner, temp_c: the process corner and temperature the deck runs at.

    Raises:
        UserInputError: a model not trained for the cell (:func:`check_model`).
    """
    check_model(model, design)
    spec, d = model.spec, design
    dim = spec.data_dim
    rows = None if inputs is None else torch.as_tensor(inputs, dtype=torch.float64).reshape(-1, dim)
    copies = 1 if rows is None else rows.shape[0]
    sched = schedule(model, read_delay_s)
    devices = realise_model(model, d, cal)
    problems = tuple(f"layer {r.layer}, edge {r.edge}: {p}" for r in devices for p in r.elements.problems)
    end = sched.read_s
    load = (sched.load_start_s, sched.load_end_s)
    lines = [f"* KirchhoffNet {spec.name} at transistor level ({pdk.name} {corner or pdk.corners[0]}, {temp_c:g} C)",
             f"* model version {spec.version}; cell {d.name}; {len(devices)} devices, {spec.data_dim} nodes, "
             f"{len(spec.layers)} layers; written by kirchhoffnet-serve (silicon.deck)",
             f"* read x_k = (V(n<k>) - {d.vcm_v!r})/{d.v0_v!r} at t = {end!r} s; inputs: .param in<k> (model volts)",
             f"* tau = C*V0/I0 = {spec.hardware.tau_s!r} s; layers connected in windows starting {sched.start_s!r} s",
             *pdk.model_lines(corner), f".temp {temp_c!r}",
             f".options reltol={reltol!r} abstol=1e-13 vntol=1e-7 chgtol=1e-18",
             f"VDD vdd 0 {d.vdd_v!r}", f"VREF vref 0 {d.vref_v!r}",
             *bias_network(pdk, d), *core_subckt(pdk, d, "ds"), *core_subckt(pdk, d, "d"), *core_subckt(pdk, d, "s"),
             "* offset lines: step up / down by V_step after the reset",
             f"VUP vup 0 {_step(repr(d.vref_v), repr(d.vref_v + d.offset_step_v), *load)}",
             f"VDOWN vdown 0 {_step(repr(d.vref_v), repr(d.vref_v - d.offset_step_v), *load)}",
             "* input DAC switches: closed through reset and load, open before the first layer",
             f"VDAC dac 0 {_step(repr(d.vdd_v), '0', sched.dac_open_s - DAC_OPEN_S, sched.dac_open_s)}",
             f"VDACB dacb 0 {_step('0', repr(d.vdd_v), sched.dac_open_s - DAC_OPEN_S, sched.dac_open_s)}"]
    sources = {"VDD": "vdd", "VREF": "vref", "VUP": "vup", "VDOWN": "vdown", "VDAC": "dac", "VDACB": "dacb"}
    for l, (t0, t1) in enumerate(sched.layer_windows_s):
        lines += [f"VEN{l} en{l} 0 {_window('0', repr(d.vdd_v), t0, t1, end)}",
                  f"VENB{l} enb{l} 0 {_window(repr(d.vdd_v), '0', t0, t1, end)}"]
        sources.update({f"VEN{l}": f"en{l}", f"VENB{l}": f"enb{l}"})
    transistors = 3 + 2 * dim * copies  # bias network + DAC switches
    for j in range(copies):
        sfx = "" if copies == 1 else f"_x{j}"
        node = (lambda k, s=sfx: "0" if k == 0 else f"n{k}{s}")
        for k in range(1, dim + 1):
            value = f"in{k}{sfx}" if rows is None else repr(float(rows[j, k - 1]))
            if rows is None:
                lines.append(f".param in{k}{sfx}=0")
            target = f"{{{d.vcm_v!r}+{d.v0_v!r}*{value}}}"
            lines += [f"VIN{k}{sfx} in{k}{sfx} 0 {_step(repr(d.vcm_v), target, *load)}",
                      pdk.mos(f"DN{k}{sfx}", DAC_SWITCH[0][0], f"in{k}{sfx}", "dac", node(k), "0", *DAC_SWITCH[0][1:]),
                      pdk.mos(f"DP{k}{sfx}", DAC_SWITCH[1][0], f"in{k}{sfx}", "dacb", node(k), "vdd",
                              *DAC_SWITCH[1][1:]),
                      f"CN{k}{sfx} {node(k)} 0 {d.node_cap_f * _node_cap(spec, k)!r}"]
            sources[f"VIN{k}{sfx}"] = f"in{k}{sfx}"
        for r in devices:
            lines += device_instance(f"L{r.layer}E{r.edge}{sfx}", r.elements, node(r.src), node(r.dst),
                                     f"en{r.layer}", f"enb{r.layer}")
            transistors += d.transistor_count(r.elements.outputs)
    max_step = min(t1 - t0 for t0, t1 in sched.layer_windows_s) / steps_per_window
    saved = [f"v(n{k}{'' if copies == 1 else f'_x{j}'})" for j in range(copies) for k in range(1, dim + 1)]
    keep = saved + [f"i({s.lower()})" for s in sources] + [f"v({node})" for node in sources.values()]
    cmds = ["save " + " ".join(keep),  # only what is read back: memory stays flat over the run
            f"tran {max_step!r} {end!r} 0 {max_step!r}",
            "write tran.raw " + " ".join(keep)]
    text = "\n".join(lines + control_block(cmds) + [".end"]) + "\n"
    return TransistorDeck(text, sched, copies, dim, tuple(devices), problems, transistors, sources, d.vcm_v, d.v0_v)


def _node_cap(spec, k: int) -> float:
    cap = spec.layers[0].capacitance
    return float(cap) if isinstance(cap, float | int) else float(cap[k - 1])
