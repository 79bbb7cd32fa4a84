"""Netlists and parameter tables of one emulated chip instance (``models.chip``).

A chip instance with device mismatch, weight quantization and layer switching
(:class:`models.config.ChipConfig`) is still a fixed capacitor network: a plain
:class:`~models.flow.KirchhoffNet` whose devices carry per-device I0 factors and whose nodes
carry their own capacitors (:func:`models.chip.chip_model`). Its netlists and parameter
tables are therefore the ordinary exports of that circuit (``export.netlist``,
``export.params``), written from the same canonical float64 model and content hash as every
other artifact, with the chip recorded: header lines in the netlists, a ``chip`` object in the
JSON table. Noise and converters act at solve time and have no fixed circuit; a noisy deck is
``export.noise_deck``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from models.chip import chip_model
from models.config import ChipConfig
from models.errors import UserInputError
from models.flow import KirchhoffNet

# _canonical/_build: the same canonical float64 model, content hash and bytes as every other
# artifact; only the netlists' header note and the JSON table's `chip` object are added here.
from .artifacts import ARTIFACT_KINDS, Artifact, _build, _canonical, available_kinds
from .netlist import netlist_text
from .params import params_json

# kinds rendered from the circuit's parameters (ONNX graphs, the bundle and the manifest
# describe the ideal model)
CHIP_KINDS = tuple(k for k in ARTIFACT_KINDS if k.startswith(("netlist-", "vacask-", "params-")) or k == "verilog-a")


def chip_note(chip: ChipConfig) -> tuple[str, ...]:
    """Netlist header lines naming the chip instance (ASCII, one fact per clause)."""
    bits = "ideal" if chip.quant_bits is None else f"{chip.quant_bits} bits"
    switching = (f"{chip.switching_s:g} s {chip.switching_mode}" if chip.switching_s > 0 else "hard (0 s)")
    return (
        f"chip instance {chip.instance} (models.chip): mismatch sigma {chip.mismatch:g} (gains a, b and I0, relative), "
        f"offset sigma {chip.sigma_offset:g} V0, capacitor sigma {chip.sigma_capacitor:g} (relative); "
        f"weights {bits}; layer switching {switching}",
        "  each device's current carries its own I0 factor and each node its own capacitor, as drawn for this "
        "instance; same instance seed, same chip",
    )


def chip_instance(model: KirchhoffNet, chip: ChipConfig) -> KirchhoffNet:
    """The chip instance of ``model`` as a float64 CPU circuit (what the exports and
    ``knet simulate`` use, whatever dtype the caller loaded).

    Raises:
        models.chip.UnsupportedChip: noise or converters (no fixed circuit), or a chip the
            model cannot take (e.g. a switching time longer than a layer).
    """
    return chip_model(copy.deepcopy(model).to("cpu", torch.float64), chip)


def chip_artifact(model: KirchhoffNet, kind: str, chip: ChipConfig, checkpoint_dir: Path | None = None) -> Artifact:
    """The artifact ``kind`` (one of :data:`CHIP_KINDS`) of chip instance ``chip`` of ``model``.

    File names are those of the ideal model's artifacts: write each instance to its own
    directory. ``checkpoint_dir`` as in :func:`export.artifacts.build_artifact` (the header
    hash is the checkpoint's content hash).

    Netlists (flat and subcircuit) carry :func:`chip_note` in their header and the JSON
    table a ``chip`` object; VACASK decks, the CSV and the tensors carry the instance's
    values only.

    Raises:
        ValueError: a kind with no chip rendering (ONNX, bundle, manifest) or a log-density
            kind of a model whose node count changes; ``UnsupportedChip`` as in
            :func:`chip_instance`; ``ERCError``/``UnsupportedCircuit`` as for any netlist.
    """
    if kind not in CHIP_KINDS:
        raise UserInputError(f"{kind} has no chip-instance rendering; expected one of {', '.join(CHIP_KINDS)}")
    base, digest = _canonical(model, Path(checkpoint_dir) if checkpoint_dir is not None else None)
    m = chip_model(base, chip)
    reason = available_kinds(m)[kind]
    if reason:
        raise UserInputError(f"{kind} is not available for model {m.spec.name!r}: {reason}")
    spec = ARTIFACT_KINDS[kind]
    if kind.startswith("netlist-"):
        style = "subckt" if kind.startswith("netlist-subckt-") else "flat"
        data = netlist_text(m, kind.rsplit("-", 1)[1], digest, note=chip_note(chip), style=style).encode()
    elif kind == "params-json":
        data = params_json(m, digest, chip=chip.model_dump())
    else:  # params CSV/tensors, VACASK decks (no header note), the Verilog-A library
        return _build(m, kind, digest)
    return Artifact(spec.filename(m.spec.name), spec.content_type, data)
