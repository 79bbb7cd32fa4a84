"""A tiny expression language for device laws: act(z) and act'(z) written once, symbolically.

``models.devices`` states each activation and its slope as an :class:`Expr`; every target
renders the same tree: simulator text (SPICE here, Verilog-A, any C-like dialect through
:func:`render_text`), ONNX nodes (``export.onnx_graphs``), or numbers (:func:`evaluate`,
used by the parity tests). Adding a target is one function that walks the tree.

Leaves: :data:`Z` (the pre-activation z = a·v_s + b·v_d + c, dimensionless), :func:`lit`
(an exact small integer) and :func:`param` (a named device-law parameter such as the
``leaky_slope``). Operations: ``tanh``, ``max``, ``x * y``, ``x - y`` and
``if_positive(c, t, e)`` = t where c > 0, else e.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Expr:
    """One node of an expression tree: ``op`` with ``args`` (sub-trees) or a leaf ``value``."""

    op: str  # "z", "lit", "param", "tanh", "max", "mul", "sub", "if_positive"
    args: tuple[Expr, ...] = ()
    value: int | str | None = None  # the integer of "lit", the name of "param"

    def __mul__(self, other: Expr | int) -> Expr:
        return Expr("mul", (self, _expr(other)))

    def __rmul__(self, other: int) -> Expr:
        return Expr("mul", (_expr(other), self))

    def __sub__(self, other: Expr | int) -> Expr:
        return Expr("sub", (self, _expr(other)))

    def __rsub__(self, other: int) -> Expr:
        return Expr("sub", (_expr(other), self))


def _expr(x: Expr | int) -> Expr:
    return x if isinstance(x, Expr) else lit(x)


Z = Expr("z")


def lit(x: int) -> Expr:
    """An exact integer literal (written as ``1``, ``0``)."""
    return Expr("lit", value=int(x))


def param(name: str) -> Expr:
    """A device-law parameter, given a value when rendered (e.g. ``leaky_slope``)."""
    return Expr("param", value=name)


def tanh(x: Expr) -> Expr:
    return Expr("tanh", (x,))


def maximum(x: Expr, y: Expr | int) -> Expr:
    return Expr("max", (x, _expr(y)))


def if_positive(cond: Expr, then: Expr | int, otherwise: Expr | int) -> Expr:
    """``then`` where ``cond > 0``, else ``otherwise``."""
    return Expr("if_positive", (cond, _expr(then), _expr(otherwise)))


def evaluate(expr: Expr, z: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
    """The tree evaluated elementwise with NumPy on ``z`` (any shape), parameters from ``values``."""
    args = [evaluate(a, z, values) for a in expr.args]
    if expr.op == "z":
        return np.asarray(z)
    if expr.op == "lit":
        return np.asarray(float(expr.value))
    if expr.op == "param":
        return np.asarray(float(values[expr.value]))
    if expr.op == "tanh":
        return np.tanh(args[0])
    if expr.op == "max":
        return np.maximum(args[0], args[1])
    if expr.op == "mul":
        return args[0] * args[1]
    if expr.op == "sub":
        return args[0] - args[1]
    if expr.op == "if_positive":
        return np.where(args[0] > 0, args[1], args[2])
    raise ValueError(f"unknown expression op {expr.op!r}")


@dataclass(frozen=True)
class TextDialect:
    """How a C-like simulator language writes the operations: function names and numbers.

    ngspice B-sources and Verilog-A share the syntax of every operation used here
    (``tanh(x)``, ``max(x, y)``, ``c > 0 ? t : e``), so a dialect mostly says how to print a
    parameter value.
    """

    number: Callable[[float], str] = repr
    functions: Mapping[str, str] | None = None  # op -> function name; default: the op's own name

    def function(self, op: str) -> str:
        return (self.functions or {}).get(op, op)


# binding strength of each rendered form: z is an arbitrary sum, so it is always
# parenthesised as an operand; calls and leaves never are
_ATOM, _MUL, _SUB, _CMP, _TERNARY, _SUM = 10, 6, 5, 4, 1, 0


def render_text(expr: Expr, z: str, values: Mapping[str, float], dialect: TextDialect = TextDialect()) -> str:
    """``expr`` as text with ``z`` substituted, safe to use as a factor of a product."""
    text, strength = _render(expr, z, values, dialect)
    return text if strength >= _MUL else f"({text})"


def _render(e: Expr, z: str, values: Mapping[str, float], d: TextDialect) -> tuple[str, int]:
    def operand(sub: Expr, need: int) -> str:
        text, strength = _render(sub, z, values, d)
        return text if strength >= need else f"({text})"

    if e.op == "z":
        return z, _SUM
    if e.op == "lit":
        return str(e.value), _ATOM
    if e.op == "param":
        return d.number(values[e.value]), _ATOM
    if e.op in ("tanh", "max"):
        inner = ", ".join(_render(a, z, values, d)[0] for a in e.args)
        return f"{d.function(e.op)}({inner})", _ATOM
    if e.op == "mul":
        return f"{operand(e.args[0], _MUL)}*{operand(e.args[1], _MUL)}", _MUL
    if e.op == "sub":
        return f"{operand(e.args[0], _SUB)} - {operand(e.args[1], _SUB + 1)}", _SUB
    if e.op == "if_positive":
        c, t, f = (operand(e.args[0], _CMP + 1), operand(e.args[1], _TERNARY + 1), operand(e.args[2], _TERNARY + 1))
        return f"{c} > 0 ? {t} : {f}", _TERNARY
    raise ValueError(f"unknown expression op {e.op!r}")
