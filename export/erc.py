"""Electrical-rule checks on a :class:`~export.spice_ir.Deck` before it is written.

Rules (each violation is reported with the layer and edge, or the node, behind it):

1. every non-ground node has a capacitor to ground, or a voltage source to ground (a DC
   path; only the read-out node ``nlogp`` has one), so no node floats;
2. element names are unique (SPICE names are case-insensitive, so compared lower-cased)
   and are plain SPICE identifiers;
3. no element connects a node to itself (self-loop);
4. every physical constant in an element is finite, and every capacitor is positive.
"""
from __future__ import annotations

import math
import re

from .spice_ir import GROUND, Deck

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ERCError(ValueError):
    """Electrical-rule violations; ``violations`` lists every one, the message the first few."""

    def __init__(self, violations: list[str]):
        self.violations = violations
        shown = "; ".join(violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"electrical rule check failed: {shown}{more}")


def violations(deck: Deck) -> list[str]:
    """All rule violations of ``deck`` (empty when it passes)."""
    out: list[str] = []
    seen: dict[str, str] = {}
    anchored: set[str] = set()  # nodes with a capacitor or voltage source to ground
    used: dict[str, str] = {}  # node -> first element origin touching it
    for el in deck.elements:
        if not _NAME.match(el.name):
            out.append(f"{el.origin}: element name {el.name!r} is not a plain SPICE name")
        key = el.name.lower()
        if key in seen:
            out.append(f"{el.origin}: duplicate element name {el.name} (also used by {seen[key]})")
        else:
            seen[key] = el.origin
        a, b = el.nodes
        if a.lower() == b.lower():
            out.append(f"{el.origin}: self-loop, element {el.name} connects node {a} to itself")
        for x in (a, b):
            if x != GROUND:
                used.setdefault(x.lower(), el.origin)
        if el.kind in ("C", "V", "BV") and GROUND in (a, b) and a != b:
            anchored.add((b if a == GROUND else a).lower())
        bad = [x for x in el.numbers if not (isinstance(x, int | float) and math.isfinite(x))]
        if bad:
            out.append(f"{el.origin}: element {el.name} has a non-finite parameter ({bad[0]!r})")
        if el.kind == "C" and el.numbers and not el.numbers[0] > 0:
            out.append(f"{el.origin}: capacitor {el.name} must be positive, got {el.numbers[0]!r}")
    for node, origin in sorted(used.items()):
        if node not in anchored:
            out.append(f"{origin}: node {node} has no capacitor or DC path to ground (floating)")
    return out


def check(deck: Deck) -> None:
    """Raise :class:`ERCError` if ``deck`` breaks any rule."""
    found = violations(deck)
    if found:
        raise ERCError(found)
