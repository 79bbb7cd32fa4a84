"""SPICE netlists of a KirchhoffNet (ngspice dialect), in three variants.

Physical mapping (docs/design.md §3): node voltage V = V0·v, device current I = I0·i(v), node
capacitor C·c_k (c_k the node's dimensionless capacitance), so one unit of model time lasts
τ = C·V0/I0 seconds and the deck runs to T·τ.

Variants:

- ``sample``: latent z → data x. Inputs ``in1..ind`` (model units) set the initial node
  voltages ``V(nk) = V0·in_k``; read ``x_k = V(nk)/V0`` at T·τ.
- ``logprob``: ``sample`` plus an accumulator node ``nacc`` (capacitor C) fed by one
  divergence current per device, ``−I0·w_e·act'(z_e)``, so ``V(nacc) = V0·(log N(z) − ∫div)``
  = V0·log q(x) at T·τ. log N(z) enters as the accumulator's initial condition, computed
  from the input parameters (``.param lognz``).
- ``reverse``: data x → latent z. Device currents negated and layers played in reverse
  order; the accumulator integrates the same divergence currents, and a behavioural voltage
  source ``nlogp`` adds log N of the node voltages: ``V(nlogp) = V0·log p(x)`` at T·τ.

Names (stable, documented in docs/export.md): nodes ``n<k>`` (k = model node index,
1-based; ``0`` is ground), ``nacc``, ``nlogp``, ``g<l>``; elements ``C_N<k>`` node
capacitors, ``B_L<l>_E<e>`` device e of layer l (both 0-based, as in the parameter table and
the checkpoint), ``BD_L<l>_E<e>`` its divergence current, ``C_ACC``, ``B_LOGP``, ``V_G<l>``.

Gating: every device current of layer l is multiplied by the switch-control voltage
``V(g<l>)``, a PWL source that is 1 V during the layer's window [t_{l-1}·τ, t_l·τ] and 0 V
outside, with linear ramps of width 1e-6 of the shortest layer centred on each boundary.
PWL corners are simulator breakpoints, so ngspice steps exactly onto every switch. A hard
switch (a ternary on ``time``) stalls ngspice at boundaries where the connected devices
change ("timestep too small"); the centred ramp keeps each layer's gate integral exactly
its duration, so its error is second order in the ramp width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.device_expr import TextDialect, render_text
from models.devices import LEAKY, get_activation
from models.errors import UserInputError
from models.flow import KirchhoffNet
from models.hardware import settle_time_s

from .spice_ir import GROUND, Deck, Element, Readout, num, signed_sum, tnum

VARIANTS = ("sample", "logprob", "reverse")
STYLES = ("flat", "subckt")
LOG_2PI = math.log(2 * math.pi)
FORMAT_VERSION = "1"
# Switch ramp width as a fraction of the shortest layer. A hard switch (a ternary on
# `time`) stalls ngspice at the boundary ("timestep too small") when the new layer's
# devices differ; a steep ramp centred on the boundary keeps every layer's integral of
# the gate exactly its duration, so the error is second order in the ramp (~1e-12).
RAMP_FRACTION = 1e-6


@dataclass(frozen=True)
class Cell:
    """A device or divergence element as a parametrised cell: what the subcircuit netlist
    (``export.subckt``) and the Verilog-A/VACASK deck (``export.vacask``) instantiate.

    ``family``: the device family (``affine-tanh`` …); ``divergence``: the log-density
    divergence current rather than the device; ``nodes``: ``(src, dst, enable)`` plus the
    accumulator node for a divergence cell; ``params``: ``(name, value)`` pairs, the
    family's raw parameters (model units) then ``i0`` (A), ``v0`` (V) and, for a
    divergence cell, ``w`` (dimensionless).
    """

    family: str
    divergence: bool
    nodes: tuple[str, ...]
    params: tuple[tuple[str, float], ...]


class UnsupportedCircuit(UserInputError):
    """The model cannot be expressed as a fixed capacitor network (the message says why)."""


@dataclass(frozen=True)
class SpiceOptions:
    """Simulator accuracy settings written into the deck.

    Tolerances scale with the hardware constants so the deck is equally accurate at any
    C, V0, I0: ``abstol = abstol_rel·I0`` (amperes), ``vntol = vntol_rel·V0`` (volts),
    ``chgtol = chgtol_rel·C·V0`` (coulombs). The maximum time step is the shortest layer
    divided by ``steps_per_layer``. Measured on the zoo's 2-D models these give ~1e-6
    relative agreement with a tight float64 solution (docs/export.md).
    """

    reltol: float = 1e-9
    abstol_rel: float = 1e-12
    vntol_rel: float = 1e-9
    chgtol_rel: float = 1e-12
    steps_per_layer: int = 64
    # ngspice's truncation-error factor (its default 7 when None, not written): 1 gives ~4x
    # smaller errors for ~1.8x the time points, 0.25 ~8x for ~2.7x (twomoon, docs/export.md)
    trtol: float | None = None


@dataclass(frozen=True)
class NodePlan:
    """How the model's per-layer node lists map onto one fixed set of capacitors.

    ``count``: nodes in the netlist (the most any layer uses); ``caps``: dimensionless
    capacitance per node (index k-1); ``initial``: per node, the input index (0-based) whose
    value sets its initial voltage, or None for 0 V.
    """

    count: int
    caps: tuple[float, ...]
    initial: tuple[int | None, ...]


def node_plan(model: KirchhoffNet) -> NodePlan:
    """Check that the model's node counts fit a fixed capacitor network and plan the nodes.

    Supported: every layer uses nodes 1..n_l; a node first used by a later layer starts at
    0 V (``pad_mode: zeros``) and has never been used before, so its capacitor still holds
    its initial 0 V; surplus nodes are simply left unconnected (they are never read).
    The first layer may be wider than the data (zeros or repeated inputs as initial
    conditions). Refused (:class:`UnsupportedCircuit`): a layer that grows back onto nodes
    an earlier layer used (the model resets them to 0 V or copies voltages, which a
    capacitor cannot do without sample-and-hold switches), ``pad_mode: repeat`` growth
    after the first layer, and a node whose capacitance differs between layers.
    """
    spec = model.spec
    d = spec.data_dim
    first = spec.layers[0].nodes
    initial: list[int | None] = []
    for k in range(first):  # the model pads the input to the first layer's width
        if k < d:
            initial.append(k)
        else:
            initial.append(None if spec.pad_mode == "zeros" else k % d)
    high = first  # highest node used so far
    previous = first
    for l, layer in enumerate(spec.layers[1:], start=1):
        n = layer.nodes
        if n > previous:
            if spec.pad_mode == "repeat":
                raise UnsupportedCircuit(
                    f"layer {l} grows from {previous} to {n} nodes with pad_mode 'repeat': copying "
                    "voltages onto new nodes needs sample-and-hold switches, which the netlist cannot express")
            if previous < high:
                raise UnsupportedCircuit(
                    f"layer {l} grows from {previous} to {n} nodes after an earlier layer used {high}: "
                    f"nodes {previous + 1}..{min(n, high)} would have to be reset to 0 V mid-run; "
                    "only node counts that never grow back onto used nodes are supported")
        high = max(high, n)
        previous = n
        initial += [None] * (high - len(initial))
    caps: list[float | None] = [None] * high
    for l, layer in enumerate(spec.layers):
        cl = layer.capacitance
        values = [float(cl)] * layer.nodes if isinstance(cl, float | int) else [float(x) for x in cl]
        for k, c in enumerate(values):
            if caps[k] is None:
                caps[k] = c
            elif caps[k] != c:
                raise UnsupportedCircuit(
                    f"layer {l}, node {k + 1}: capacitance {c:g} differs from {caps[k]:g} in an earlier "
                    "layer; a node has one physical capacitor")
    return NodePlan(high, tuple(float(c) for c in caps), tuple(initial))


def physical_params(model: KirchhoffNet) -> list[dict[str, torch.Tensor]]:
    """Effective device parameters of every layer in float64 (model units):
    ``{"a", "b", "c", "s"}`` each ``(edges,)``, with i = s·act(a·v_s + b·v_d + c) and s the
    device's I0 factor (1 except on an emulated chip with mismatch, ``models.chip``)."""
    out = []
    for layer in model.layers:
        raw = {k: p.detach().to("cpu", torch.float64) for k, p in layer.params.items()}
        a, b, c = layer.family.effective(raw)
        s = torch.ones_like(a) if layer.current_scale is None else layer.current_scale.detach().to("cpu", torch.float64)
        out.append({"a": a, "b": b, "c": c, "s": s})
    return out


