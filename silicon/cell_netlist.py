"""SPICE text of the cell (``silicon.cell``): the core subcircuit, the shared bias network and one
device's input network. Every rendering of the cell goes through here: characterization
benches, Monte Carlo decks and the whole-chip deck.

Core subcircuit ports (``kn_core_<outputs>``, outputs ``ds``, ``d`` or ``s``)::

    gp gm      the floating gates G+ and G−
    od os      the outputs: into the destination node, out of the source node
    en enb     the layer enable and its complement (digital, 0 / VDD)
    vdd        the supply (ground is node 0)
    nbias      the tail bias (gate of the reference diode)
    vpc vnc    the cascode biases of the wide-swing mirrors
    vpk        the park pair's gate level (the gate reset level)

Internal names follow the schematic in docs/silicon.md: ``sa``/``sp`` the main/park pair's
common source, ``tl`` the tail, ``d1``/``d2`` the pair's drains (P mirror inputs), ``p*``
the P mirrors' lower nodes, ``n1``/``n3`` the N mirror inputs, ``q*`` their lower nodes.
"""
from __future__ import annotations

from .cell import CellDesign, CellElements
from .pdk import PdkInfo

OUTPUTS = ("ds", "d", "s")
CORE_PORTS = ("gp", "gm", "od", "os", "en", "enb", "vdd", "nbias", "vpc", "vnc", "vpk")
# a floating gate's DC path: the reset switch when off (1 PΩ: the gate holds its charge for
# R·C ≈ 200 s, far beyond any run), so the operating point puts the gate at its reset level
FLOATING_GATE_LEAK_OHM = 1e15


def core_name(outputs: str) -> str:
    return f"kn_core_{outputs}"


def core_subckt(pdk: PdkInfo, design: CellDesign, outputs: str) -> list[str]:
    """The core subcircuit with the given output stages (``ds``: both, ``d``/``s``: one)."""
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}")
    t = design.transistors

    def mos(name: str, role: str, d: str, g: str, s: str, bulk: str) -> str:
        tr = t[role]
        return pdk.mos(name, tr.flavour, d, g, s, bulk, tr.w_um, tr.l_um)

    ports = " ".join(CORE_PORTS) if outputs == "ds" else " ".join(
        p for p in CORE_PORTS if p != ("os" if outputs == "d" else "od"))
    lines = [f".subckt {core_name(outputs)} {ports}",
             "* tail current mirrored from the reference, steered to the main or the park pair",
             mos("T", "tail", "tl", "nbias", "0", "0"),
             mos("SON", "steer", "sa", "en", "tl", "0"),
             mos("SOFF", "steer", "sp", "enb", "tl", "0"),
             mos("1", "pair", "d1", "gp", "sa", "0"), mos("2", "pair", "d2", "gm", "sa", "0"),
             mos("1P", "park", "d1", "vpk", "sp", "0"), mos("2P", "park", "d2", "vpk", "sp", "0"),
             mos("K1", "keep", "d1", "nbias", "0", "0"), mos("K2", "keep", "d2", "nbias", "0", "0"),
             "* wide-swing cascode P mirrors: inputs d1 (I1) and d2 (I2)",
             mos("P1", "pmir", "p1", "d1", "vdd", "vdd"), mos("P1C", "pcas", "d1", "vpc", "p1", "vdd"),
             mos("P2", "pmir", "p2", "d2", "vdd", "vdd"), mos("P2C", "pcas", "d2", "vpc", "p2", "vdd")]
    # an output at node X: a P copy of I_src sources into X; a P copy of I_sink feeds an N diode
    # whose copy sinks from X. Into d: I1 − I2; into s: I2 − I1.
    stages = {"d": ("od", "d1", "d2", "3"), "s": ("os", "d2", "d1", "5")}
    for out in ("d", "s"):
        if out not in outputs:
            continue
        node, src_gate, sink_gate, k = stages[out]
        k2 = str(int(k) + 1)
        n_in, q_in, q_out = f"n{k}", f"q{k}", f"q{k2}"
        lines += [f"* output into {node}",
                  mos(f"P{k}", "pmir", f"p{k}", src_gate, "vdd", "vdd"),
                  mos(f"P{k}C", "pcas", node, "vpc", f"p{k}", "vdd"),
                  mos(f"P{k2}", "pmir", f"p{k2}", sink_gate, "vdd", "vdd"),
                  mos(f"P{k2}C", "pcas", n_in, "vpc", f"p{k2}", "vdd"),
                  mos(f"N{k}", "nmir", q_in, n_in, "0", "0"), mos(f"N{k}C", "ncas", n_in, "vnc", q_in, "0"),
                  mos(f"N{k2}", "nmir", q_out, n_in, "0", "0"), mos(f"N{k2}C", "ncas", node, "vnc", q_out, "0")]
    lines.append(f".ends {core_name(outputs)}")
    return lines


def bias_network(pdk: PdkInfo, design: CellDesign, prefix: str = "") -> list[str]:
    """The shared bias: the reference current into the tail diode (``nbias``) and the two
    cascode bias diodes (``vpc``, ``vnc``) fed by half of it each, all ``bias_multiplier``
    times the cell's current in as many parallel units (same gate voltage, stiffer lines).
    In silicon the half-currents are mirrored from the same reference; here they are ideal
    sources."""
    t, m = design.transistors, design.bias_multiplier
    i_ref = design.i0_a * m

    def diode(name: str, role: str, node: str, rail: str) -> str:
        tr = t[role]
        return pdk.mos(name, tr.flavour, node, node, rail, rail, tr.w_um, tr.l_um, units=m)

    return ["* bias network: one reference current sets every tail (docs/silicon.md)",
            f"I{prefix}REF vdd nbias {i_ref!r}", diode(f"{prefix}BT", "tail", "nbias", "0"),
            f"I{prefix}RN vdd vnc {i_ref / 2!r}", diode(f"{prefix}BNC", "nbias_cas", "vnc", "0"),
            f"I{prefix}RP vpc 0 {i_ref / 2!r}", diode(f"{prefix}BPC", "pbias_cas", "vpc", "vdd")]


def device_instance(tag: str, elements: CellElements, src_node: str, dst_node: str, en: str, enb: str,
                    lines_up: str = "vup", lines_down: str = "vdown", vref: str = "vref") -> list[str]:
    """One device: its floating gates' capacitors, their reset leak and the core instance.
    ``src_node``/``dst_node`` are the KirchhoffNet nodes (``0`` for ground)."""
    gp, gm = f"gp_{tag}", f"gm_{tag}"
    out = []
    for gate, caps in ((gp, elements.plus), (gm, elements.minus)):
        for kind, value, other in (("S", caps.src, src_node), ("D", caps.dst, dst_node), ("U", caps.up, lines_up),
                                   ("W", caps.down, lines_down), ("F", caps.fill, vref)):
            if value > 0:
                out.append(f"C{kind}{gate} {gate} {other} {value!r}")
        out.append(f"R{gate} {gate} {vref} {FLOATING_GATE_LEAK_OHM!r}")
    if elements.src_output and elements.dst_output:
        out.append(f"X{tag} {gp} {gm} {dst_node} {src_node} {en} {enb} vdd nbias vpc vnc vref {core_name('ds')}")
    elif elements.dst_output:
        out.append(f"X{tag} {gp} {gm} {dst_node} {en} {enb} vdd nbias vpc vnc vref {core_name('d')}")
    else:
        out.append(f"X{tag} {gp} {gm} {src_node} {en} {enb} vdd nbias vpc vnc vref {core_name('s')}")
    return out
