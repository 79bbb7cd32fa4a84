"""Device families: the learnable two-terminal elements on the edges.

Every family reduces to one *effective affine* form, which is what the circuit core
evaluates:  i_e = act(a_e·v_s + b_e·v_d + c_e)

- ``affine-<act>``: parameters a, b, c used as they are;
- ``diff-<act>``:   i = act(a·(v_s − v_d) + c), i.e. b = −a;
- ``conductance``:  i = g·(v_s − v_d), i.e. act = identity, a = g, b = −g, c = 0.

Currents are in model amperes (one unit = I0), voltages in model volts (one unit = V0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import DEVICE_FAMILIES


@dataclass(frozen=True)
class DeviceFamily:
    """A device family: its activation and the names of its raw parameters."""

    name: str
    activation: str
    param_names: tuple[str, ...]

    @classmethod
    def parse(cls, name: str) -> "DeviceFamily":
        """Parse ``affine-tanh``, ``diff-relu``, ``conductance`` …; ValueError if unknown."""
        if name not in DEVICE_FAMILIES:
            raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICE_FAMILIES)}")
        if name == "conductance":
            return cls(name, "identity", ("g",))
        kind, act = name.split("-", 1)
        return cls(name, act, ("a", "b", "c") if kind == "affine" else ("a", "c"))

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
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu":
        return torch.relu(z)
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(z, leaky_slope)
    if name == "identity":
        return z
    raise ValueError(f"unknown activation {name!r}")


def activation_and_slope(name: str, z: Tensor, leaky_slope: float = 0.2) -> tuple[Tensor, Tensor]:
    """``(act(z), act'(z))`` sharing work where possible (tanh' = 1 − tanh²)."""
    if name == "tanh":
        y = torch.tanh(z)
        return y, 1.0 - y * y
    if name == "relu":
        pos = z > 0
        return torch.where(pos, z, 0.0), pos.to(z.dtype)
    if name == "leaky_relu":
        pos = z > 0
        slope = pos.to(z.dtype) * (1.0 - leaky_slope) + leaky_slope  # in z's dtype, not float32
        return torch.where(pos, z, leaky_slope * z), slope
    if name == "identity":
        return z, torch.ones_like(z)
    raise ValueError(f"unknown activation {name!r}")
