"""Subcircuit-style netlists: every device an instance of a ``.subckt`` per family.

The flat netlist writes each device as a behavioural source with inline numbers; here the
same :class:`~export.spice_ir.Deck` is written with one ``.subckt kn_<family>`` (terminals
``s d en``, parameters a, b, c or g, i0, v0) and one ``.subckt kn_div_<family>`` (terminals
``s d en acc``, plus w) at the top, and every device and divergence current as an
``X`` instance with its parameters. A team replaces the cell by its own transistor-level
design by editing the two ``.subckt`` bodies; the instances stay as they are. The cell names,
terminals and parameters are those of the Verilog-A modules (``export.verilog_a``).
Everything else (capacitors, switch controls, read-outs, analysis) is the flat deck's.
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as fields_of

from .netlist import _act, _act_slope
from .spice_ir import Deck, Element, num
from .verilog_a import family_param_names, module_name


def _argument(family: str) -> str:
    """z in ngspice text; ``{…}`` are evaluated once per instance from its parameters."""
    names = family_param_names(family)
    if names == ("g",):
        return "{g/v0}*(V(s) - V(d))"
    if names == ("a", "c"):
        return "{a/v0}*(V(s) - V(d)) + {c}"
    return "{a/v0}*V(s) + {b/v0}*V(d) + {c}"


def subckt_definitions(family: str, activation: str, leaky_slope: float) -> list[str]:
    """The ``.subckt`` text of a family's device and divergence cells."""
    names = family_param_names(family)
    z = _argument(family)
    act = _act(activation, z, leaky_slope)
    slope = _act_slope(activation, z, leaky_slope)
    defaults = " ".join(f"{n}=0" for n in names)
    return [
        f"* device cell: I(s -> d) = i0 * V(en) * act(z), z = {z.replace('{', '').replace('}', '')}",
        f".subckt {module_name(family)} s d en {defaults} i0=1e-3 v0=1",
        f"B1 s d I={{i0}}*V(en)*{act}",
        ".ends",
        "* divergence cell: -i0 * w * V(en) * act'(z) into the accumulator node acc",
        f".subckt {module_name(family, divergence=True)} s d en acc {defaults} i0=1e-3 v0=1 w=0",
        "B1 0 acc I={-i0*w}*V(en)" + ("" if slope is None else f"*{slope}"),
        ".ends",
    ]


def _instance(el: Element, cell) -> Element:
    params = " ".join(f"{k}={num(v)}" for k, v in cell.params)
    model = module_name(cell.family, divergence=cell.divergence)
    rest = " ".join(cell.nodes[2:])
    return Element("X" + el.name, "X", (cell.nodes[0], cell.nodes[1]), f"{rest} {model} {params}", el.origin,
                   el.numbers)


@dataclass(frozen=True)
class SubcktDeck(Deck):
    """A :class:`Deck` whose devices are subcircuit instances; ``render`` adds the
    ``.subckt`` definitions after the options (so the ngspice runner takes it as is)."""

    definitions: tuple[str, ...] = ()

    def render(self) -> str:
        lines = super().render().split("\n")
        at = next(i for i, line in enumerate(lines) if line.startswith(".options")) + 1
        return "\n".join(lines[:at] + ["", *self.definitions] + lines[at:])


def subckt_deck(deck: Deck, activation: str, leaky_slope: float) -> SubcktDeck:
    """``deck`` with every device and divergence element replaced by its cell instance."""
    cells = deck.meta["cells"]
    families = {c.family for c in cells.values()}
    if len(families) != 1:
        raise ValueError(f"one device family per deck expected, got {sorted(families)}")
    family = families.pop()
    sections = tuple((comment, tuple(_instance(e, cells[e.name]) if e.name in cells else e for e in elems))
                     for comment, elems in deck.sections)
    comments = deck.comments + (
        f"style subckt: device e of layer l is instance XB_L<l>_E<e> of .subckt {module_name(family)} (s d en),",
        f"its divergence current XBD_L<l>_E<e> of {module_name(family, divergence=True)} (s d en acc); "
        "replace the cell bodies below with your own design",
    )
    fields = {f.name: getattr(deck, f.name) for f in fields_of(Deck)}
    return SubcktDeck(**{**fields, "sections": sections, "comments": comments},
                      definitions=tuple(subckt_definitions(family, activation, leaky_slope)))
