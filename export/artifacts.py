"""Every downloadable export of a model, by kind, as deterministic bytes.

``build_artifact(model, kind, checkpoint_dir)`` is the one entry point shared by the
service's downloads and ``knet export``: the same checkpoint gives byte-identical files
(no wall-clock dates anywhere; zip entries carry a fixed 1980-01-01 timestamp).

When ``checkpoint_dir`` is given, the model is re-read from it in float64 and the header
hash is the checkpoint's content hash, so the bytes do not depend on the dtype the caller
happened to load. Without it the given model is used (converted to float64 exactly) and
the hash is a fingerprint of its architecture and parameters.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from models.checkpoint import TRANSISTOR_DECK_FILE, TRANSISTOR_FILE, circuit_bytes, content_hash, load_model
from models.errors import UserInputError
from models.flow import KirchhoffNet
from models.hardware import projected_latency_s, settle_time_s

from .netlist import FORMAT_VERSION, SpiceOptions, netlist_text
from .onnx_graphs import graph_steps, onnx_graph
from .params import UNITS, constants, params_csv, params_json, params_tensors
from .readme import bundle_readme
from .vacask import deck_text as vacask_text
from .verilog_a import devices_file


@dataclass(frozen=True)
class ArtifactKind:
    """A kind of artifact: file name pattern (``{name}`` = model name), MIME type, meaning."""

    pattern: str
    content_type: str
    description: str

    def filename(self, model_name: str) -> str:
        return self.pattern.format(name=model_name)


@dataclass(frozen=True)
class Artifact:
    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


ARTIFACT_KINDS: dict[str, ArtifactKind] = {
    "netlist-sample": ArtifactKind("{name}-sample.cir", "application/x-spice",
                                   "SPICE netlist (ngspice): latent z -> sample x"),
    "netlist-logprob": ArtifactKind("{name}-logprob.cir", "application/x-spice",
                                    "SPICE netlist: z -> x plus the log q(x) accumulator"),
    "netlist-reverse": ArtifactKind("{name}-reverse.cir", "application/x-spice",
                                    "SPICE netlist: data x -> latent z and log p(x) (reverse time)"),
    **{f"netlist-subckt-{v}": ArtifactKind(f"{{name}}-{v}-subckt.cir", "application/x-spice",
                                           f"SPICE netlist ({v}), subcircuit style: one .subckt per device family")
       for v in ("sample", "logprob", "reverse")},
    "verilog-a": ArtifactKind("{name}-devices.va", "text/x-verilog",
                              "Verilog-A device, divergence and DAC modules (compiled and run in VACASK)"),
    **{f"vacask-{v}": ArtifactKind(f"{{name}}-{v}.sim", "text/plain",
                                   f"VACASK netlist ({v}) using the compiled Verilog-A devices")
       for v in ("sample", "logprob", "reverse")},
    "params-json": ArtifactKind("{name}-params.json", "application/json",
                                "device parameter table, physical units (JSON)"),
    "params-csv": ArtifactKind("{name}-params.csv", "text/csv", "device parameter table, physical units (CSV)"),
    "params-tensors": ArtifactKind("{name}-params.safetensors", "application/octet-stream",
                                   "edge lists and parameters as tensors (safetensors)"),
    "manifest": ArtifactKind("manifest.json", "application/json",
                             "constants, units, version and SHA-256 of every file"),
    "onnx-sample": ArtifactKind("{name}-sample.onnx", "application/onnx",
                                "ONNX graph z -> (x, log q), fixed-step RK4"),
    "onnx-logprob": ArtifactKind("{name}-logprob.onnx", "application/onnx",
                                 "ONNX graph x -> (z, log p), fixed-step RK4"),
    "bundle": ArtifactKind("{name}-bundle.zip", "application/zip", "all of the above plus a README for hardware teams"),
}
LOG_DENSITY_KINDS = ("netlist-logprob", "netlist-reverse", "onnx-logprob", "netlist-subckt-logprob",
                     "netlist-subckt-reverse", "vacask-logprob", "vacask-reverse")
BUNDLE_KINDS = ("netlist-sample", "netlist-logprob", "netlist-reverse", "params-json", "params-csv",
                "params-tensors", "onnx-sample", "onnx-logprob", "netlist-subckt-sample", "netlist-subckt-logprob",
                "netlist-subckt-reverse", "verilog-a", "vacask-sample", "vacask-logprob", "vacask-reverse")
BUNDLE_FOLDERS = {"verilog-a": "devices/"}  # kind -> folder inside the bundle
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# analysis results written beside a checkpoint (`knet robustness`): kind → (file in the
# checkpoint directory, how it is shipped); copied verbatim into downloads and the bundle when present
CHECKPOINT_FILE_KINDS: dict[str, tuple[str, ArtifactKind]] = {
    "robustness-json": ("robustness.json", ArtifactKind(
        "{name}-robustness.json", "application/json", "Monte Carlo robustness to chip non-idealities (JSON)")),
    "robustness-csv": ("robustness.csv", ArtifactKind(
        "{name}-robustness.csv", "text/csv", "Monte Carlo robustness to chip non-idealities (CSV)")),
    "robustness-png": ("robustness.png", ArtifactKind(
        "{name}-robustness.png", "image/png", "robustness plot: quality against each non-ideality's level")),
    "transistor-json": (TRANSISTOR_FILE, ArtifactKind(
        "{name}-transistor.json", "application/json",
        "the chip at transistor level: measured latency, energy, area and accuracy (JSON)")),
    "transistor-deck": (TRANSISTOR_DECK_FILE, ArtifactKind(
        "{name}-transistor.cir", "text/plain", "transistor-level sample deck, PDK cells (ngspice; .param inputs)")),
}


def model_fingerprint(model: KirchhoffNet) -> str:
    """SHA-256 over the architecture JSON and the raw parameters (float64, layer/name order)."""
    h = hashlib.sha256(circuit_bytes(model.spec))
    for l, layer in enumerate(model.layers):
        for name in layer.family.param_names:
            h.update(f"layer{l}.{name}".encode())
            h.update(layer.params[name].detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


# circuits rendered with the ideal device law: a cell-realised model's circuit is its transistor deck
BEHAVIOURAL_CIRCUIT_KINDS = tuple(k for k in ARTIFACT_KINDS if k.startswith(("netlist-", "vacask-", "verilog-a")))


def available_kinds(model: KirchhoffNet) -> dict[str, str | None]:
    """kind → None if it can be built for ``model``, else the reason it cannot."""
    why = (None if model.spec.bijective else
           "the node count changes between layers, so the log-density is not defined")
    out = {k: (why if k in LOG_DENSITY_KINDS else None) for k in ARTIFACT_KINDS}
    if model.spec.cell is not None:
        cell = ("the model is realised in characterized transistor cells (its law: per-terminal gains, "
                "floating-gate coupling); its circuit is the transistor-level deck (transistor-deck, "
                "`knet export netlist MODEL --pdk PDK`), not a behavioural netlist of the ideal law")
        out.update({k: cell for k in BEHAVIOURAL_CIRCUIT_KINDS})
    return out


def _canonical(model: KirchhoffNet, checkpoint_dir: Path | None) -> tuple[KirchhoffNet, str]:
    if checkpoint_dir is not None:
        return load_model(checkpoint_dir, torch.float64, "cpu"), content_hash(checkpoint_dir)
    m = copy.deepcopy(model).to("cpu", torch.float64)
    return m, model_fingerprint(model)


def build_artifact(model: KirchhoffNet, kind: str, checkpoint_dir: Path | None = None) -> Artifact:
    """The artifact ``kind`` of ``model`` (see :data:`ARTIFACT_KINDS`).

    Raises:
        ValueError: unknown kind; a log-density artifact of a model whose node count
            changes; a circuit that fails the electrical-rule checks (``ERCError``) or
            cannot be expressed as a netlist (``UnsupportedCircuit``).
    """
    if kind in CHECKPOINT_FILE_KINDS:
        return checkpoint_file(model.spec.name, kind, checkpoint_dir)
    if kind not in ARTIFACT_KINDS:
        raise UserInputError(f"unknown artifact kind {kind!r}; expected one of {', '.join(ARTIFACT_KINDS)}")
    m, digest = _canonical(model, Path(checkpoint_dir) if checkpoint_dir is not None else None)
    return _build(m, kind, digest, checkpoint_dir)


def checkpoint_file(model_name: str, kind: str, checkpoint_dir: Path | None) -> Artifact:
    """The analysis file ``kind`` (:data:`CHECKPOINT_FILE_KINDS`) from ``checkpoint_dir``, verbatim.

    Raises:
        ValueError: no such file beside the checkpoint (or no checkpoint directory).
    """
    fname, spec = CHECKPOINT_FILE_KINDS[kind]
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / fname
    if path is None or not path.is_file():
        how = "knet simulate MODEL --pdk PDK --write" if kind.startswith("transistor") else "knet robustness"
        raise UserInputError(f"{kind} is not available for model {model_name!r}: no {fname} beside the "
                             f"checkpoint (run `{how}` to compute it)")
    return Artifact(spec.filename(model_name), spec.content_type, path.read_bytes())


def checkpoint_file_kinds(checkpoint_dir: Path | None) -> list[str]:
    """The :data:`CHECKPOINT_FILE_KINDS` present in ``checkpoint_dir``."""
    if checkpoint_dir is None:
        return []
    return [k for k, (fname, _) in CHECKPOINT_FILE_KINDS.items() if (Path(checkpoint_dir) / fname).is_file()]


def _build(m: KirchhoffNet, kind: str, digest: str, checkpoint_dir: Path | None = None) -> Artifact:
    reason = available_kinds(m)[kind]
    if reason:
        raise UserInputError(f"{kind} is not available for model {m.spec.name!r}: {reason}")
    spec = ARTIFACT_KINDS[kind]
    name = spec.filename(m.spec.name)
    if kind.startswith("netlist-subckt-"):
        data = netlist_text(m, kind.rsplit("-", 1)[1], digest, style="subckt").encode()
    elif kind.startswith("netlist-"):
        data = netlist_text(m, kind.split("-", 1)[1], digest).encode()
    elif kind == "verilog-a":
        data = devices_file(m.spec.device, m.spec.leaky_slope).encode()
    elif kind.startswith("vacask-"):
        library = BUNDLE_FOLDERS["verilog-a"] + Path(ARTIFACT_KINDS["verilog-a"].filename(m.spec.name)).stem + ".osdi"
        data = vacask_text(m, kind.split("-", 1)[1], library, digest).encode()
    elif kind == "params-json":
        data = params_json(m, digest)
    elif kind == "params-csv":
        data = params_csv(m)
    elif kind == "params-tensors":
        data = params_tensors(m, digest)
    elif kind.startswith("onnx-"):
        data = onnx_graph(m, kind.split("-", 1)[1], digest)
    elif kind == "manifest":
        data = _manifest(m, digest, _bundle_files(m, digest, checkpoint_dir), checkpoint_dir)
    else:
        data = _bundle(m, digest, checkpoint_dir)
    return Artifact(name, spec.content_type, data)


def _bundle_files(m: KirchhoffNet, digest: str, checkpoint_dir: Path | None = None) -> list[tuple[str, Artifact]]:
    files = [(k, _build(m, k, digest)) for k in BUNDLE_KINDS if available_kinds(m)[k] is None]
    files = [(k, replace(a, filename=BUNDLE_FOLDERS.get(k, "") + a.filename)) for k, a in files]
    files += [(k, checkpoint_file(m.spec.name, k, checkpoint_dir)) for k in checkpoint_file_kinds(checkpoint_dir)]
    readme = bundle_readme(m, digest, [(k, a.filename) for k, a in files])
    return [("readme", Artifact("README.md", "text/markdown", readme)), *files]


def _manifest(m: KirchhoffNet, digest: str, files: list[tuple[str, Artifact]],
              checkpoint_dir: Path | None = None) -> bytes:
    spec = m.spec
    omitted = {k: r for k, r in available_kinds(m).items() if r and k in BUNDLE_KINDS}
    doc = {
        "format": f"kirchhoffnet-manifest/{FORMAT_VERSION}",
        "model": spec.name, "version": spec.version, "content_sha256": digest,
        "device": spec.device, "data_dim": spec.data_dim, "layers": len(spec.layers),
        "devices": spec.num_edges, "end_time_model": spec.end_time,
        "end_time_s": settle_time_s(spec),
        "projected_latency_s": projected_latency_s(spec),
        # measured at transistor level (silicon.figures), beside the behavioural projection above
        "transistor_level": _transistor_level(checkpoint_dir),
        "constants": constants(m), "units": UNITS,
        "netlist_options": SpiceOptions().__dict__,
        "onnx": {"method": "rk4", "steps_per_layer": graph_steps(m), "dtype": "float32"},
        "files": [
            {"name": a.filename, "kind": k, "content_type": a.content_type, "bytes": len(a.data), "sha256": a.sha256,
             "description": ARTIFACT_KINDS[k].description if k in ARTIFACT_KINDS else
             CHECKPOINT_FILE_KINDS[k][1].description if k in CHECKPOINT_FILE_KINDS else "how to use this bundle"}
            for k, a in sorted(files, key=lambda kv: kv[1].filename)
        ],
        "omitted": omitted,
        # where an imported circuit came from (`knet import-reference`): source format, file digests
        "imported_from": None if spec.imported_from is None else spec.imported_from.model_dump(mode="json"),
    }
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode()


def _transistor_level(checkpoint_dir: Path | None) -> dict | None:
    """The measured chip (``transistor.json``) stored beside the checkpoint, or None."""
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / TRANSISTOR_FILE
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _bundle(m: KirchhoffNet, digest: str, checkpoint_dir: Path | None = None) -> bytes:
    files = _bundle_files(m, digest, checkpoint_dir)
    entries = [(a.filename, a.data) for _, a in files]
    entries.append(("manifest.json", _manifest(m, digest, files, checkpoint_dir)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for fname, data in sorted(entries):
            info = zipfile.ZipInfo(fname, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever the building platform
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=9)
    return buf.getvalue()


def build_all(model: KirchhoffNet, checkpoint_dir: Path | None = None) -> list[Artifact]:
    """Every available artifact except the bundle, plus README and manifest (what the
    bundle holds, as separate files)."""
    m, digest = _canonical(model, Path(checkpoint_dir) if checkpoint_dir is not None else None)
    files = _bundle_files(m, digest, checkpoint_dir)
    return [a for _, a in files] + [Artifact("manifest.json", "application/json",
                                             _manifest(m, digest, files, checkpoint_dir))]
