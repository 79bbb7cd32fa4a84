"""The model zoo shipped in ``models/zoo/<name>/`` and resolution of MODEL arguments."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import CIRCUIT_FILE

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
ZOO_NAMES = ("twomoon", "circle", "swissroll", "2spirals", "pinwheel", "8gaussians",
             "potential1", "potential2", "digits")
DEFAULT_MODEL = "twomoon"


def available() -> list[str]:
    """Zoo models that have a checkpoint on disk, in the canonical order."""
    return [n for n in ZOO_NAMES if (ZOO_DIR / n / CIRCUIT_FILE).is_file()]


def resolve(model: str) -> Path:
    """A zoo name or a checkpoint directory → the checkpoint directory.

    Raises:
        ValueError: neither a zoo model nor a directory with a ``circuit.json``.
    """
    if (ZOO_DIR / model / CIRCUIT_FILE).is_file():
        return ZOO_DIR / model
    path = Path(model)
    if (path / CIRCUIT_FILE).is_file():
        return path
    raise ValueError(f"{model!r} is neither a zoo model ({', '.join(available()) or 'none trained'}) "
                     "nor a checkpoint directory")
