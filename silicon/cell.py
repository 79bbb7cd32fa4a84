"""The transistor cell that realises a KirchhoffNet device, and the map from weights to elements.

One cell per device e (edge s → d) realises i = I0·tanh(a·v_s + b·v_d + c) (docs/silicon.md):

- **Input: capacitive dividers onto two floating gates.** Node voltages are deviations from
  the common mode ``vcm_v`` in units of V0 (model volts). A term α·v (α = a on the source
  node, b on the destination node) couples the node to gate G+ when α > 0, to G− when α < 0,
  through a capacitor η·C_gt with η = |α|/(k·V0): the gate moves by η·ΔV, so the pair sees
  k·ΔV_G = α·v. C_gt = ``gate_cap_f`` + the gate's own parasitic (characterized) is the same
  for every gate; a fill capacitor to the reference makes up the rest, so ratios are exact.
  The offset c comes from two global offset lines that step up and down by ``offset_step_v``
  after reset, coupled with η_c = |c − z0|/(2·k·V_step) to both gates in opposite directions
  (so c moves the gates differentially, not their common mode). Every gate is reset to
  ``vref_v`` while the nodes sit at ``vcm_v`` (the reset phase), then floats. Weights are
  hard-wired capacitor ratios (a mask-programmed chip; a programmable one would use
  capacitor DACs of the same ratios).
- **Core: a weak-inversion NMOS differential pair** whose tail current I0 is mirrored from the
  one reference current; a balanced *park* pair takes the tail current while the cell's layer
  is not connected, so every internal node stays biased and switching a layer moves only the
  differential current (no slewing, no common-mode charge into the nodes).
- **Outputs: wide-swing cascode mirrors** source I1 and sink I2 at d (net I1 − I2 =
  I0·tanh(z) into d) and the mirror image at s; a device touching ground has only the output
  on its node (ground needs to sink nothing).

This module holds the design record (:class:`CellDesign`, sizes and constants per PDK), the
characterized constants the mapping needs (:class:`CellCalibration`) and the mapping itself
(:func:`realise`, :func:`recover`); ``silicon.cell_netlist`` renders it as SPICE.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# Roles of the cell's transistors, each with its flavour and size (µm). "pcas"/"ncas" are the
# cascodes of the wide-swing mirrors, "steer" the layer switch, "park" the balanced pair.
# parameters trained in float32 sit on a limit up to rounding: exceeding it by less is not a problem
LIMIT_TOLERANCE = 1e-4
ROLES = ("pair", "park", "steer", "tail", "keep", "pmir", "pcas", "nmir", "ncas", "nbias_cas", "pbias_cas")


@dataclass(frozen=True)
class Transistor:
    """A transistor's flavour (a key of ``PdkInfo.devices``) and its size in µm."""

    flavour: str
    w_um: float
    l_um: float

    @property
    def area_um2(self) -> float:
        return self.w_um * self.l_um


@dataclass(frozen=True)
class CellDesign:
    """Everything that fixes the cell and the chip around it, in physical units.

    ``vcm_v``: node common mode (model voltage 0); ``vref_v``: gate reset level; ``v0_v``,
    ``i0_a``: the model's voltage and current scales (I0 is the tail current, mirrored 1:1
    from the reference); ``gate_cap_f``: external capacitance per floating gate (coupling +
    fill); ``offset_step_v``: the offset lines' step; ``node_cap_f``: the explicit capacitor
    of every KirchhoffNet node (the hardware C); ``swing_model_volts``: the node excursion
    (|v| in model volts) the gain limits are computed for; ``gate_window_v``: how far a gate
    may move from ``vref_v`` with the core's law intact (characterized); ``layout_factor``:
    cell area / Σ transistor and capacitor area (routing, wells, spacing).
    """

    pdk: str
    vdd_v: float
    vcm_v: float
    vref_v: float
    v0_v: float
    i0_a: float
    gate_cap_f: float
    offset_step_v: float
    node_cap_f: float
    transistors: dict[str, Transistor]
    swing_model_volts: float = 3.0
    gate_window_v: float = 0.25
    layout_factor: float = 2.0
    # the bias diodes run at this many times the cell currents (and widths): every cell's tail and
    # cascode gates hang on their lines, and a layer switch kicks them; a stiff line recovers in ns
    bias_multiplier: int = 50
    name: str = "kn-tanh-1"

    def transistor(self, role: str) -> Transistor:
        return self.transistors[role]

    def transistor_area_um2(self, outputs: int) -> float:
        """Σ W·L of one cell with ``outputs`` (1 or 2) output stages, µm² (the shared bias
        network not included)."""
        t = self.transistors
        core = (2 * t["pair"].area_um2 + 2 * t["park"].area_um2 + 2 * t["steer"].area_um2 + t["tail"].area_um2
                + 2 * t["keep"].area_um2)
        diodes = 2 * (t["pmir"].area_um2 + t["pcas"].area_um2)
        # per output: two P copies (one feeds an N diode) and an N diode + N copy, all cascoded
        per_output = 2 * (t["pmir"].area_um2 + t["pcas"].area_um2) + 2 * (t["nmir"].area_um2 + t["ncas"].area_um2)
        return core + diodes + outputs * per_output

    def transistor_count(self, outputs: int) -> int:
        return 9 + 4 + 8 * outputs


