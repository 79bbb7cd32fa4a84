"""Checkpoints: a directory holding ``circuit.json`` (the :class:`CircuitSpec`) and
``weights.safetensors`` (raw device parameters, keys ``layer{L}.{name}``, shape ``(edges,)``).

Writes are atomic (temp file + rename) so a crash never leaves a half-written checkpoint.
Also the importer for circuits designed elsewhere (:func:`circuit_from_json`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import CircuitSpec, LayerSpec
from .devices import DeviceFamily
from .errors import UserInputError
from .flow import KirchhoffNet

CIRCUIT_FILE = "circuit.json"
WEIGHTS_FILE = "weights.safetensors"
TRAIN_STATE_FILE = "train_state.pt"
EVAL_FILE = "eval.json"
# a cell-realised model's chip measured at transistor level, and its deck (silicon.figures)
TRANSISTOR_FILE, TRANSISTOR_DECK_FILE = "transistor.json", "transistor.cir"
CONFIG_FILE = "config.yaml"


class CheckpointError(UserInputError):
    """A checkpoint or circuit file that cannot be loaded; the message says why and where."""


BeforeRename = Callable[[Path, Path], None]
"""Fault-injection hook of :func:`atomic_write`: called with ``(final path, temporary path)``
once the temporary file is complete and fsynced, just before it is renamed into place: the
one moment at which a crash leaves a temporary file and the previous version of the file.
Tests use it to stop (and then SIGKILL) a writer at exactly that point; ``None`` in normal use."""


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path: Path, data: bytes, before_rename: BeforeRename | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync it,
    rename it over ``path`` and fsync the directory, so ``path`` holds either the old or the
    new bytes whatever happens. ``before_rename``: see :data:`BeforeRename`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; a checkpoint is read by other users (a container, a service account)
        os.chmod(tmp, 0o644)
        if before_rename is not None:
            before_rename(path, Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(directory: str | Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`atomic_write` of any of ``names``
    (default: the checkpoint's files) left in ``directory`` (a killed process cannot clean up
    after itself); returns them."""
    names = names if names is not None else (WEIGHTS_FILE, CIRCUIT_FILE, TRAIN_STATE_FILE)
    d = Path(directory)
    stale = [t for name in names for t in d.glob(_temp_prefix(d / name) + "*") if t.is_file()]
    for t in stale:
        t.unlink(missing_ok=True)
    return stale


def weights_bytes(model: KirchhoffNet) -> bytes:
    tensors = {f"layer{i}.{k}": v.contiguous() for i, p in enumerate(model.raw_params()) for k, v in p.items()}
    # one metadata key: safetensors writes a multi-key map in per-process hash order, which
    # would make the bytes (and the content hash) of the same model differ between runs
    meta = json.dumps({"name": model.spec.name, "version": model.spec.version}, sort_keys=True)
    return st_save(tensors, metadata={"knet": meta})


def circuit_bytes(spec: CircuitSpec) -> bytes:
    return (spec.model_dump_json(indent=1) + "\n").encode()


def content_hash(directory: str | Path) -> str:
    """SHA-256 (hex) over the architecture and weights files: the model's identity."""
    d = Path(directory)
    h = hashlib.sha256()
    for name in (CIRCUIT_FILE, WEIGHTS_FILE):
        h.update((d / name).read_bytes())
    return h.hexdigest()


def save_model(model: KirchhoffNet, directory: str | Path, before_rename: BeforeRename | None = None) -> str:
    """Write ``model`` into ``directory`` atomically (file by file); returns its content hash."""
    d = Path(directory)
    atomic_write(d / WEIGHTS_FILE, weights_bytes(model), before_rename)
    atomic_write(d / CIRCUIT_FILE, circuit_bytes(model.spec), before_rename)
    return content_hash(d)


