"""The measured chip figures of a cell-realised model: ``transistor.json`` beside its checkpoint.

Written by ``knet simulate MODEL --pdk P --write`` from a transistor-level run
(``silicon.simulate``), read by the bundle manifest, ``GET /models/{name}``, the model page
and the load-test report, which show it beside the behavioural projection
(``models.hardware``). Latency is the schedule the run used (load, every layer window, read
delay; the ADC conversion itself is not simulated), energy the mean ∫V·I of every source over
the whole run, area Σ W·L of every transistor times the layout factor plus every capacitor at
the PDK's MIM density.
"""
from __future__ import annotations

import json
from pathlib import Path

from models.checkpoint import TRANSISTOR_DECK_FILE as DECK_FILE
from models.checkpoint import TRANSISTOR_FILE as FIGURES_FILE
from models.flow import KirchhoffNet
from models.hardware import energy_per_sample_j, projected_latency_s

from .cell import CellDesign
from .characterize import Datasheet
from .deck import TransistorDeck
from .pdk import get_pdk
from .simulate import TransistorReport

FORMAT = "kirchhoffnet-transistor/1"


def chip_area_um2(deck: TransistorDeck, design: CellDesign) -> dict[str, float]:
    """Area of the chip's analog core, µm²: cells (transistors × layout factor, gate
    capacitors at the MIM density) and node capacitors; the bias network is one cell's worth."""
    density = get_pdk(design.pdk).mim_f_per_um2 or float("nan")
    transistors = sum(design.transistor_area_um2(r.elements.outputs) for r in deck.devices)
    gate_caps = sum(r.elements.capacitance_f for r in deck.devices) / density
    nodes = deck.data_dim * design.node_cap_f / density
    cells = design.layout_factor * transistors + gate_caps
    return {"cells": cells, "node_capacitors": nodes, "total": cells + nodes,
            "transistor_wl": transistors, "layout_factor": design.layout_factor}


def figures(report: TransistorReport, model: KirchhoffNet, deck: TransistorDeck, sheet: Datasheet,
            design: CellDesign) -> dict:
    """The document ``transistor.json`` holds."""
    s = report.summary()
    return {
        "format": FORMAT, "model": model.spec.name, "pdk": report.pdk, "corner": report.corner,
        "temp_c": report.temp_c, "cell": design.name, "transistors": report.transistors, "devices": report.devices,
        "samples": s["samples"], "finished": s["finished"],
        "latency_s": report.schedule["read_s"], "evolution_s": report.schedule["end_s"] - report.schedule["start_s"],
        "energy_per_sample_j": s.get("energy_per_sample_j"), "evolution_energy_j": s.get("evolution_energy_j"),
        "area_um2": chip_area_um2(deck, design),
        "supply_v": design.vdd_v, "i0_a": design.i0_a, "v0_v": design.v0_v, "node_cap_f": design.node_cap_f,
        "error_model_volts": {k.removeprefix("error_vs_"): v for k, v in s.items() if k.startswith("error_vs_")},
        "problems": report.problems,
        "spice_cpu_s_per_sample": s.get("spice_cpu_s_per_sample"),
        "behavioural_projection": {"latency_s": projected_latency_s(model.spec),
                                   "energy_per_sample_j": energy_per_sample_j(model.spec)},
        "characterization": {"law_rms_pct": sheet.law.rms_pct, "law_max_pct": sheet.law.max_pct,
                             "bandwidth_hz": sheet.bandwidth_hz},
    }


def write(directory: Path, doc: dict, deck_text: str) -> list[Path]:
    """``transistor.json`` and the exported deck (inputs as ``.param``) in ``directory``."""
    paths = [directory / FIGURES_FILE, directory / DECK_FILE]
    paths[0].write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    paths[1].write_text(deck_text)
    return paths