def _sky130() -> CellDesign:
    return CellDesign(
        # nodes centred in the outputs' range (0.3–1.3 V: the cascoded mirrors' headroom)
        pdk="sky130", vdd_v=1.8, vcm_v=0.8, vref_v=1.15, v0_v=0.1, i0_a=1e-6, gate_cap_f=200e-15,
        offset_step_v=0.5, node_cap_f=10e-12,
        transistors={
            # a small pair: its gate capacitance (and how it moves with the gate difference, which
            # bends the dividers) stays a small part of each floating gate (docs/silicon.md)
            "pair": Transistor("n", 2.0, 1.0), "park": Transistor("n", 2.0, 1.0),
            "steer": Transistor("n", 1.0, 0.15), "tail": Transistor("n", 2.0, 4.0),
            # a standing ~0.1·I0 into each P mirror: equal on both sides it cancels at the outputs,
            # and a mirror whose pair side carries almost nothing still settles in tens of ns
            "keep": Transistor("n", 0.42, 8.0),
            # low-threshold PMOS mirrors keep the pair's drains high enough for a ±0.25 V gate window;
            # mirrors of 2 µm²: their poles (~3 ns) against their matching (docs/silicon.md)
            "pmir": Transistor("p_lvt", 1.0, 2.0), "pcas": Transistor("p_lvt", 4.0, 2.0),
            "nmir": Transistor("n", 1.0, 2.0), "ncas": Transistor("n", 4.0, 2.0),
            "nbias_cas": Transistor("n", 0.42, 8.0), "pbias_cas": Transistor("p_lvt", 0.42, 8.0),
        })


def _gf180() -> CellDesign:
    return CellDesign(
        pdk="gf180", vdd_v=3.3, vcm_v=1.65, vref_v=1.8, v0_v=0.1, i0_a=1e-6, gate_cap_f=200e-15,
        offset_step_v=0.8, node_cap_f=10e-12, gate_window_v=0.4,
        transistors={
            "pair": Transistor("n", 4.0, 2.0), "park": Transistor("n", 4.0, 2.0),
            "steer": Transistor("n", 1.0, 0.28), "tail": Transistor("n", 2.0, 4.0),
            "keep": Transistor("n", 0.5, 8.0),
            "pmir": Transistor("p", 1.0, 4.0), "pcas": Transistor("p", 4.0, 2.0),
            "nmir": Transistor("n", 1.0, 4.0), "ncas": Transistor("n", 4.0, 2.0),
            "nbias_cas": Transistor("n", 0.5, 8.0), "pbias_cas": Transistor("p", 0.5, 8.0),
        })


DESIGNS: dict[str, CellDesign] = {"sky130": _sky130(), "gf180": _gf180()}


@dataclass(frozen=True)
class CellCalibration:
    """What the mapping needs from characterization (``silicon.characterize``):

    ``slope_per_v`` k: the core's tanh argument per volt of gate difference; ``input_offset``
    z0: its systematic offset in units of z (tanh(k·ΔV_G + z0)); ``gate_parasitic_f``: the
    effective capacitance of a floating gate to AC ground besides the external capacitors.
    """

    slope_per_v: float
    input_offset: float = 0.0
    gate_parasitic_f: float = 0.0


@dataclass(frozen=True)
class GateCaps:
    """The external capacitors of one floating gate, farads: to the source node, the
    destination node, the offset-up line, the offset-down line, and the fill to the reference."""

    src: float = 0.0
    dst: float = 0.0
    up: float = 0.0
    down: float = 0.0
    fill: float = 0.0

    @property
    def coupled(self) -> float:
        return self.src + self.dst + self.up + self.down

    @property
    def total(self) -> float:
        return self.coupled + self.fill


@dataclass(frozen=True)
class CellElements:
    """One device's element values: the two gates' capacitors and whether each output exists.

    ``problems`` lists every limit the requested parameters exceed (never clipped silently: a
    problem means the elements realise something else, and the caller reports it)."""

    plus: GateCaps
    minus: GateCaps
    src_output: bool
    dst_output: bool
    problems: tuple[str, ...] = field(default=())

    @property
    def outputs(self) -> int:
        return int(self.src_output) + int(self.dst_output)

    @property
    def capacitance_f(self) -> float:
        return self.plus.total + self.minus.total