SPICE = TextDialect(number=num)  # ngspice B-source expressions (models.device_expr)


def _act(act: str, z: str, slope: float) -> str:
    """act(z) as SPICE text, rendered from the device table (``models.devices``)."""
    return render_text(get_activation(act).current, z, {LEAKY: slope}, SPICE)


def _act_slope(act: str, z: str, slope: float) -> str | None:
    """act'(z) as SPICE text; None when it is the constant 1."""
    law = get_activation(act)
    return None if law.constant_slope else render_text(law.slope, z, {LEAKY: slope}, SPICE)


def _gated(scale: float, layer: int, expr: str | None) -> str:
    """``I=scale*V(g<layer>)*expr``: a current switched by the layer's control voltage."""
    return f"I={num(scale)}*V(g{layer})" + ("" if expr is None else f"*{expr}")


def _gate_source(layer: int, window: tuple[float, float], end: float, ramp: float) -> Element:
    """The switch-control voltage of ``layer``: 1 V inside its window (seconds), 0 V outside,
    with linear ramps of width ``ramp`` centred on each boundary."""
    a, b = window
    half = ramp / 2
    points = [(0.0, 1.0)] if a <= 0 else [(0.0, 0.0), (a - half, 0.0), (a + half, 1.0)]
    if b < end:
        points += [(b - half, 1.0), (b + half, 0.0)]
    pwl = " ".join(f"{tnum(t)} {num(v)}" for t, v in points)
    return Element(f"V_G{layer}", "V", (f"g{layer}", GROUND), f"PWL({pwl})", f"layer {layer} switch control",
                   tuple(float(tnum(x)) for point in points for x in point))  # (t0, v0, t1, v1, ...)


