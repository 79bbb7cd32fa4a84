"""The cell as the model sees it (models.cell_law) and the weights→capacitors map (silicon.cell):
exact answers, no simulator."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

from models.cell_law import (
    CellLaw,
    capacitance_matrix,
    floating_gate_matrix,
    gate_loads,
    project,
    violations,
)
from models.circuit import autograd_divergence
from models.config import CircuitSpec, HardwareConstants, LayerSpec
from models.flow import KirchhoffNet
from models.topology import fully_connected
from silicon.cell import DESIGNS, CellCalibration, gain_limit, realise, recover
from silicon.characterize import cell_law
from silicon.store import load

LAW = CellLaw(source="test", gain_dst=0.99, gain_src=1.02, offset_dst=2e-3, offset_src=-1e-3, offset_parked=3e-4,
              conductance_dst=3.5e-4, conductance_src=3e-4, conductance_parked=1.2e-4, gate_capacitance=0.025,
              output_capacitance=3e-4, coupling_per_gain=0.9, gain_limits=((0.98, 0.1), (0.92, 0.17)))
CAL = CellCalibration(slope_per_v=11.1, input_offset=0.01, gate_parasitic_f=40e-15)


def cell_model(law: CellLaw = LAW, seed: int = 0, layers: int = 2, repeat: int = 3) -> KirchhoffNet:
    layer = LayerSpec(duration=0.5, nodes=2, edges=tuple(fully_connected(2, include_ground=True, repeat=repeat)))
    spec = CircuitSpec(name="cellnet", device="affine-tanh", data_dim=2, layers=(layer,) * layers,
                       hardware=HardwareConstants(capacitance_f=1e-11, voltage_scale_v=0.1, current_scale_a=1e-6),
                       cell=law)
    model = KirchhoffNet(spec, init_scale=1.0, seed=seed).to(torch.float64)
    model.make_realisable()
    return model


def test_closed_form_divergence_matches_autograd_under_the_cell_law():
    model = cell_model()
    v = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for op in model.operators():
        _, div = op.rhs_and_divergence(v)
        assert torch.allclose(div, autograd_divergence(op, v), atol=1e-12, rtol=0)


def test_capacitance_matrix_is_charge_conservation_on_each_gate():
    # one device 1 -> 2 with a, b > 0: both nodes couple onto G+, whose other capacitors go to AC ground
    layer = LayerSpec(duration=1.0, nodes=2, edges=((1, 2),))
    spec = CircuitSpec(name="one", device="affine-tanh", data_dim=2, layers=(layer,), cell=LAW)
    model = KirchhoffNet(spec, [{"a": torch.tensor([0.3]), "b": torch.tensor([0.5]), "c": torch.tensor([0.0])}])
    model = model.to(torch.float64)
    c = capacitance_matrix(LAW, [(torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))],
                           [(model.layers[0].src, model.layers[0].dst)], torch.ones(2, dtype=torch.float64))
    k, u = LAW.gate_capacitance, LAW.coupling_per_gain
    c1, c2 = k * u * 0.3, k * u * 0.5  # coupling capacitors (units of C); the gate totals k
    # a step dV on node 1 moves the gate by c1/k·dV: node 1 takes c1(1 − c1/k) + its own, node 2 loses c1·c2/k
    expected = torch.tensor([[1 + 2 * LAW.output_capacitance * 0 + c1 * (1 - c1 / k), -c1 * c2 / k],
                             [-c1 * c2 / k, 1 + c2 * (1 - c2 / k)]], dtype=torch.float64)
    expected += torch.diag(torch.tensor([LAW.output_capacitance, LAW.output_capacitance], dtype=torch.float64))
    assert torch.allclose(c, expected, atol=1e-15, rtol=0)
    # a floating gate whose couplings are everything on it cannot hold a difference: C becomes singular
    singular = floating_gate_matrix(torch.zeros(2, dtype=torch.float64), torch.tensor([[1.0, 1.0]],
                                    dtype=torch.float64), 2.0)
    assert abs(torch.linalg.det(singular)) < 1e-15


def test_projection_puts_every_device_inside_the_limits_and_keeps_feasible_ones():
    model = cell_model(seed=3)
    for layer in model.layers:
        a, b, c = layer.params["a"], layer.params["b"], layer.params["c"]
        assert len(violations(LAW, a, b, c, layer.src, layer.dst)) == 0
    # a device inside the limits is not touched
    a, b, c = torch.tensor([0.2, 3.0]), torch.tensor([-0.1, 2.0]), torch.tensor([0.1, 0.0])
    src, dst = torch.tensor([1, 1]), torch.tensor([2, 2])
    project(LAW, a, b, c, src, dst)
    assert (a[0].item(), b[0].item()) == (pytest.approx(0.2), pytest.approx(-0.1))
    plus, minus = gate_loads(a, b, src, dst)
    assert plus[1].item() == pytest.approx(0.92)  # 3 + 2 on one gate, scaled to the window limit at c = 0


@pytest.mark.parametrize("a,b,c", list(itertools.product((-0.4, 0.0, 0.35), (-0.3, 0.3), (-1.2, 0.0, 0.8))))
def test_realise_then_recover_gives_the_parameters_back(a, b, c):
    design = DESIGNS["sky130"]
    el = realise(a, b, c, 1, 2, design, CAL)
    assert not el.problems
    assert el.plus.total == pytest.approx(design.gate_cap_f) and el.minus.total == pytest.approx(design.gate_cap_f)
    assert recover(el, design, CAL) == pytest.approx((a, b, c), abs=1e-12)


def test_realise_reports_what_it_cannot_realise_and_drops_ground_terms():
    design = DESIGNS["sky130"]
    el = realise(5.0, 0.0, 0.0, 1, 0, design, CAL)
    assert el.problems and any("window" in p for p in el.problems)
    assert el.dst_output is False and el.src_output is True
    assert el.plus.coupled <= design.gate_cap_f * (1 + 1e-12)
    ground = realise(0.7, 0.3, 0.0, 0, 2, design, CAL)  # the source is ground: its term drops out
    assert ground.plus.src == 0 and ground.minus.src == 0 and ground.plus.dst > 0
    assert gain_limit(design, CAL, 0.0) > gain_limit(design, CAL, 2.0) > 0


def test_shipped_law_is_the_datasheet_rendered():
    shipped = CellLaw(**json.loads((load("sky130", "tt", 27.0).path / "law.json").read_text()))
    assert shipped == cell_law(load("sky130", "tt", 27.0).sheet)
