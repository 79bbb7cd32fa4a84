"""The BentoML model store as the model registry.

``knet store`` imports checkpoint directories with :func:`import_checkpoint`; the service
serves the latest stored version of each KirchhoffNet model (:func:`stored_models`) and never
reads checkpoints from anywhere else. A stored model is the checkpoint's files copied verbatim
(``circuit.json``, ``weights.safetensors``; ``eval.json``, the :data:`FIGURE_FILES` pictures
and the :data:`ROBUSTNESS_FILES` tables when present), labelled
``kind=kirchhoffnet``, with descriptive metadata for ``GET /models``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import bentoml

from models.checkpoint import (
    CIRCUIT_FILE,
    EVAL_FILE,
    TRANSISTOR_DECK_FILE,
    TRANSISTOR_FILE,
    WEIGHTS_FILE,
    content_hash,
    load_model,
)
from models.hardware import projected_latency_s

logger = logging.getLogger("knet.service")

KIND_LABEL = {"kind": "kirchhoffnet"}
# pictures made beside a checkpoint (training, evaluation, analyses), shown on its web page (service/ui.py)
FIGURE_FILES = ("samples.png", "loss.png", "robustness.png", "design_space.png")
# tables of `knet robustness` (its picture is among FIGURE_FILES); summarised by GET /models/{name}
ROBUSTNESS_FILE = "robustness.json"
ROBUSTNESS_FILES = (ROBUSTNESS_FILE, "robustness.csv")
# the chip measured at transistor level (`knet simulate MODEL --pdk P --write`) and its deck
TRANSISTOR_FILES = (TRANSISTOR_FILE, TRANSISTOR_DECK_FILE)
COPIED_FILES = (CIRCUIT_FILE, WEIGHTS_FILE, EVAL_FILE, *FIGURE_FILES, *ROBUSTNESS_FILES, *TRANSISTOR_FILES)
SIDE_FILES = tuple(f for f in COPIED_FILES if f not in (CIRCUIT_FILE, WEIGHTS_FILE))
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
        "side_files_sha256": side_files_hash(directory),
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
    if latest is not None and all(latest.info.metadata.get(k) == meta[k]
                                  for k in ("checkpoint_sha256", "side_files_sha256")):
        return latest, False  # same model and same evaluations, figures and robustness tables
    with bentoml.models.create(tag_name, labels=dict(KIND_LABEL), metadata=meta) as stored:
        for fname in COPIED_FILES:
            if (d / fname).is_file():
                shutil.copyfile(d / fname, stored.path_of(fname))
    return bentoml.models.get(stored.tag), True


def side_files_hash(directory: Path) -> str:
    """SHA-256 over the names and bytes of the :data:`SIDE_FILES` present, so a checkpoint
    whose evaluation or robustness files appeared or changed is stored again."""
    h = hashlib.sha256()
    for fname in SIDE_FILES:
        if (directory / fname).is_file():
            h.update(fname.encode() + b"\0")
            h.update((directory / fname).read_bytes())
    return h.hexdigest()


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


# -- robustness summary (GET /models/{name}) -------------------------------------------------
SUMMARY_MISMATCH_LEVELS = (0.01, 0.05)  # σ at which the NLL increase is quoted
# +1: a larger level is harsher (σ, seconds); -1: a smaller one is (bits, C / C_model)
HARSHER_DIRECTION = {"mismatch": 1, "switching": 1, "quantization": -1, "adc": -1, "dac": -1, "noise": -1}


def transistor_summary(directory: Path) -> dict[str, Any] | None:
    """What GET /models/{name} and the model page show of ``directory/transistor.json`` (the
    chip simulated at transistor level, beside the behavioural projection), or None when there
    is none; ``{"error": why}`` when it cannot be read."""
    path = Path(directory) / TRANSISTOR_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        return {"label": f"transistor level, {doc['pdk']} {doc['corner']}, {doc['temp_c']:g} °C",
                **{k: doc[k] for k in ("pdk", "corner", "temp_c", "cell", "transistors", "latency_s",
                                        "energy_per_sample_j", "error_model_volts", "samples")},
                "area_um2": doc["area_um2"]["total"], "behavioural_projection": doc["behavioural_projection"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("%s: unreadable transistor-level figures: %s", path, err)
        return {"error": f"unreadable {TRANSISTOR_FILE}: {err}"}


def robustness_summary(directory: Path) -> dict[str, Any] | None:
    """A compact summary of ``directory/robustness.json`` (written by ``knet robustness``), or
    None when there is none; ``{"error": why}`` when it cannot be read.

    Keys: ``metric`` (nll or elbo: nats, lower is better); ``ideal`` (the ideal chip's
    ``nll``, ``nll_se``, ``distance``, ``distance_ci``); ``nll_increase_at_mismatch``
    (σ → mean NLL over chip instances minus the ideal NLL, at 1 % and 5 % when measured);
    ``within_ideal`` (effect → the harshest level up to which every milder level stays
    within the ideal: NLL at most the ideal's + 1.96 s.e. where the chip has a density,
    else an energy-distance interval overlapping the ideal's; null if even the mildest does
    not); ``levels`` (effect → the levels measured); ``files`` (the robustness files stored).
    """
    path = Path(directory) / ROBUSTNESS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        rows = [r for r in doc["rows"] if isinstance(r, dict)]
        ideal = _ideal_row(doc, rows)
        by_effect: dict[str, list[dict]] = {}
        for r in rows:
            by_effect.setdefault(str(r["effect"]), []).append(r)
        increase = {}
        for sigma in SUMMARY_MISMATCH_LEVELS:
            row = next((r for r in by_effect.get("mismatch", []) if math.isclose(float(r["level"]), sigma)), None)
            if row is not None:
                increase[f"{sigma:g}"] = _difference(row.get("nll"), ideal.get("nll"))
        within = {e: _within_ideal(e, rs, ideal) for e, rs in by_effect.items() if e in HARSHER_DIRECTION}
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("%s: unreadable robustness table: %s", path, err)
        return {"error": f"unreadable {ROBUSTNESS_FILE}: {err}"}
    return {
        "metric": doc.get("metric", "nll"),
        "ideal": {k: ideal.get(k) for k in ("nll", "nll_se", "distance", "distance_ci")},
        "nll_increase_at_mismatch": increase,
        "within_ideal": within,
        "levels": {e: [_number(r["level"]) for r in rs] for e, rs in by_effect.items()},
        "files": [f for f in (*ROBUSTNESS_FILES, "robustness.png") if (Path(directory) / f).is_file()],
    }


def _ideal_row(doc: dict, rows: list[dict]) -> dict:
    """The ideal chip's figures: the table's ``ideal`` entry, else its mismatch σ = 0 row."""
    if isinstance(doc.get("ideal"), dict):
        return doc["ideal"]
    return next((r for r in rows if r["effect"] == "mismatch" and float(r["level"]) == 0.0), {})


def _difference(a, b) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def _within(row: dict, ideal: dict) -> bool:
    if row.get("nll") is not None and ideal.get("nll") is not None and ideal.get("nll_se") is not None:
        return float(row["nll"]) <= float(ideal["nll"]) + 1.96 * float(ideal["nll_se"])
    ci, ideal_ci = row.get("distance_ci"), ideal.get("distance_ci")
    if ci is None or ideal_ci is None:
        return False
    return float(ci[0]) <= float(ideal_ci[1])


def _within_ideal(effect: str, rows: list[dict], ideal: dict) -> float | int | None:
    """The harshest level of ``effect`` reached before the first level outside the ideal."""
    ordered = sorted(rows, key=lambda r: HARSHER_DIRECTION[effect] * float(r["level"]))
    tolerated = None
    for r in ordered:
        if not _within(r, ideal):
            break
        tolerated = _number(r["level"])
    return tolerated


def _number(x) -> float | int:
    """Levels as JSON numbers: bit counts as integers."""
    v = float(x)
    return int(v) if v.is_integer() and abs(v) >= 1 else v
