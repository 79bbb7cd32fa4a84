"""Verilog-A compact models of the KirchhoffNet devices, one module per device family.

Every family becomes two modules rendered from the same formula text the SPICE netlists
use (:func:`family_expressions`), so the compiled device and the behavioural source cannot
drift apart:

- ``kn_<family>`` (e.g. ``kn_affine_tanh``), terminals ``(s, d, en)``: the device. A current
  ``I = i0 · V(en)/von · act(z)`` flows from ``s`` through the device into ``d``, with
  ``z = a·V(s)/v0 + b·V(d)/v0 + c`` (``affine-*``), ``z = a·(V(s) − V(d))/v0 + c``
  (``diff-*``) or ``I = i0 · V(en)/von · g·(V(s) − V(d))/v0`` (``conductance``).
  ``en`` is the layer's switch control: ``V(en) = von`` (1 V) while the layer is connected,
  0 V otherwise (the PWL ramps in between scale the current linearly, as in the SPICE deck).
- ``kn_div_<family>``, terminals ``(s, d, en, acc)``: the log-density divergence current of
  one device, ``−i0 · V(en)/von · w · act'(z)`` injected into the accumulator node ``acc``
  (a capacitor C), so that V(acc) integrates minus the divergence (docs/design.md §2's
  closed-form trace; ``w = b/c_d − a/c_s``, the node capacitances in units of C).

Plus ``kn_dac``, terminal ``(p)``: the input DAC. It holds ``V(p) = vset`` during the
operating point (t = 0) and opens at t = 0⁺ (a switch branch: a voltage contribution at
t ≤ 0, none after), which is how the chip sets its capacitors before the run starts.

Units: ``a, b, c, g, w`` are dimensionless (model units), ``v0`` and ``von`` volts, ``i0``
amperes, ``vset`` volts. All parameters are instance parameters (``type="instance"``), so
every instance carries its own numbers and no model card per device is needed.
"""
from __future__ import annotations

from models.config import DEVICE_FAMILIES
from models.device_expr import render_text
from models.devices import LEAKY, DeviceFamily

DAC_MODULE = "kn_dac"
HEADER = '`include "constants.vams"\n`include "disciplines.vams"\n'


def module_name(family: str, divergence: bool = False) -> str:
    """``affine-tanh`` → ``kn_affine_tanh`` (``kn_div_affine_tanh`` for its divergence)."""
    return ("kn_div_" if divergence else "kn_") + family.replace("-", "_")


def family_param_names(family: str) -> tuple[str, ...]:
    """The family's own parameters (model units), in the order of the parameter table."""
    return DeviceFamily.parse(family).param_names


def family_expressions(family: str, z: str, leaky_slope: float) -> tuple[str, str | None]:
    """``(act(z), act'(z))`` of ``family`` as Verilog-A text (None: act' is the constant 1).

    The one place the Verilog-A rendering reads the device table (``models.devices``):
    the same expression trees the SPICE netlists and ONNX graphs are rendered from.
    """
    law = DeviceFamily.parse(family).law
    values = {LEAKY: float(leaky_slope)}
    slope = None if law.constant_slope else render_text(law.slope, z, values)
    return render_text(law.current, z, values), slope


def _argument(family: str) -> str:
    """The activation's argument ``z`` in terms of the terminal voltages."""
    names = family_param_names(family)
    if names == ("g",):
        return "g*(V(s) - V(d))/v0"
    if names == ("a", "c"):
        return "a*(V(s) - V(d))/v0 + c"
    return "a*V(s)/v0 + b*V(d)/v0 + c"


def _params(names: tuple[str, ...], extra: tuple[tuple[str, str, str], ...]) -> list[str]:
    lines = [f'  (* type="instance", desc="{n} (dimensionless, model units)" *) parameter real {n} = 0.0;'
             for n in names]
    lines += [f'  (* type="instance", desc="{desc}" *) parameter real {n} = {default};' for n, default, desc in extra]
    return lines


_SCALES = (("i0", "1e-3", "current scale I0 (A); negative for the reverse-time circuit"),
           ("v0", "1.0", "voltage scale V0 (V)"),
           ("von", "1.0", "enable voltage (V) at which the device is fully connected"))


def device_module(family: str, leaky_slope: float = 0.2) -> str:
    """Verilog-A text of the ``family`` device module (see the module docstring)."""
    if family not in DEVICE_FAMILIES:
        raise ValueError(f"unknown device {family!r}; expected one of {', '.join(DEVICE_FAMILIES)}")
    act, _ = family_expressions(family, "z", leaky_slope)
    names = family_param_names(family)
    lines = [
        f"// KirchhoffNet device, family {family}: I(s -> d) = i0 * V(en)/von * {act},",
        f"// z = {_argument(family)}.  Terminals: s source, d destination, en layer enable (V).",
        f"module {module_name(family)}(s, d, en);",
        "  inout s, d, en;",
        "  electrical s, d, en;",
        *_params(names, _SCALES),
        "  real z;",
        "  analog begin",
        f"    z = {_argument(family)};",
        f"    I(s, d) <+ i0 * V(en) / von * {act};",
        "  end",
        "endmodule",
    ]
    return "\n".join(lines) + "\n"


def divergence_module(family: str, leaky_slope: float = 0.2) -> str:
    """Verilog-A text of the ``family`` divergence module feeding the accumulator."""
    if family not in DEVICE_FAMILIES:
        raise ValueError(f"unknown device {family!r}; expected one of {', '.join(DEVICE_FAMILIES)}")
    _, slope_text = family_expressions(family, "z", leaky_slope)
    names = family_param_names(family)
    weight = (("w", "0.0", "divergence weight b/c_d - a/c_s (dimensionless)"),)
    derivative = slope_text or "1.0"
    lines = [
        f"// KirchhoffNet divergence current of a {family} device: -i0 * V(en)/von * w * act'(z)",
        "// injected into acc (the log-density accumulator capacitor). Terminals: s, d, en as the",
        "// device, acc accumulator node.",
        f"module {module_name(family, divergence=True)}(s, d, en, acc);",
        "  inout s, d, en, acc;",
        "  electrical s, d, en, acc;",
        *_params(names, _SCALES + weight),
        "  real z;",
        "  analog begin",
        f"    z = {_argument(family)};",
        f"    I(acc) <+ i0 * V(en) / von * w * {derivative};",
        "  end",
        "endmodule",
    ]
    return "\n".join(lines) + "\n"


def dac_module() -> str:
    """Verilog-A text of the input DAC: holds V(p) = vset at t <= 0, open afterwards."""
    lines = [
        "// KirchhoffNet input DAC: V(p) = vset during the operating point (t = 0), then the",
        "// switch opens and the node keeps its charge. Terminal: p the node (V), to ground.",
        f"module {DAC_MODULE}(p);",
        "  inout p;",
        "  electrical p;",
        '  (* type="instance", desc="voltage set before the run (V)" *) parameter real vset = 0.0;',
        "  analog begin",
        "    if ($abstime <= 0.0)",
        "      V(p) <+ vset;",
        "    else",
        "      I(p) <+ 0.0;",
        "  end",
        "endmodule",
    ]
    return "\n".join(lines) + "\n"


def devices_file(family: str, leaky_slope: float = 0.2) -> str:
    """One ``.va`` file with every module a ``family`` circuit needs: device, divergence, DAC."""
    return "\n".join([f"// Verilog-A models of KirchhoffNet {family} circuits, written by kirchhoffnet-serve "
                      "(export.verilog_a)\n" + HEADER,
                      device_module(family, leaky_slope), divergence_module(family, leaky_slope), dac_module()])
