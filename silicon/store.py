"""Where characterizations live and how a model finds its own: ``silicon/datasheets/<pdk>-<corner>-<temp>C``.

A characterization (``knet cells characterize``) writes a folder of files (``silicon.datasheet``);
:func:`load` reads one back, :func:`for_model` the one a cell-realised model was trained on
(named by its law's ``pdk``/``corner``/``temp_c``). A missing folder is a user error that
gives the command which writes it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.errors import UserInputError
from models.flow import KirchhoffNet

from .benches import CoreDC
from .characterize import Datasheet
from .datasheet import DATASHEET, TABLES, read_tables

ROOT = Path(__file__).resolve().parent / "datasheets"


def folder(pdk: str, corner: str, temp_c: float) -> Path:
    return ROOT / f"{pdk}-{corner}-{temp_c:g}C"


@dataclass(frozen=True)
class Characterized:
    """A characterization read back: the datasheet and its DC tables."""

    sheet: Datasheet
    tables: CoreDC
    path: Path


def load(pdk: str, corner: str, temp_c: float) -> Characterized:
    path = folder(pdk, corner, temp_c)
    if not (path / DATASHEET).is_file() or not (path / TABLES).is_file():
        raise UserInputError(f"no characterization of the {pdk} cell at {corner}, {temp_c:g} °C in {path}: run "
                             f"`knet cells characterize --pdk {pdk} --corner {corner} --temp {temp_c:g}`")
    sheet = Datasheet.from_json(json.loads((path / DATASHEET).read_text()))
    return Characterized(sheet, read_tables(path / TABLES), path)


def for_model(model: KirchhoffNet) -> Characterized:
    """The characterization ``model``'s cell law came from; UserInputError if it has none."""
    law = model.spec.cell
    if law is None or law.pdk is None:
        raise UserInputError(f"model {model.spec.name!r} was not trained for a characterized cell "
                             "(its circuit.json has no cell law with a PDK)")
    return load(law.pdk, law.corner, law.temp_c)