def _layer_devices(model: KirchhoffNet, l: int, p: dict[str, torch.Tensor], node, sfx: str, variant: str,
                   acc: str | None, inv: list[float], cells: dict[str, Cell]) -> tuple[list[Element], list[Element]]:
    """Layer ``l``'s device sources (and, with an accumulator node ``acc``, their divergence
    currents) for one copy of the circuit; records each element's cell in ``cells``."""
    spec, hw = model.spec, model.spec.hardware
    layer, family = spec.layers[l], model.layers[l].family
    elems, divs = [], []
    for e, (s, dn) in enumerate(layer.edges):
        a, b, c = float(p["a"][e]), float(p["b"][e]), float(p["c"][e])
        ap, bp = a / hw.voltage_scale_v, b / hw.voltage_scale_v
        terms = []
        if s:
            terms.append((ap, f"V({node(s)})"))
        if dn:
            terms.append((bp, f"V({node(dn)})"))
        z = signed_sum(terms, c)
        i0_device = hw.current_scale_a * float(p["s"][e])  # I0 times the device's (mismatch) factor
        i0 = -i0_device if variant == "reverse" else i0_device
        body = _gated(i0, l, _act(family.activation, z, spec.leaky_slope))
        elems.append(Element(f"B_L{l}_E{e}{sfx}", "BI", (node(s), node(dn)), body,
                             f"layer {l}, edge {e} ({s}->{dn})", (ap, bp, c, i0)))
        raw = tuple((name, float(model.layers[l].params[name][e].detach())) for name in family.param_names)
        cells[f"B_L{l}_E{e}{sfx}"] = Cell(spec.device, False, (node(s), node(dn), f"g{l}"),
                                          raw + (("i0", i0), ("v0", hw.voltage_scale_v)))
        if acc is None:
            continue
        w = b * inv[dn] - a * inv[s]
        if w == 0:
            continue
        slope = _act_slope(family.activation, z, spec.leaky_slope)
        k_div = -i0_device * w
        divs.append(Element(f"BD_L{l}_E{e}{sfx}", "BI", (GROUND, acc), _gated(k_div, l, slope),
                            f"layer {l}, edge {e} ({s}->{dn}) divergence", (w, k_div)))
        cells[f"BD_L{l}_E{e}{sfx}"] = Cell(spec.device, True, (node(s), node(dn), f"g{l}", acc),
                                           raw + (("i0", i0_device), ("v0", hw.voltage_scale_v), ("w", w)))
    return elems, divs


