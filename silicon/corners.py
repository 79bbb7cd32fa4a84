"""A cell-realised model at another process corner or temperature (``knet cells corners``).

The chip is built once: its capacitors realise the weights with the calibration of the
characterization the model was trained on (k, z0 and the gate parasitic at, say, tt/27 °C).
At another condition X the same capacitors give

    z_X = ρ·(a·v_s + b·v_d + c − z0) + z0_X,   ρ = (k_X / k) · (C_gt / C_gt,X)

(the pair's slope and the gate's divider both move), and the outputs follow X's law (gains,
offsets, conductances, gate capacitance). :func:`model_at` builds that circuit as a plain
cell-law model, so its exact log-density is the quality at X. With the *trim*, V0 and the
offset step come from one PTAT reference (trimmed once per die at a corner), so k·V0 and
k·V_step keep their design value: ρ = C_gt / C_gt,X (only the gate parasitic's change remains).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from models.flow import KirchhoffNet

from .characterize import Datasheet, cell_law


def gain_ratio(own: Datasheet, here: Datasheet, trim: bool) -> float:
    """ρ: how much the realised gains move from ``own``'s condition to ``here``'s."""
    divider = own.calibration().gate_parasitic_f + own.design["gate_cap_f"]
    divider /= here.calibration().gate_parasitic_f + here.design["gate_cap_f"]
    return divider if trim else divider * here.law.slope_per_v / own.law.slope_per_v


def model_at(model: KirchhoffNet, own: Datasheet, here: Datasheet, trim: bool = False) -> KirchhoffNet:
    """``model``'s chip (realised at ``own``'s condition) as it behaves at ``here``'s."""
    rho = gain_ratio(own, here, trim)
    z0, z0_here = own.law.input_offset, here.law.input_offset
    out = copy.deepcopy(model)
    out.spec = model.spec.model_copy(update={"cell": cell_law(here)})
    with torch.no_grad():
        for layer in out.layers:
            for name in ("a", "b"):
                if name in layer.params:
                    layer.params[name].mul_(rho)
            layer.params["c"].copy_(rho * (layer.params["c"] - z0) + z0_here)
    return out


@dataclass(frozen=True)
class CornerRow:
    """One condition: NLL (nats, test set) without and with the trim, ρ, and the share of test
    trajectories whose nodes leave the cell's node range there."""

    corner: str
    temp_c: float
    gain_ratio: float
    nll: float
    nll_se: float
    nll_trimmed: float
    nll_trimmed_se: float
    outside_node_range: float


def corner_row(model: KirchhoffNet, task: str, own: Datasheet, here: Datasheet, n: int = 8192) -> CornerRow:
    """NLL of ``model``'s chip at ``here``'s condition, without and with the trim."""
    from models.data import get_task
    from models.evaluate import evaluate

    from .operating import operating_range
    rows = {}
    for trim in (False, True):
        m = model_at(model, own, here, trim)
        rows[trim] = evaluate(m, get_task(task), n)
    lo, hi = here.law.node_range_model_volts
    rng = operating_range(model_at(model, own, here, False), task, min(n, 2048))
    outside = rng.outside(lo, hi)
    return CornerRow(here.corner, here.temp_c, gain_ratio(own, here, False), rows[False]["nll"],
                     rows[False]["nll_se"], rows[True]["nll"], rows[True]["nll_se"], outside)
