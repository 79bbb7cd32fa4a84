"""SPICE netlists: golden text, electrical-rule checks, node layouts, determinism."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_model

from export.erc import ERCError, check, violations
from export.netlist import VARIANTS, UnsupportedCircuit, build_deck, netlist_text, node_plan
from export.spice_ir import Element
from models.checkpoint import circuit_from_dict
from models.config import CircuitSpec, LayerSpec
from models.flow import KirchhoffNet

GOLDEN = Path(__file__).resolve().parent / "golden"
GOLDEN_HASH = "0" * 64


def golden_circuit():
    """A hand-written two-layer, two-node circuit: every number below is exact in binary."""
    return circuit_from_dict({
        "name": "golden", "device": "affine-tanh", "data_dim": 2,
        "hardware": {"capacitance_f": 1e-12, "voltage_scale_v": 0.5, "current_scale_a": 1e-6},
        "layers": [
            {"duration": 0.5, "nodes": 2, "edges": [[1, 2], [0, 1], [2, 0]],
             "params": {"a": [0.5, 0.25, -1.0], "b": [-0.25, 1.5, 0.75], "c": [0.125, -0.5, 0.0]}},
            {"duration": 0.25, "nodes": 2, "edges": [[2, 1], [1, 0]],
             "params": {"a": [1.0, -0.5], "b": [0.5, 2.0], "c": [-0.25, 0.0625]}},
        ],
    }, torch.float64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_netlist_line_by_line(variant):
    got = netlist_text(golden_circuit(), variant, GOLDEN_HASH).splitlines()
    want = (GOLDEN / f"golden-{variant}.cir").read_text().splitlines()
    for i, (g, w) in enumerate(zip(got, want), start=1):
        assert g == w, f"line {i} differs:\n got:  {g}\n want: {w}"
    assert len(got) == len(want)


def test_physical_units_in_the_netlist():
    text = netlist_text(golden_circuit(), "sample", GOLDEN_HASH)
    # a = 0.5 per model volt with V0 = 0.5 V -> 1 per volt; I0 = 1e-6 A; tau = 1e-12*0.5/1e-6 = 5e-7 s
    assert "B_L0_E0 n1 n2 I=1e-06*V(g0)*tanh(V(n1) - 0.5*V(n2) + 0.125)" in text
    assert "V_G0 g0 0 PWL(0 1.0 2.499999375e-07 1.0 2.500000625e-07 0)" in text  # on until 0.5*tau
    assert ".tran 3.75e-09 3.75e-07 0 " in text
    assert "C_N1 n1 0 1e-12 IC={0.5*in1}" in text
    assert "1M" not in text.replace("1M ", "")  # no SPICE scale suffixes at all


def test_reverse_plays_layers_backwards_with_negated_currents():
    text = netlist_text(golden_circuit(), "reverse", GOLDEN_HASH)
    # layer 1 (duration 0.25) plays first in reverse: [0, 0.25*tau], then layer 0
    assert "B_L1_E0 n2 n1 I=-1e-06*V(g1)*tanh(2.0*V(n2) + V(n1) - 0.25)" in text
    assert "V_G1 g1 0 PWL(0 1.0 1.249999375e-07 1.0 1.250000625e-07 0)" in text
    assert "V_G0 g0 0 PWL(0 0 1.249999375e-07 0 1.250000625e-07 1.0)" in text
    assert "B_LOGP nlogp 0 V=V(nacc)" in text


def test_netlists_are_deterministic():
    # two models built independently from the same seed give the same text, byte for byte …
    first, second = tiny_model(layers=2, seed=3), tiny_model(layers=2, seed=3)
    for v in VARIANTS:
        assert netlist_text(first, v, "h") == netlist_text(second, v, "h")
    # … and the text is not equal by coarse rounding: one float64 ulp in one device's offset shows
    with torch.no_grad():
        c = second.layers[0].params["c"]
        c[0] = torch.nextafter(c[0], torch.tensor(math.inf, dtype=c.dtype))
    assert netlist_text(first, "sample", "h") != netlist_text(second, "sample", "h")


def test_erc_names_layer_and_edge_of_a_non_finite_parameter():
    m = golden_circuit()
    with torch.no_grad():
        m.layers[1].params["b"][1] = float("nan")
    with pytest.raises(ERCError, match=r"layer 1, edge 1 \(1->0\).*non-finite"):
        netlist_text(m, "sample")


def test_erc_rejects_self_loops():
    layer = LayerSpec.model_construct(duration=1.0, nodes=2, edges=((1, 2), (2, 2)), capacitance=1.0)
    spec = CircuitSpec.model_construct(**{**golden_circuit().spec.__dict__, "layers": (layer,)})
    m = KirchhoffNet(spec).double()
    with pytest.raises(ERCError, match=r"layer 0, edge 1 \(2->2\): self-loop"):
        netlist_text(m, "sample")


def test_erc_rejects_non_finite_constants():
    m = golden_circuit()
    spec = m.spec.model_copy(update={"hardware": m.spec.hardware.model_copy(update={"capacitance_f": float("inf")})})
    m.spec = spec
    with pytest.raises(ERCError, match="node 1: element C_N1 has a non-finite parameter"):
        netlist_text(m, "sample")


def test_erc_floating_node_and_duplicate_names():
    deck = build_deck(golden_circuit(), "logprob")
    assert violations(deck) == []
    sections = [(c, tuple(e for e in els if e.name != "C_N2")) for c, els in deck.sections]
    dup = Element("b_l0_e1", "BI", ("n1", "0"), "I=0", "layer 0, edge 9")
    sections.append(("extra", (dup,)))
    bad = deck.__class__(**{**deck.__dict__, "sections": tuple(sections)})
    found = violations(bad)
    assert any("node n2 has no capacitor or DC path to ground" in v for v in found)
    assert any(v.startswith("layer 0, edge 9: duplicate element name b_l0_e1") for v in found)
    with pytest.raises(ERCError):
        check(bad)


def _layers(*nodes, pad="zeros", caps=None):
    layers = []
    for i, n in enumerate(nodes):
        edges = tuple((k, k % n + 1) for k in range(1, n + 1)) if n > 1 else ((1, 0),)
        layers.append(LayerSpec(duration=0.5, nodes=n, edges=edges, capacitance=(caps or {}).get(i, 1.0)))
    spec = CircuitSpec(name="grow", device="diff-tanh", data_dim=2, layers=tuple(layers), pad_mode=pad)
    return KirchhoffNet(spec).double()


def test_node_plan_supports_growing_circuits():
    plan = node_plan(_layers(3, 4, 2))
    assert plan.count == 4 and plan.initial == (0, 1, None, None)
    assert node_plan(_layers(3, 3, pad="repeat")).initial == (0, 1, 0)
    assert "C_N4 n4 0" in netlist_text(_layers(2, 4), "sample")


@pytest.mark.parametrize("nodes, pad, caps, message", [
    ((4, 2, 4), "zeros", None, "layer 2 grows from 2 to 4 nodes after an earlier layer used 4"),
    ((2, 3), "repeat", None, "pad_mode 'repeat'"),
    ((2, 2), "zeros", {1: 2.0}, "layer 1, node 1: capacitance 2 differs"),
])
def test_node_plan_refuses_what_capacitors_cannot_do(nodes, pad, caps, message):
    with pytest.raises(UnsupportedCircuit, match=message):
        netlist_text(_layers(*nodes, pad=pad, caps=caps), "sample")


def test_log_density_variants_need_a_bijective_circuit():
    with pytest.raises(ValueError, match="log-density is not defined"):
        netlist_text(_layers(3, 2), "logprob")


if __name__ == "__main__" and "--update" in sys.argv:  # python tests/test_export_netlist.py --update
    for v in VARIANTS:
        (GOLDEN / f"golden-{v}.cir").write_text(netlist_text(golden_circuit(), v, GOLDEN_HASH))
    print("golden netlists rewritten; review the diff before committing")
