"""Parameter artifacts: the device table in JSON and CSV, and the tensors in safetensors.

Every row is one device: layer, its time window in seconds, edge id, SPICE element name,
source and destination node (0 = ground), device family and its parameters in physical
units (C, V0, I0 from the model's hardware constants):

- ``affine-<act>``: I = I0·act(a·V_src + b·V_dst + c); columns ``a_per_v``, ``b_per_v``
  (1/V), ``c`` (dimensionless), ``i0_a`` (A);
- ``diff-<act>``:   I = I0·act(a·(V_src − V_dst) + c); ``a_per_v``, ``c``, ``i0_a``;
- ``conductance``:  I = G·(V_src − V_dst); ``g_s`` (siemens).

Bytes are deterministic: floats as shortest round-trip decimals, fixed key order, and the
safetensors metadata in a single key (safetensors writes multiple metadata keys in a
per-process random order).
"""
from __future__ import annotations

import csv
import io
import json

import torch
from safetensors.torch import save as st_save

from models.flow import KirchhoffNet
from models.hardware import layer_windows_s, settle_time_s

from .netlist import FORMAT_VERSION, node_plan, physical_params

UNITS = {
    "time": "seconds", "voltage": "volts", "current": "amperes", "capacitance": "farads",
    "a_per_v": "1/volt", "b_per_v": "1/volt", "c": "dimensionless", "i0_a": "amperes", "g_s": "siemens",
}


def columns(device: str) -> tuple[str, ...]:
    """Parameter columns of a device family."""
    if device == "conductance":
        return ("g_s",)
    if device.startswith("diff-"):
        return ("a_per_v", "c", "i0_a")
    return ("a_per_v", "b_per_v", "c", "i0_a")


def formula(device: str) -> str:
    act = "" if device == "conductance" else device.split("-", 1)[1]
    if device == "conductance":
        return "I = g_s*(V_src - V_dst)"
    if device.startswith("diff-"):
        return f"I = i0_a*{act}(a_per_v*(V_src - V_dst) + c)"
    return f"I = i0_a*{act}(a_per_v*V_src + b_per_v*V_dst + c)"


def _physical(model: KirchhoffNet, layer: int) -> dict[str, list[float]]:
    hw = model.spec.hardware
    raw = {k: p.detach().to("cpu", torch.float64) for k, p in model.layers[layer].params.items()}
    v0, i0 = hw.voltage_scale_v, hw.current_scale_a
    s = physical_params(model)[layer]["s"]  # per-device I0 factor: 1 except on an emulated chip (models.chip)
    if model.spec.device == "conductance":
        return {"g_s": (raw["g"] * s * (i0 / v0)).tolist()}
    out = {"a_per_v": (raw["a"] / v0).tolist()}
    if "b" in raw:
        out["b_per_v"] = (raw["b"] / v0).tolist()
    out["c"] = raw["c"].tolist()
    out["i0_a"] = (i0 * s).tolist()
    return out


def rows(model: KirchhoffNet) -> list[dict]:
    """One dict per device, in layer then edge order (the table's rows)."""
    spec = model.spec
    out = []
    for l, (layer, (t0_s, t1_s)) in enumerate(zip(spec.layers, layer_windows_s(spec))):
        phys = _physical(model, l)
        for e, (s, d) in enumerate(layer.edges):
            row = {"layer": l, "t_start_s": t0_s, "t_end_s": t1_s, "edge": e, "element": f"B_L{l}_E{e}",
                   "source": s, "destination": d, "device": spec.device}
            row.update({k: phys[k][e] for k in columns(spec.device)})
            out.append(row)
    return out


def constants(model: KirchhoffNet) -> dict:
    hw = model.spec.hardware
    return {"capacitance_f": hw.capacitance_f, "voltage_scale_v": hw.voltage_scale_v,
            "current_scale_a": hw.current_scale_a, "tau_s": hw.tau_s, "dac_setup_s": hw.dac_setup_s,
            "adc_readout_s": hw.adc_readout_s}


def params_json(model: KirchhoffNet, content_hash: str, chip: dict | None = None) -> bytes:
    """The parameter table as JSON (UTF-8, sorted structure, trailing newline); ``chip``:
    the emulated chip instance the table describes (a ``ChipConfig`` dump), if any."""
    spec = model.spec
    plan = node_plan(model)
    table = rows(model)
    doc = {
        "format": f"kirchhoffnet-params/{FORMAT_VERSION}",
        "model": spec.name, "version": spec.version, "content_sha256": content_hash,
        **({} if chip is None else {"chip": chip}),
        "device": spec.device, "current_formula": formula(spec.device), "leaky_slope": spec.leaky_slope,
        "constants": constants(model), "units": UNITS,
        "data_dim": spec.data_dim, "end_time_s": settle_time_s(spec),
        "nodes": [{"node": k + 1, "capacitance_f": c * spec.hardware.capacitance_f}
                  for k, c in enumerate(plan.caps)],
        "layers": [
            {"layer": l, "t_start_s": t0_s, "t_end_s": t1_s,
             "nodes": layer.nodes,
             "devices": [{k: v for k, v in r.items() if k not in ("layer", "t_start_s", "t_end_s", "device")}
                         for r in table if r["layer"] == l]}
            for l, (layer, (t0_s, t1_s)) in enumerate(zip(spec.layers, layer_windows_s(spec)))
        ],
    }
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode()


def params_csv(model: KirchhoffNet) -> bytes:
    """The parameter table as CSV, one device per row (``\\n`` line ends)."""
    table = rows(model)
    buf = io.StringIO()
    head = ["layer", "t_start_s", "t_end_s", "edge", "element", "source", "destination", "device",
            *columns(model.spec.device)]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in table:
        w.writerow([repr(r[k]) if isinstance(r[k], float) else r[k] for k in head])
    return buf.getvalue().encode()


def params_tensors(model: KirchhoffNet, content_hash: str) -> bytes:
    """safetensors: per layer ``layer{l}.edges`` ``(edges, 2)`` int64 (source, destination),
    the raw model-unit parameters ``layer{l}.raw.{name}`` ``(edges,)`` as stored, and the
    physical ones ``layer{l}.{column}`` ``(edges,)`` float64; metadata key ``kirchhoffnet``
    (JSON: model, version, hash, constants, units)."""
    tensors: dict[str, torch.Tensor] = {}
    for l, layer in enumerate(model.spec.layers):
        tensors[f"layer{l}.edges"] = torch.tensor(layer.edges, dtype=torch.int64).reshape(-1, 2)
        for k, p in model.layers[l].params.items():
            tensors[f"layer{l}.raw.{k}"] = p.detach().cpu().contiguous().clone()
        for k, values in _physical(model, l).items():
            tensors[f"layer{l}.{k}"] = torch.tensor(values, dtype=torch.float64)
    meta = {"model": model.spec.name, "version": model.spec.version, "content_sha256": content_hash,
            "device": model.spec.device, "constants": constants(model), "units": UNITS}
    return st_save(tensors, metadata={"kirchhoffnet": json.dumps(meta, sort_keys=True)})
