"""Import of circuits trained with the published KirchhoffNet code (github.com/zhengqigao/kirchhoffnet).

A results folder of that code holds ``config.yaml`` (the run's settings) and ``model.pth``
(a torch ``state_dict``). What this module reads, and how it maps onto our circuit:

- ``network.net_struct``: one connection builder per layer (``models.reference_topology``);
  a layer's node count is the largest node index of its edges, as in the published code.
- ``network.model``: the device class (table :data:`DEVICE_CLASSES`); layer ``l``'s
  parameters are ``circuit.layer_list.<l>.model.param`` of shape ``[rows, E]``, column e
  belonging to edge e of the builder's list.
- ``simulation.t_end``: the layer boundaries (model time); layer l lasts t_end[l+1] − t_end[l].
  Capacitances are 1 (the published ODE is dv/dt = KCL currents).
- ``simulation.method``/``tol``: the solver the model was trained with; it is the serving
  solver until ``knet calibrate`` (run on import by ``knet import-reference``) replaces it.
- ``test_bench``: for the generation and density benches the published training scripts
  ignore ``network.encoder``/``projector``/``fill``/``residual`` (they build the flow without
  them), so those keys are recorded as ignored; for any other bench a non-identity encoder,
  projector or residual is refused.

Anything else is refused with :class:`ReferenceFormatError` naming the YAML or state_dict key;
nothing is approximated. The result is a :class:`ReferenceCircuit` (our spec + raw params).
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor

from . import reference_topology
from .config import ADAPTIVE_METHODS, CircuitSpec, ImportRecord, LayerSpec, SolverConfig
from .errors import UserInputError
from .flow import KirchhoffNet

FORMAT = "kirchhoffnet-reference"
CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.pth"
PARAM_KEY = "circuit.layer_list.{}.model.param"
# benches trained by the published main_gen.py / main_den.py, which build the flow with no
# encoder, projector, fill or residual whatever config.yaml says
GENERATION_BENCHES = ("twomoon", "circle", "swissroll", "2spirals", "pinwheel", "8gaussians", "gauss", "genmnist")
DENSITY_BENCHES = ("potential1", "potential2")
FLOW_IGNORED_KEYS = ("encoder", "projector", "fill", "residual")
TORCH_LEAKY_SLOPE = 0.01  # torch.nn.functional.leaky_relu's default negative slope


class ReferenceFormatError(UserInputError):
    """A results folder this importer does not support; the message names the key at fault."""


@dataclass(frozen=True)
class DeviceMapping:
    """How one published device class maps onto our device families.

    ``rows`` is the first dimension of its ``[rows, E]`` parameter tensor; ``convert`` maps
    that tensor (float64) to our raw parameters, each ``(E,)``; ``formula`` is the published
    current for the docs and messages.
    """

    family: str
    rows: int
    convert: Callable[[Tensor], dict[str, Tensor]]
    formula: str


def _affine(p: Tensor) -> dict[str, Tensor]:
    return {"a": p[0], "b": p[1], "c": p[2]}


def _diff(p: Tensor) -> dict[str, Tensor]:
    return {"a": p[1], "c": p[0]}  # act(p1·(v_s − v_d) + p0): gain in row 1, offset in row 0


DEVICE_CLASSES: dict[str, DeviceMapping] = {
    "ShiftTanh2": DeviceMapping("affine-tanh", 3, _affine, "tanh(p0·v_s + p1·v_d + p2)"),
    "ShiftRelu2": DeviceMapping("affine-relu", 3, _affine, "relu(p0·v_s + p1·v_d + p2)"),
    "ShiftLeakyRelu2": DeviceMapping("affine-leaky_relu", 3, _affine, "leaky_relu(p0·v_s + p1·v_d + p2), slope 0.01"),
    "ShiftTanh1": DeviceMapping("diff-tanh", 3, _diff, "tanh(p1·(v_s − v_d) + p0), p2 unused"),
    "Conductance": DeviceMapping("conductance", 3, lambda p: {"g": p[0]}, "p0·(v_s − v_d), p1 and p2 unused"),
}
# the generic ``Device(negation, activation)`` class: activation name → our activation
DEVICE_ACTIVATIONS = {"tanh": "tanh", "relu": "relu", "leaky_relu": "leaky_relu", None: "identity"}
REFUSED_DEVICE_CLASSES = {
    "ShiftRelu1": "its current p1·relu(v_s − v_d − p0) scales outside the activation",
    "ShiftLeakyRelu1": "its current p1·leaky_relu(v_s − v_d − p0) scales outside the activation",
}


def device_mapping(model_cfg: Any) -> DeviceMapping:
    """The mapping for ``network.model`` (``{"name", "args"}``); ReferenceFormatError if unsupported."""
    if not isinstance(model_cfg, dict) or "name" not in model_cfg:
        raise ReferenceFormatError("network.model: expected a mapping with 'name' and 'args'")
    name, args = model_cfg["name"], model_cfg.get("args") or {}
    if not isinstance(args, dict):
        raise ReferenceFormatError("network.model.args: expected a mapping")
    if name in REFUSED_DEVICE_CLASSES:
        raise ReferenceFormatError(f"network.model.name: device class {name!r} is not supported: "
                                   f"{REFUSED_DEVICE_CLASSES[name]}, which no device family here has")
    if name in DEVICE_CLASSES:
        if args:
            raise ReferenceFormatError(f"network.model.args: {name} takes no arguments, got {sorted(args)}")
        return DEVICE_CLASSES[name]
    if name == "Device":
        unknown = set(args) - {"negation", "activation"}
        if unknown:
            raise ReferenceFormatError(f"network.model.args.{sorted(unknown)[0]}: Device takes negation and activation")
        negation, act = args.get("negation"), args.get("activation")
        if not isinstance(negation, bool):
            raise ReferenceFormatError(f"network.model.args.negation: expected true or false, got {negation!r}")
        if act not in DEVICE_ACTIVATIONS:
            raise ReferenceFormatError(f"network.model.args.activation: unsupported activation {act!r}; "
                                       f"supported: tanh, relu, leaky_relu, null (identity)")
        ours = DEVICE_ACTIVATIONS[act]
        if negation:
            return DeviceMapping(f"diff-{ours}", 2, _diff, f"{act or 'identity'}(p1·(v_s − v_d) + p0)")
        return DeviceMapping(f"affine-{ours}", 3, _affine, f"{act or 'identity'}(p0·v_s + p1·v_d + p2)")
    supported = ", ".join([*DEVICE_CLASSES, "Device"])
    raise ReferenceFormatError(f"network.model.name: unknown device class {name!r}; supported: {supported}")


@dataclass
class ReferenceCircuit:
    """An imported circuit: ``spec`` (with ``imported_from`` set) and raw parameters
    ``params[l][name]``, float64 ``(edges,)`` in the spec's edge order."""

    spec: CircuitSpec
    params: list[dict[str, Tensor]]

    def model(self, dtype: torch.dtype = torch.float64) -> KirchhoffNet:
        model = KirchhoffNet(self.spec, [{k: v.clone() for k, v in p.items()} for p in self.params])
        model.requires_grad_(False)
        return model.to(dtype=dtype)