def _accumulator(variant: str, hw, ins: list[str], node, sfx: str, param_lines: list,
                 logn_readouts: dict) -> tuple[tuple[Element, ...], str]:
    """The log-density accumulator of one copy (its capacitor, and for ``reverse`` the
    log p read-out source) and the node to read log p from; appends the ``lognz`` parameter
    (``logprob``) and the read-out's description (``reverse``)."""
    d, v0, acc = len(ins), hw.voltage_scale_v, f"nacc{sfx}"
    const = 0.5 * d * LOG_2PI
    if variant == "logprob":
        lognz = f"lognz{sfx}"
        param_lines.append(((lognz, "{-0.5*(" + " + ".join(f"{i}*{i}" for i in ins) + f") - {num(const)}}}"),))
        acc_ic = f"{{{num(v0)}*{lognz}}}"
    else:
        acc_ic = "0"
    extra = [Element(f"C_ACC{sfx}", "C", (acc, GROUND), f"{num(hw.capacitance_f)} IC={acc_ic}",
                     "accumulator", (hw.capacitance_f,))]
    if variant != "reverse":
        return tuple(extra), acc
    sq = " + ".join(f"V({node(k + 1)})*V({node(k + 1)})" for k in range(d))
    logn = f"V({acc}) - {num(0.5 / v0)}*({sq}) - {num(v0 * const)}"
    extra.append(Element(f"B_LOGP{sfx}", "BV", (f"nlogp{sfx}", GROUND), f"V={logn}", "log-density read-out",
                         (v0, const)))
    logn_readouts[f"nlogp{sfx}"] = (acc, tuple(node(k + 1) for k in range(d)), v0, const)
    return tuple(extra), f"nlogp{sfx}"


