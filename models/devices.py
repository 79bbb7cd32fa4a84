"""The device table: every device family and activation defined once.

Every family reduces to one *effective affine* form, which is what the circuit core
evaluates:  i_e = act(a_e·v_s + b_e·v_d + c_e)

- ``affine-<act>``: parameters a, b, c used as they are;
- ``diff-<act>``:   i = act(a·(v_s − v_d) + c), i.e. b = −a;
- ``conductance``:  i = g·(v_s − v_d), i.e. act = identity, a = g, b = −g, c = 0.

Currents are in model amperes (one unit = I0), voltages in model volts (one unit = V0);
:data:`PARAMS` gives each raw parameter's units.

Each :class:`Activation` carries everything a rendering needs:

- ``current``/``slope``: act(z) and act'(z) as expression trees (``models.device_expr``),
  rendered to SPICE and Verilog-A text and to ONNX nodes;
- ``torch_fn``/``torch_with_slope``: the differentiable torch kernels of the generic model;
- ``direct``/``logistic``: :class:`FusedForm` s, the forms the fast engine and the NumPy
  path evaluate with their constants folded into the layer weights.

``tests/test_device_renderings.py`` runs every family through every rendering.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from .config import ACTIVATIONS, DEVICE_FAMILIES
from .device_expr import Expr, Z, if_positive, lit, maximum, param, tanh

LEAKY = "leaky_slope"  # the one device-law parameter: the negative slope of leaky_relu


@dataclass(frozen=True)
class Param:
    """A raw device parameter: its meaning and its units (model units, physical units)."""

    name: str
    meaning: str
    model_unit: str
    physical_unit: str


PARAMS = {
    "a": Param("a", "gain on the source terminal voltage", "1/model volt", "1/V (a/V0)"),
    "b": Param("b", "gain on the destination terminal voltage", "1/model volt", "1/V (b/V0)"),
    "c": Param("c", "offset of the activation's argument", "dimensionless", "dimensionless"),
    "g": Param("g", "conductance", "model ampere/model volt", "S (g·I0/V0)"),
}


@dataclass(frozen=True)
class FusedForm:
    """act and act' in the shape a fast kernel evaluates, constants to fold into weights:

        y = kernel(gain·z),   act(z) = scale·y + offset,   act'(z) = slope_const + slope_feature·g(y)

    ``kernel``: an elementwise function applied in place (``sigmoid``, ``tanh``, ``relu``,
    ``leaky_relu`` with ``leaky_slope``, ``identity``); ``feature`` g: computed from y
    (``logistic_slope`` y − y², ``square`` y², ``step`` [y > 0]) or None when
    ``slope_feature`` is 0.
    """

    kernel: str
    feature: str | None
    gain: float = 1.0
    scale: float = 1.0
    offset: float = 0.0
    slope_const: float = 0.0
    slope_feature: float = 0.0
    leaky_slope: float = 0.0

    def torch_ops(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], None] | None]:
        """``(kernel_(y) in place, feature(y, out=g) or None)`` on torch tensors."""
        s = self.leaky_slope
        kernel = {"sigmoid": torch.sigmoid_, "tanh": torch.tanh_, "relu": torch.relu_,
                  "leaky_relu": lambda y: torch.nn.functional.leaky_relu_(y, s),
                  "identity": lambda y: y}[self.kernel]
        feature = None if self.feature is None else {
            "logistic_slope": lambda y, g: torch.addcmul(y, y, y, value=-1.0, out=g),
            "square": lambda y, g: torch.mul(y, y, out=g),
            "step": lambda y, g: torch.gt(y, 0, out=g),
        }[self.feature]
        return kernel, feature

    def numpy_ops(self) -> tuple[Callable[[np.ndarray, np.ndarray], object],
                                 Callable[[np.ndarray, np.ndarray], object] | None]:
        """``(kernel(y, out), feature(y, out) or None)`` on NumPy arrays, called with
        positional ``out`` (plain ufuncs where one exists: the small-batch path is bound by
        Python call overhead)."""
        s = self.leaky_slope

        def sigmoid(y, out):
            np.negative(y, out)
            np.exp(out, out)
            np.add(out, 1.0, out)
            return np.reciprocal(out, out)

        def logistic_slope(y, out):
            np.square(y, out)
            return np.subtract(y, out, out)

        kernel = {"sigmoid": sigmoid, "tanh": np.tanh, "relu": lambda y, out: np.maximum(y, 0.0, out),
                  "leaky_relu": lambda y, out: np.maximum(y, s * y, out),
                  "identity": np.positive}[self.kernel]
        feature = None if self.feature is None else {
            "logistic_slope": logistic_slope, "square": np.square,
            "step": lambda y, out: np.greater(y, 0.0, out),
        }[self.feature]
        return kernel, feature


@dataclass(frozen=True)
class Activation:
    """One device nonlinearity, defined once (see the module doc for who renders what)."""

    name: str
    current: Expr  # act(z)
    slope: Expr  # act'(z)
    torch_fn: Callable[[Tensor, float], Tensor]
    torch_with_slope: Callable[[Tensor, float], tuple[Tensor, Tensor]]
    direct_form: FusedForm  # with the activation's own kernel
    logistic_form: FusedForm | None = None  # through the logistic function σ, when one exists

    @property
    def constant_slope(self) -> bool:
        """act'(z) is the constant 1 (identity): renderings may drop the factor."""
        return self.slope == lit(1)

    def direct(self, leaky_slope: float) -> FusedForm:
        return replace(self.direct_form, leaky_slope=leaky_slope,
                       **_leaky_constants(self.name, leaky_slope))

    def logistic(self, leaky_slope: float) -> FusedForm | None:
        """The form through σ (tanh(z) = 2σ(2z) − 1, tanh' = 4(σ − σ²)): torch's CPU sigmoid
        is ~3–4× faster than its tanh (docs/engine.md, levers)."""
        return None if self.logistic_form is None else replace(self.logistic_form, leaky_slope=leaky_slope)