def load_model(directory: str | Path, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> KirchhoffNet:
    """Load a checkpoint directory; :class:`CheckpointError` with the reason if it is
    missing, corrupt or inconsistent."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: not a checkpoint directory")
    try:
        spec = CircuitSpec.model_validate_json((d / CIRCUIT_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{d}: missing {CIRCUIT_FILE}") from None
    except (ValidationError, ValueError) as err:
        raise CheckpointError(f"{d / CIRCUIT_FILE}: invalid circuit: {_first_error(err)}") from None
    try:
        tensors = st_load((d / WEIGHTS_FILE).read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{d}: missing {WEIGHTS_FILE}") from None
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{d / WEIGHTS_FILE}: unreadable weights ({err})") from None
    params = _params_from_tensors(spec, tensors, str(d / WEIGHTS_FILE))
    return _build(spec, params, dtype, device)


def _build(spec: CircuitSpec, params: list[dict[str, torch.Tensor]], dtype: torch.dtype,
           device: str | torch.device) -> KirchhoffNet:
    model = KirchhoffNet(spec, params)
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype)


def _params_from_tensors(spec: CircuitSpec, tensors: dict[str, torch.Tensor], where: str):
    family = DeviceFamily.parse(spec.device)
    out = []
    for i, layer in enumerate(spec.layers):
        p = {}
        for name in family.param_names:
            key = f"layer{i}.{name}"
            if key not in tensors:
                raise CheckpointError(f"{where}: layer {i}: missing parameter {name!r}")
            t = tensors[key].to(torch.float64).reshape(-1)
            _check_values(t.tolist(), len(layer.edges), i, name)
            p[name] = t
        out.append(p)
    return out


def _check_values(values: list[float], n_edges: int, layer: int, name: str) -> None:
    if len(values) != n_edges:
        raise CheckpointError(f"layer {layer}: parameter {name!r} has {len(values)} values for {n_edges} edges")
    for k, x in enumerate(values):
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            raise CheckpointError(f"layer {layer}, edge {k}: parameter {name!r} is not a finite number ({x!r})")


def _first_error(err: Exception) -> str:
    if isinstance(err, ValidationError):
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e.get("loc", ()))
        return f"{loc}: {e['msg']}" if loc else e["msg"]
    return str(err)


def _layer_from_dict(i: int, layer: Any, family: DeviceFamily) -> tuple[LayerSpec, dict[str, torch.Tensor]]:
    """Layer ``i`` of the import format → (its spec, its raw parameters); CheckpointError
    naming the layer (and edge) at fault."""
    if not isinstance(layer, dict):
        raise CheckpointError(f"layer {i}: must be an object")
    missing = [k for k in ("duration", "nodes", "edges", "params") if k not in layer]
    if missing:
        raise CheckpointError(f"layer {i}: missing field {missing[0]!r}")
    edges = layer["edges"]
    if not isinstance(edges, list):
        raise CheckpointError(f"layer {i}: 'edges' must be a list of [source, destination]")
    _check_edges(i, edges, layer["nodes"])
    try:
        spec = LayerSpec(duration=layer["duration"], nodes=layer["nodes"], edges=[tuple(e) for e in edges],
                         capacitance=layer.get("capacitance", 1.0))
    except ValidationError as err:
        raise CheckpointError(f"layer {i}: {_first_error(err)}") from None
    raw = layer["params"]
    if not isinstance(raw, dict):
        raise CheckpointError(f"layer {i}: 'params' must be an object")
    unexpected = set(raw) - set(family.param_names)
    if unexpected:
        raise CheckpointError(f"layer {i}: device {family.name} takes parameters "
                              f"{', '.join(family.param_names)}, not {', '.join(sorted(unexpected))}")
    p = {}
    for name in family.param_names:
        if name not in raw or not isinstance(raw[name], list):
            raise CheckpointError(f"layer {i}: missing parameter list {name!r}")
        _check_values([float("nan") if v is None else v for v in raw[name]], len(edges), i, name)
        p[name] = torch.tensor(raw[name], dtype=torch.float64)
    return spec, p


def _check_edges(i: int, edges: list, nodes: Any) -> None:
    for k, e in enumerate(edges):
        if not (isinstance(e, list) and len(e) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in e)):
            raise CheckpointError(f"layer {i}, edge {k}: expected [source, destination] integers, got {e!r}")
        if isinstance(nodes, int) and not all(0 <= x <= nodes for x in e):
            raise CheckpointError(f"layer {i}, edge {k}: node index outside 0..{nodes} in {e}")
        if e[0] == e[1]:
            raise CheckpointError(f"layer {i}, edge {k}: self-loop on node {e[0]}")


def circuit_from_dict(obj: Any, dtype: torch.dtype = torch.float32) -> KirchhoffNet:
    """Build a model from the import format (see README, "Importing circuits").

    ``{"name", "device", "data_dim", "layers": [{"duration", "nodes", "edges", "params",
    "capacitance"?}], "hardware"?, "pad_mode"?, "solver"?}``. Raises :class:`CheckpointError`
    naming the layer and edge at fault.
    """
    if not isinstance(obj, dict):
        raise CheckpointError("circuit file must hold a JSON object")
    for key in ("name", "device", "data_dim", "layers"):
        if key not in obj:
            raise CheckpointError(f"missing field {key!r}")
    try:
        family = DeviceFamily.parse(obj["device"])
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(obj["layers"], list) or not obj["layers"]:
        raise CheckpointError("'layers' must be a non-empty list")
    layer_specs, params = [], []
    for i, layer in enumerate(obj["layers"]):
        spec, p = _layer_from_dict(i, layer, family)
        layer_specs.append(spec)
        params.append(p)
    optional = ("name", "device", "data_dim", "pad_mode", "hardware", "solver", "leaky_slope", "version")
    fields = {k: obj[k] for k in optional if k in obj}
    try:
        spec = CircuitSpec(**fields, layers=layer_specs)
    except ValidationError as err:
        raise CheckpointError(_first_error(err)) from None
    return _build(spec, params, dtype, "cpu")


def circuit_from_json(path: str | Path, dtype: torch.dtype = torch.float32) -> KirchhoffNet:
    """Load the import format from a JSON file; :class:`CheckpointError` on any problem."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    return circuit_from_dict(obj, dtype)