def read_folder(folder: str | Path, name: str | None = None) -> ReferenceCircuit:
    """Read a results folder (``config.yaml`` + ``model.pth``); see the module doc.

    ``model.pth`` is loaded with ``weights_only=True``. ``name`` defaults to the
    ``test_bench`` (so ``knet eval`` finds the task), else the folder's name.
    """
    import yaml

    d = Path(folder)
    if not d.is_dir():
        raise ReferenceFormatError(f"{d}: not a directory")
    cfg_path, weights_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise ReferenceFormatError(f"{d}: missing {path.name} "
                                       f"(a results folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg_bytes, weights_bytes = cfg_path.read_bytes(), weights_path.read_bytes()
    try:
        config = yaml.safe_load(cfg_bytes)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or err
        raise ReferenceFormatError(f"{cfg_path}: not valid YAML ({where}{problem})") from None
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises pickle/zip/runtime errors for foreign or corrupt files
        raise ReferenceFormatError(f"{weights_path}: not a torch state_dict that loads with weights_only=True "
                                   "(corrupt, truncated, or a pickle that holds code)") from None
    return convert(config, state, name=name or _default_name(config, d), source=str(folder),
                   config_sha256=hashlib.sha256(cfg_bytes).hexdigest(),
                   weights_sha256=hashlib.sha256(weights_bytes).hexdigest())


def convert(config: Any, state: Any, name: str, source: str = "", config_sha256: str = "",
            weights_sha256: str = "") -> ReferenceCircuit:
    """Map a parsed ``config.yaml`` and a ``state_dict`` onto our circuit (module doc)."""
    if not isinstance(config, dict):
        raise ReferenceFormatError(f"{CONFIG_NAME}: expected a mapping at the top level")
    network = _section(config, "network")
    simulation = _section(config, "simulation")
    bench = config.get("test_bench")
    ignored = _check_extras(network, bench)
    device = device_mapping(network.get("model"))
    structs = network.get("net_struct")
    if not isinstance(structs, list) or not structs:
        raise ReferenceFormatError("network.net_struct: expected a non-empty list of layers")
    durations = _durations(simulation.get("t_end"), len(structs))
    solver, trained = _solver(simulation)
    if not isinstance(state, dict):
        raise ReferenceFormatError(f"{WEIGHTS_NAME}: expected a state_dict (a mapping of tensors)")
    expected_keys = {PARAM_KEY.format(i) for i in range(len(structs))}
    for key in state:
        if key not in expected_keys:
            raise ReferenceFormatError(f"{WEIGHTS_NAME}: state_dict key {key!r} is not supported "
                                       f"(a {len(structs)}-layer circuit holds only {PARAM_KEY.format('<l>')}, "
                                       f"l = 0..{len(structs) - 1})")
    layers, params = [], []
    for i, struct in enumerate(structs):
        where = f"network.net_struct[{i}]"
        if not isinstance(struct, dict):
            raise ReferenceFormatError(f"{where}: expected a mapping with 'name' and 'args'")
        try:
            edges = reference_topology.build(struct.get("name"), struct.get("args"), where)
        except ValueError as err:
            raise ReferenceFormatError(str(err)) from None
        nodes = max(max(e) for e in edges)
        if layers and nodes != layers[0].nodes:
            raise ReferenceFormatError(f"{where}: layer has {nodes} nodes but layer 0 has {layers[0].nodes}; "
                                       "the published flows keep the node count fixed")
        params.append(device.convert(_param_tensor(state, i, device.rows, len(edges), where)))
        layers.append(LayerSpec(duration=durations[i], nodes=nodes, edges=tuple(edges)))
    record = ImportRecord(format=FORMAT, source=source, config_sha256=config_sha256, weights_sha256=weights_sha256,
                          device_class=str(network["model"]["name"]), test_bench=None if bench is None else str(bench),
                          trained_solver=trained, ignored_keys=tuple(ignored))
    leaky = {"leaky_slope": TORCH_LEAKY_SLOPE} if device.family.endswith("leaky_relu") else {}
    try:
        spec = CircuitSpec(name=name, device=device.family, data_dim=layers[0].nodes, layers=tuple(layers),
                           solver=solver, imported_from=record, **leaky)
    except ValidationError as err:
        e = err.errors()[0]
        raise ReferenceFormatError(f"{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
    return ReferenceCircuit(spec, params)


def _section(config: dict, key: str) -> dict:
    value = config.get(key)
    if not isinstance(value, dict):
        raise ReferenceFormatError(f"{key}: missing or not a mapping")
    return value


def _check_extras(network: dict, bench: Any) -> list[str]:
    """The keys the published flow scripts ignore (generation/density benches), else refuse
    any non-identity encoder, projector or residual."""
    present = [k for k in FLOW_IGNORED_KEYS if network.get(k) not in (None, "none")]
    if bench in GENERATION_BENCHES + DENSITY_BENCHES:
        return [f"network.{k}" for k in present]
    for key in present:
        if key == "fill":
            if network["fill"] not in ("zeros", "zero", "repeat"):
                raise ReferenceFormatError(f"network.fill: unsupported fill {network['fill']!r}")
            continue  # fill only acts when node counts change, which is refused per layer
        kind = {"encoder": "encoder", "projector": "projector", "residual": "residual connection"}[key]
        raise ReferenceFormatError(f"network.{key}: {network[key]!r} is not supported: only the flows of the "
                                   f"generation and density benches import (test_bench {bench!r}), and a {kind} "
                                   "(e.g. a classification head) is not part of a circuit")
    return []


def _durations(t_end: Any, n_layers: int) -> list[float]:
    if not isinstance(t_end, list) or len(t_end) != n_layers + 1:
        raise ReferenceFormatError(f"simulation.t_end: expected {n_layers + 1} layer boundaries for "
                                   f"{n_layers} layers, got {t_end!r}")
    try:
        bounds = [float(t) for t in t_end]
    except (TypeError, ValueError):
        raise ReferenceFormatError(f"simulation.t_end: boundaries must be numbers, got {t_end!r}") from None
    durations = [b - a for a, b in zip(bounds, bounds[1:])]
    for i, dt in enumerate(durations):
        if not (math.isfinite(dt) and dt > 0):
            raise ReferenceFormatError(f"simulation.t_end[{i + 1}]: boundaries must increase (layer {i} lasts {dt})")
    return durations


def _solver(simulation: dict) -> tuple[SolverConfig, str]:
    """(our serving solver until calibration, the published solver in words)."""
    method = simulation.get("method", "dopri5")
    try:
        tol = float(simulation.get("tol", 1e-4))
    except (TypeError, ValueError):
        raise ReferenceFormatError(f"simulation.tol: expected a number, got {simulation.get('tol')!r}") from None
    if not 0 < tol < 1:
        raise ReferenceFormatError(f"simulation.tol: expected a tolerance in (0, 1), got {tol}")
    trained = f"{method} rtol=atol={tol:g}"
    if method in ADAPTIVE_METHODS:
        return SolverConfig(method=method, rtol=tol, atol=tol), trained
    return SolverConfig(), trained  # fixed-step training settings do not carry over; calibration sets RK4


def _param_tensor(state: dict, layer: int, rows: int, n_edges: int, where: str) -> Tensor:
    key = PARAM_KEY.format(layer)
    if key not in state:
        raise ReferenceFormatError(f"{WEIGHTS_NAME}: missing state_dict key {key!r} for {where}")
    t = state[key]
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise ReferenceFormatError(f"{WEIGHTS_NAME}: {key} is not a floating-point tensor")
    if tuple(t.shape) != (rows, n_edges):
        raise ReferenceFormatError(f"{WEIGHTS_NAME}: {key} has shape {list(t.shape)}, but {where} and the "
                                   f"device class give [{rows}, {n_edges}]")
    bad = (~torch.isfinite(t)).nonzero()
    if len(bad):
        r, e = (int(x) for x in bad[0])
        raise ReferenceFormatError(f"{WEIGHTS_NAME}: {key}[{r}, {e}] is not finite")
    return t.detach().to(torch.float64)


def _default_name(config: Any, folder: Path) -> str:
    bench = config.get("test_bench") if isinstance(config, dict) else None
    for candidate in (bench, folder.resolve().name):
        if isinstance(candidate, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", candidate):
            return candidate
    return "imported"