def _leaky_constants(name: str, leaky_slope: float) -> dict:
    # leaky_relu' = s + (1 − s)·[z > 0]: the slope constants depend on the parameter
    return dict(slope_const=leaky_slope, slope_feature=1.0 - leaky_slope) if name == "leaky_relu" else {}


def _tanh_with_slope(z: Tensor, _s: float) -> tuple[Tensor, Tensor]:
    y = torch.tanh(z)
    return y, 1.0 - y * y


def _relu_with_slope(z: Tensor, _s: float) -> tuple[Tensor, Tensor]:
    pos = z > 0
    return torch.where(pos, z, 0.0), pos.to(z.dtype)


def _leaky_with_slope(z: Tensor, s: float) -> tuple[Tensor, Tensor]:
    pos = z > 0
    slope = pos.to(z.dtype) * (1.0 - s) + s  # in z's dtype, not float32
    return torch.where(pos, z, s * z), slope


_TANH_Z = tanh(Z)
ACTIVATION_TABLE: dict[str, Activation] = {a.name: a for a in (
    Activation("tanh", _TANH_Z, 1 - _TANH_Z * _TANH_Z,
               lambda z, s: torch.tanh(z), _tanh_with_slope,
               FusedForm("tanh", "square", slope_const=1.0, slope_feature=-1.0),
               FusedForm("sigmoid", "logistic_slope", gain=2.0, scale=2.0, offset=-1.0, slope_feature=4.0)),
    Activation("relu", maximum(Z, 0), if_positive(Z, 1, 0),
               lambda z, s: torch.relu(z), _relu_with_slope,
               FusedForm("relu", "step", slope_feature=1.0)),
    # max(z, s·z) equals leaky_relu for 0 < s < 1 (the configured range)
    Activation("leaky_relu", maximum(Z, param(LEAKY) * Z), if_positive(Z, 1, param(LEAKY)),
               lambda z, s: torch.nn.functional.leaky_relu(z, s), _leaky_with_slope,
               FusedForm("leaky_relu", "step")),
    Activation("identity", Z, lit(1),
               lambda z, s: z, lambda z, s: (z, torch.ones_like(z)),
               FusedForm("identity", None, slope_const=1.0)),
)}
if set(ACTIVATION_TABLE) != set(ACTIVATIONS):  # models.config validates names against this table
    raise ImportError(f"device table {sorted(ACTIVATION_TABLE)} differs from config.ACTIVATIONS {sorted(ACTIVATIONS)}")


def get_activation(name: str) -> Activation:
    """The table entry of ``name``; ValueError if unknown."""
    try:
        return ACTIVATION_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}") from None


@dataclass(frozen=True)
class DeviceFamily:
    """A device family: its activation and the names of its raw parameters (:data:`PARAMS`)."""

    name: str
    activation: str
    param_names: tuple[str, ...]

    @classmethod
    def parse(cls, name: str) -> DeviceFamily:
        """Parse ``affine-tanh``, ``diff-relu``, ``conductance`` …; ValueError if unknown."""
        if name not in DEVICE_FAMILIES:
            raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICE_FAMILIES)}")
        if name == "conductance":
            return cls(name, "identity", ("g",))
        kind, act = name.split("-", 1)
        return cls(name, act, ("a", "b", "c") if kind == "affine" else ("a", "c"))

    @property
    def law(self) -> Activation:
        """The activation's table entry."""
        return ACTIVATION_TABLE[self.activation]

    @property
    def params(self) -> tuple[Param, ...]:
        """The raw parameters with their meaning and units."""
        return tuple(PARAMS[n] for n in self.param_names)

    def effective(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Map raw parameters, each ``(edges,)``, to effective ``(a, b, c)``, each ``(edges,)``."""
        if self.name == "conductance":
            g = params["g"]
            return g, -g, torch.zeros_like(g)
        if self.param_names == ("a", "c"):
            return params["a"], -params["a"], params["c"]
        return params["a"], params["b"], params["c"]


def activation(name: str, z: Tensor, leaky_slope: float = 0.2) -> Tensor:
    """The device I–V nonlinearity applied elementwise to ``z`` (any shape)."""
    return get_activation(name).torch_fn(z, leaky_slope)


def activation_and_slope(name: str, z: Tensor, leaky_slope: float = 0.2) -> tuple[Tensor, Tensor]:
    """``(act(z), act'(z))`` sharing work where possible (tanh' = 1 − tanh²)."""
    return get_activation(name).torch_with_slope(z, leaky_slope)
