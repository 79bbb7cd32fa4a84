"""The model zoo shipped in ``models/zoo/<name>/`` and resolution of MODEL arguments."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import CIRCUIT_FILE
from .errors import UserInputError

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
ZOO_NAMES = ("twomoon", "circle", "swissroll", "2spirals", "pinwheel", "8gaussians",
             "potential1", "potential2", "digits", "twomoon-hw", "8gaussians-hw")
DEFAULT_MODEL = "twomoon"
# Published KirchhoffNet figures (nats, 8192 fresh samples from the same generators): test NLL
# for generation, E[log q + U] for potential1. Shown beside ours by `knet zoo` and the web pages.
PUBLISHED_NATS = {"twomoon": 1.020, "circle": 0.833, "swissroll": 2.693, "2spirals": 2.677,
                  "pinwheel": 2.357, "8gaussians": 2.858, "potential1": -1.873}


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
    raise UserInputError(f"{model!r} is neither a zoo model ({', '.join(available()) or 'none trained'}) "
                     "nor a checkpoint directory")


def task_name(directory: Path, fallback: str) -> str:
    """The task a checkpoint was trained on: from its ``config.yaml``, else ``fallback``
    (imported circuits carry none; a zoo name doubles as its task)."""
    import yaml
    cfg = Path(directory) / "config.yaml"
    if cfg.is_file():
        return yaml.safe_load(cfg.read_text())["task"]
    return fallback
