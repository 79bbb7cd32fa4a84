"""A small in-memory SPICE deck: elements, parameters, analysis and read-out, and its text.

The netlist builder (``export.netlist``) produces a :class:`Deck`; the electrical-rule
checks (``export.erc``) inspect it; :meth:`Deck.render` writes ngspice-dialect text. Keeping
the deck structured (rather than string-building straight to text) is what lets the rule
checks name the layer and edge behind every element.

Numbers are written with Python's shortest round-trip ``repr`` (``1e-12``, ``-0.25``), never
with SPICE scale suffixes: in SPICE ``1M`` is one *milli*, a classic trap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

GROUND = "0"


def num(x: float, digits: int | None = None) -> str:
    """A float as SPICE text: shortest round-trip decimal, no scale suffix.

    ``digits`` rounds derived quantities (times, tolerances: products like 0.5·1e-9 that
    would print as ``5.000000000000001e-10``) to that many significant digits; device
    parameters are always written exactly.
    """
    x = float(x)
    if digits is not None and math.isfinite(x):
        x = float(f"{x:.{digits}g}")
    if x == 0:
        return "0"
    return repr(x)


def tnum(x: float) -> str:
    """A derived time, tolerance or capacitance: 12 significant digits."""
    return num(x, 12)


def signed_sum(terms: list[tuple[float, str]], constant: float = 0.0) -> str:
    """``Σ coef·expr + constant`` as text with explicit signs (``0.5*V(n1) - 0.25*V(n2) + 0.1``).

    Zero coefficients are dropped; an empty sum is ``0``.
    """
    pieces = [(coef < 0, expr if abs(coef) == 1.0 else f"{num(abs(coef))}*{expr}")
              for coef, expr in terms if coef != 0]
    if constant != 0:
        pieces.append((constant < 0, num(abs(constant))))
    if not pieces:
        return "0"
    text = ("-" if pieces[0][0] else "") + pieces[0][1]
    for negative, body in pieces[1:]:
        text += f" {'-' if negative else '+'} {body}"
    return text


@dataclass(frozen=True)
class Element:
    """One SPICE element.

    ``kind``: ``C`` capacitor to ground, ``BI`` behavioural current source, ``BV``
    behavioural voltage source, ``V`` independent voltage source. ``nodes`` are the two
    terminals (current flows from the first through the element into the second for
    ``BI``). ``value`` is the text after the nodes. ``origin`` says where the element comes
    from (``layer 1, edge 4``) for error messages; ``numbers`` are the physical constants it
    uses, checked for finiteness.
    """

    name: str
    kind: str
    nodes: tuple[str, str]
    value: str
    origin: str
    numbers: tuple[float, ...] = ()

    def line(self) -> str:
        return f"{self.name} {self.nodes[0]} {self.nodes[1]} {self.value}"


@dataclass(frozen=True)
class Readout:
    """A quantity read from the deck at the end time: ``copy`` (input row), ``quantity``
    (``v1``…``vd`` for node voltages, ``logp`` for the log-density output) and the node."""

    copy: int
    quantity: str
    node: str
    label: str  # the .meas name, e.g. ``v1`` or ``v1_x3`` in a multi-copy deck


@dataclass(frozen=True)
class Deck:
    """A complete transient deck. ``render()`` gives the ``.cir`` text."""

    title: str
    comments: tuple[str, ...]
    params: tuple[tuple[tuple[str, str], ...], ...]  # .param lines of (name, value) pairs text
    options: tuple[tuple[str, str], ...]  # .options name=value
    sections: tuple[tuple[str, tuple[Element, ...]], ...]  # (comment, elements)
    stop_time_s: float
    max_step_s: float
    readouts: tuple[Readout, ...]
    measures: bool = True
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def elements(self) -> list[Element]:
        return [e for _, elems in self.sections for e in elems]

    def render(self) -> str:
        """The deck as ngspice text, one element per line, ``\\n`` line ends."""
        out = [f"* {self.title}"]
        out += [f"* {c}" if c else "*" for c in self.comments]
        out.append("")
        for line in self.params:
            out.append(".param " + " ".join(f"{name}={value}" for name, value in line))
        out.append(".options " + " ".join(f"{k}={v}" for k, v in self.options))
        for comment, elems in self.sections:
            out.append("")
            out.append(f"* {comment}")
            out += [e.line() for e in elems]
        out.append("")
        step = self.stop_time_s / 100
        out.append(f".tran {tnum(step)} {tnum(self.stop_time_s)} 0 {tnum(self.max_step_s)} uic")
        out.append(".save " + " ".join(f"V({r.node})" for r in self.readouts))
        if self.measures:
            for r in self.readouts:
                out.append(f".meas tran {r.label} FIND V({r.node}) AT={tnum(self.stop_time_s)}")
        out.append(".end")
        return "\n".join(out) + "\n"