def build_deck(model: KirchhoffNet, variant: str, inputs: torch.Tensor | None = None,
               content_hash: str = "", options: SpiceOptions = SpiceOptions(), measures: bool = True,
               note: tuple[str, ...] = ()) -> Deck:
    """The deck of ``model`` for ``variant``.

    Args:
        inputs: ``(copies, data_dim)`` input values in model units, or None for one copy with
            all inputs 0 (the exported file: edit the ``.param`` line to feed any input).
            With several rows the deck holds one independent copy of the circuit per row,
            names suffixed ``_x<j>`` (used by ``knet simulate``).
        content_hash: written into the header.
        note: extra header lines after the model line (e.g. which emulated chip instance
            this is, ``export.chip_export``); none for an ideal model.

    Raises:
        ValueError: unknown variant; a log-density variant of a model whose node count
            changes; :class:`UnsupportedCircuit` for node layouts a netlist cannot express.
    """
    if variant not in VARIANTS:
        raise UserInputError(f"unknown netlist variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    spec = model.spec
    if variant != "sample" and not spec.bijective:
        raise UnsupportedCircuit(f"the {variant} netlist needs every layer to have data_dim={spec.data_dim} nodes; "
                         f"model {spec.name!r} changes node counts, so its log-density is not defined")
    plan = node_plan(model)
    hw = spec.hardware
    tau = hw.tau_s
    d = spec.data_dim
    rows = [[0.0] * d] if inputs is None else [[float(x) for x in r] for r in torch.as_tensor(inputs).reshape(-1, d)]
    multi = len(rows) > 1
    params = physical_params(model)
    bounds = spec.layer_bounds
    T = spec.end_time
    if variant == "reverse":  # layer l plays during [T - t_l, T - t_{l-1}]
        windows = [(T - t1, T - t0) for (t0, t1) in bounds]
    else:
        windows = list(bounds)

    param_lines: list[tuple[tuple[str, str], ...]] = []
    sections: list[tuple[str, tuple[Element, ...]]] = []
    readouts: list[Readout] = []
    cells: dict[str, Cell] = {}  # element name -> its cell (subcircuit and Verilog-A renderings)
    logn_readouts: dict[str, tuple[str, tuple[str, ...], float, float]] = {}  # see meta below
    for j, row in enumerate(rows):
        sfx = f"_x{j}" if multi else ""
        node = (lambda k, s=sfx: GROUND if k == 0 else f"n{k}{s}")
        ins = [f"in{k + 1}{sfx}" for k in range(d)]
        param_lines.append(tuple((ins[k], num(row[k])) for k in range(d)))
        caps = []
        for k in range(plan.count):
            src = plan.initial[k]
            ic = "0" if src is None else f"{{{num(hw.voltage_scale_v)}*{ins[src]}}}"
            c = hw.capacitance_f * plan.caps[k]
            caps.append(Element(f"C_N{k + 1}{sfx}", "C", (node(k + 1), GROUND), f"{tnum(c)} IC={ic}",
                                f"node {k + 1}", (c,)))
        sections.append((f"node capacitors{' of copy ' + str(j) if multi else ''}: C_phys = C * c_k, "
                         "initial voltage V0 * input", tuple(caps)))
        with_div = variant in ("logprob", "reverse")
        acc = f"nacc{sfx}"
        inv = [0.0] + [1.0 / c for c in plan.caps]
        for l, layer in enumerate(spec.layers):
            t0, t1 = windows[l][0] * tau, windows[l][1] * tau
            elems, divs = _layer_devices(model, l, params[l], node, sfx, variant, acc if with_div else None, inv,
                                         cells)
            t_text = f"[{tnum(t0)}, {tnum(t1)}] s"
            sections.append((f"layer {l}: {layer.nodes} nodes, {len(elems)} devices ({spec.device}), active {t_text}"
                             f"{', copy ' + str(j) if multi else ''}", tuple(elems)))
            if divs:
                copy = f", copy {j}" if multi else ""
                sections.append((f"layer {l}: divergence currents into the accumulator{copy}", tuple(divs)))
        read_nodes = [(f"v{k + 1}", node(k + 1)) for k in range(d)]
        if with_div:
            extra, logp_node = _accumulator(variant, hw, ins, node, sfx, param_lines, logn_readouts)
            read_nodes.append(("logp", logp_node))
            sections.append(("log-density accumulator" + (f", copy {j}" if multi else ""), extra))
        readouts += [Readout(j, q, n, f"{q}{sfx}") for q, n in read_nodes]

    ramp = RAMP_FRACTION * min(layer.duration for layer in spec.layers) * tau
    gates = tuple(_gate_source(l, (w[0] * tau, w[1] * tau), settle_time_s(spec), ramp) for l, w in enumerate(windows))
    sections.append(("switch control: V(g<l>) = 1 while layer l is connected, 0 otherwise "
                     "(ramps of width " + tnum(ramp) + " s centred on each boundary)", gates))
    o = options
    opts = (("reltol", tnum(o.reltol)), ("abstol", tnum(o.abstol_rel * hw.current_scale_a)),
            ("vntol", tnum(o.vntol_rel * hw.voltage_scale_v)),
            ("chgtol", tnum(o.chgtol_rel * hw.capacitance_f * hw.voltage_scale_v)))
    if o.trtol is not None:
        opts += (("trtol", num(o.trtol)),)
    shortest = min(layer.duration for layer in spec.layers)
    deck = Deck(
        title=f"KirchhoffNet {spec.name} ({variant} netlist)",
        comments=_header(model, variant, content_hash, plan, note),
        params=tuple(param_lines), options=opts, sections=tuple(sections),
        stop_time_s=settle_time_s(spec), max_step_s=shortest * tau / o.steps_per_layer,
        readouts=tuple(readouts), measures=measures,
        meta={"variant": variant, "copies": len(rows), "plan": plan, "cells": cells,
              "leaky_slope": spec.leaky_slope,
              # read-out node -> (accumulator, data nodes, V0, d/2·log 2π): V = V(acc) − ΣV²/(2·V0) − V0·const
              "logn_readouts": logn_readouts},
    )
    return deck


def _header(model: KirchhoffNet, variant: str, content_hash: str, plan: NodePlan,
            note: tuple[str, ...] = ()) -> tuple[str, ...]:
    spec, hw = model.spec, model.spec.hardware
    d = spec.data_dim
    what = {
        "sample": (f"latent z (.param in1..in{d}, model units) -> data x_k = V(nk)/V0 at T*tau",),
        "logprob": (f"latent z (.param in1..in{d}) -> data x_k = V(nk)/V0 and log q(x) = V(nacc)/V0 at T*tau",
                    "(nacc starts at V0*log N(z) and integrates minus the divergence)"),
        "reverse": (f"data x (.param in1..in{d}) -> latent z_k = V(nk)/V0 and log p(x) = V(nlogp)/V0 at T*tau",
                    "(currents negated, layers in reverse order; nlogp = V(nacc) + V0*log N(V/V0))"),
    }[variant]
    lines = [
        f"model: {spec.name}  version: {spec.version}  content sha256: {content_hash or 'n/a'}",
        *note,
        f"netlist format {FORMAT_VERSION}, ngspice dialect, written by kirchhoffnet-serve (export.netlist)",
        f"variant {variant}: " + what[0], *what[1:],
        f"constants: C = {num(hw.capacitance_f)} F, V0 = {num(hw.voltage_scale_v)} V, "
        f"I0 = {num(hw.current_scale_a)} A, "
        f"tau = C*V0/I0 = {tnum(hw.tau_s)} s",
        f"time: T = {tnum(spec.end_time)} model units = {tnum(settle_time_s(spec))} s; "
        f"{len(spec.layers)} layers, {spec.num_edges} devices ({spec.device}), {plan.count} nodes",
        "units: volts, amperes, seconds, farads; device current I = I0*act(a*V(src) + b*V(dst) + c), a and b in 1/V",
        "names: n<k> node k (0 = ground); C_N<k> node capacitor; B_L<l>_E<e> device e of layer l (0-based);",
        "       BD_L<l>_E<e> its divergence current into nacc; C_ACC accumulator, B_LOGP log-density read-out",
        "switches: device currents of layer l are multiplied by V(g<l>) (V_G<l>: 1 V while the layer is connected)",
        f"run: ngspice -b {spec.name}-{variant}.cir   "
        "(edit the in<k> .param values for another input; the .meas lines print the outputs)",
    ]
    return tuple(lines)


def netlist_text(model: KirchhoffNet, variant: str, content_hash: str = "",
                 options: SpiceOptions = SpiceOptions(), note: tuple[str, ...] = (), style: str = "flat") -> str:
    """The exported netlist: one copy, inputs 0, electrical rules checked (raises ERCError);
    ``note``: extra header lines (:func:`build_deck`); ``style``: ``flat`` (behavioural
    sources with inline numbers) or ``subckt`` (one ``.subckt`` per family, ``export.subckt``)."""
    from .erc import check
    if style not in STYLES:
        raise UserInputError(f"unknown netlist style {style!r}; expected one of {', '.join(STYLES)}")
    deck = build_deck(model, variant, None, content_hash, options, note=note)
    check(deck)
    if style == "subckt":
        from .subckt import subckt_deck
        return subckt_deck(deck, model.layers[0].family.activation, model.spec.leaky_slope).render()
    return deck.render()
