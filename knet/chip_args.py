"""Chip-instance flags shared by ``knet export netlist|params`` and ``knet simulate``.

``--mismatch σ --instance SEED --quant-bits k --switching-s T --switching-mode M`` select one
emulated chip instance (:class:`models.config.ChipConfig`, ``models.chip``). One place builds
the config so every command validates the same way: a bad value is ``error: --flag …``
(exit 2), never a traceback.
"""
from __future__ import annotations

import argparse

from pydantic import ValidationError

from models.config import ChipConfig
from models.errors import UserInputError

# ChipConfig field -> command-line flag (argparse dest is the field name)
CHIP_FLAGS = {"mismatch": "--mismatch", "instance": "--instance", "quant_bits": "--quant-bits",
              "switching_s": "--switching-s", "switching_mode": "--switching-mode"}


def add_chip_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("chip instance (default: the ideal circuit; see docs/export.md)")
    g.add_argument("--mismatch", type=float, metavar="SIGMA",
                   help="device mismatch: relative sigma of gains and I0 (offsets and capacitors alike), e.g. 0.05")
    g.add_argument("--instance", type=int, metavar="SEED", help="chip instance seed (default 0): same seed, same chip")
    g.add_argument("--quant-bits", type=int, metavar="K", help="weights programmed with K bits (2^K - 1 levels)")
    g.add_argument("--switching-s", type=float, metavar="T", help="layer-switch transition time, seconds")
    g.add_argument("--switching-mode", choices=["crossfade", "break"],
                   help="transition as a linear cross-fade (default) or break-before-make")


def chip_from_args(args: argparse.Namespace) -> ChipConfig | None:
    """The chip the flags describe, or None for the ideal circuit (no flag given, or flags
    that leave every effect off, e.g. ``--mismatch 0``).

    Raises:
        UserInputError: a value out of range, naming the flag.
    """
    given = {field: getattr(args, field, None) for field in CHIP_FLAGS}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    try:
        chip = ChipConfig(**given)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = CHIP_FLAGS.get(field, "chip flags")
        raise UserInputError(f"{flag} {given.get(field, '')}: {first['msg']}".replace(" : ", ": ")) from None
    return None if chip.is_ideal else chip
