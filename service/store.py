"""The BentoML model store as the model registry.

``knet store`` imports checkpoint directories with :func:`import_checkpoint`; the service
serves the latest stored version of each KirchhoffNet model (:func:`stored_models`) and never
reads checkpoints from anywhere else. A stored model is the checkpoint's files copied verbatim
(``circuit.json``, ``weights.safetensors``, ``eval.json`` when present), labelled
``kind=kirchhoffnet``, with descriptive metadata for ``GET /models``.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import bentoml

from models.checkpoint import CIRCUIT_FILE, EVAL_FILE, WEIGHTS_FILE, content_hash, load_model
from models.hardware import projected_latency_s

logger = logging.getLogger("knet.service")

KIND_LABEL = {"kind": "kirchhoffnet"}
COPIED_FILES = (CIRCUIT_FILE, WEIGHTS_FILE, EVAL_FILE)
_TAG_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


def store_name(name: str) -> str:
    """The BentoML model name for a circuit name (lower case); ValueError if unusable."""
    n = name.lower()
    if not _TAG_NAME.match(n):
        raise ValueError(f"model name {name!r} cannot be a BentoML model name "
                         "(letters, digits, '.', '_', '-', starting and ending alphanumeric)")
    return n


def checkpoint_metadata(directory: Path) -> dict[str, Any]:
    """Metadata of a checkpoint for the store: architecture, hardware, timing, evals, hash.

    Raises:
        models.checkpoint.CheckpointError: the checkpoint does not load.
    """
    model = load_model(directory)
    spec = model.spec
    evals = None
    if (directory / EVAL_FILE).is_file():
        try:
            evals = json.loads((directory / EVAL_FILE).read_text())
        except json.JSONDecodeError:
            logger.warning("%s: unreadable %s, stored without eval results", directory, EVAL_FILE)
    return {
        "circuit_name": spec.name,
        "data_dim": spec.data_dim,
        "layers": len(spec.layers),
        "nodes": [layer.nodes for layer in spec.layers],
        "device": spec.device,
        "edges": spec.num_edges,
        "end_time": spec.end_time,
        "bijective": spec.bijective,
        "solver": spec.solver.model_dump(mode="json"),
        "hardware": spec.hardware.model_dump(mode="json"),
        "projected_chip_latency_s": projected_latency_s(spec),
        "eval": evals or {},
        "checkpoint_sha256": content_hash(directory),
        "circuit_version": spec.version,
    }


def import_checkpoint(directory: str | Path, name: str | None = None) -> tuple[bentoml.Model, bool]:
    """Copy a checkpoint into the store as ``name`` (default: its circuit name).

    Returns ``(model, created)``; ``created`` is False when the latest stored version already
    has the same checkpoint hash (importing again is a no-op).

    Raises:
        models.checkpoint.CheckpointError: the checkpoint does not load (nothing is stored).
        ValueError: the name is not a valid BentoML model name.
    """
    d = Path(directory)
    meta = checkpoint_metadata(d)
    tag_name = store_name(name or meta["circuit_name"])
    latest = _latest(tag_name)
    if latest is not None and latest.info.metadata.get("checkpoint_sha256") == meta["checkpoint_sha256"]:
        return latest, False
    with bentoml.models.create(tag_name, labels=dict(KIND_LABEL), metadata=meta) as stored:
        for fname in COPIED_FILES:
            if (d / fname).is_file():
                shutil.copyfile(d / fname, stored.path_of(fname))
    return bentoml.models.get(stored.tag), True


def _latest(name: str) -> bentoml.Model | None:
    try:
        return bentoml.models.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        return None


def stored_models() -> list[bentoml.Model]:
    """The latest version of every KirchhoffNet model in the store, sorted by name."""
    latest: dict[str, bentoml.Model] = {}
    for m in bentoml.models.list():
        if m.info.labels.get("kind") != KIND_LABEL["kind"]:
            continue
        cur = latest.get(m.tag.name)
        if cur is None or m.info.creation_time > cur.info.creation_time:
            latest[m.tag.name] = m
    return [latest[k] for k in sorted(latest)]