def gate_total_f(design: CellDesign, cal: CellCalibration) -> float:
    """C_gt: everything on a floating gate, external plus parasitic, farads."""
    return design.gate_cap_f + cal.gate_parasitic_f


def realise(a: float, b: float, c: float, src: int, dst: int, design: CellDesign,
            cal: CellCalibration) -> CellElements:
    """Element values realising i = tanh(a·v_s + b·v_d + c) from node ``src`` into ``dst``
    (0 = ground: its term and its output drop out). Limits exceeded are listed in
    ``problems``; the capacitors are then those of the nearest realisable device (each gate's
    couplings scaled down to fit), never silently."""
    c_gt = gate_total_f(design, cal)
    k, v0 = cal.slope_per_v, design.v0_v
    plus, minus = {"src": 0.0, "dst": 0.0}, {"src": 0.0, "dst": 0.0}
    for key, coef, node in (("src", a, src), ("dst", b, dst)):
        if node and coef:
            (plus if coef > 0 else minus)[key] = abs(coef) / (k * v0) * c_gt
    # the offset: ΔV_G = (c − z0)/k, split evenly between the gates through the two step lines
    offset = (c - cal.input_offset) / k
    step = abs(offset) / 2 / design.offset_step_v * c_gt
    up_plus, down_minus = (step, step) if offset > 0 else (0.0, 0.0)
    down_plus, up_minus = (step, step) if offset < 0 else (0.0, 0.0)
    problems: list[str] = []
    gates = []
    for name, coupled, up, down in (("G+", plus, up_plus, down_plus), ("G-", minus, up_minus, down_minus)):
        total = coupled["src"] + coupled["dst"] + up + down
        scale = 1.0
        if total > design.gate_cap_f * (1 + LIMIT_TOLERANCE):
            problems.append(f"{name}: couplings need {total * 1e15:.1f} fF of the {design.gate_cap_f * 1e15:.0f} fF "
                            f"gate (divider limit)")
            scale = design.gate_cap_f / total
        excursion = (coupled["src"] + coupled["dst"]) / c_gt * design.swing_model_volts * v0 + abs(offset) / 2
        if excursion > design.gate_window_v * (1 + LIMIT_TOLERANCE):
            problems.append(f"{name}: gate moves {excursion * 1e3:.0f} mV at ±{design.swing_model_volts:g} model "
                            f"volts, beyond the {design.gate_window_v * 1e3:.0f} mV window")
        caps = GateCaps(coupled["src"] * scale, coupled["dst"] * scale, up * scale, down * scale)
        gates.append(GateCaps(caps.src, caps.dst, caps.up, caps.down, design.gate_cap_f - caps.coupled))
    return CellElements(gates[0], gates[1], src_output=src != 0, dst_output=dst != 0, problems=tuple(problems))


def recover(elements: CellElements, design: CellDesign, cal: CellCalibration) -> tuple[float, float, float]:
    """The (a, b, c) the elements realise (the inverse of :func:`realise` on realisable input)."""
    c_gt = gate_total_f(design, cal)
    k, v0 = cal.slope_per_v, design.v0_v
    p, m = elements.plus, elements.minus
    a = (p.src - m.src) / c_gt * k * v0
    b = (p.dst - m.dst) / c_gt * k * v0
    # each gate moves by ±(up − down)/C_gt·V_step; the pair sees their difference
    delta_v = ((p.up - p.down) - (m.up - m.down)) / c_gt * design.offset_step_v
    return a, b, k * delta_v + cal.input_offset


def gain_limit(design: CellDesign, cal: CellCalibration, c: float = 0.0) -> float:
    """The largest Σ|α| of same-sign input terms one gate can carry (model units), for a
    device whose offset is ``c``: the tighter of the divider and the gate window."""
    c_gt = gate_total_f(design, cal)
    k, v0 = cal.slope_per_v, design.v0_v
    offset_v = abs(c - cal.input_offset) / k
    divider = (design.gate_cap_f - offset_v / 2 / design.offset_step_v * c_gt) / c_gt * k * v0
    window = (design.gate_window_v - offset_v / 2) / (design.swing_model_volts * v0) * k * v0
    return max(0.0, min(divider, window))


def mim_area_um2(capacitance_f: float, density_f_per_um2: float | None) -> float:
    """Area of a capacitor at the PDK's MIM density (µm²); NaN when the PDK states none."""
    return capacitance_f / density_f_per_um2 if density_f_per_um2 else math.nan
