"""The published inference method, reimplemented faithfully as the benchmark's baseline.

What the KirchhoffNet paper's code does at inference (and what we reproduce here):

- torchdiffeq ``odeint`` with ``dopri5`` at ``rtol = atol = 1e-4``, one call per layer
  (time slice), no adjoint (nothing is differentiated at inference);
- a gather–scatter right-hand side: gather the terminal voltages of every device, apply
  the device, scatter-add the currents into the nodes (Kirchhoff's current law);
- the log-density trace by autograd, one dimension at a time (FFJORD's exact ``trace_jac``:
  D backward passes per evaluation), with d log p/dt = −tr(∂f/∂v);
- float32, on the CPU (or on ``device``, for a same-GPU comparison).

It reads the parameters of a :class:`models.flow.KirchhoffNet`, so both methods solve the
same circuit from the same inputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from models.devices import activation
from models.errors import UserInputError
from models.flow import KirchhoffNet, standard_normal_log_prob

PUBLISHED_RTOL = 1e-4
PUBLISHED_ATOL = 1e-4


class PublishedBaseline:
    """Sampling and log-density the way the published code computes them.

    Args:
        model: the circuit (its parameters are copied, cast to ``dtype``).
        dtype: float32 as published.
    """

    def __init__(self, model: KirchhoffNet, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        if not model.spec.bijective:
            raise UserInputError("the published method needs data_dim nodes in every layer")
        self.spec = model.spec
        self.dtype = dtype
        self.device = torch.device(device)
        self.layers = []
        for layer, lspec in zip(model.layers, model.spec.layers):
            a, b, c = (t.detach().to(device=self.device, dtype=dtype).clone()
                       for t in layer.family.effective(dict(layer.params.items())))
            inv = layer.inv_cap_padded.to(device=self.device, dtype=dtype)[1:]
            self.layers.append(dict(a=a, b=b, c=c, src=layer.src.to(self.device), dst=layer.dst.to(self.device),
                                    act=layer.family.activation,
                                    inv_cap=inv, duration=lspec.duration, nodes=lspec.nodes))
        self.nfe = 0

    def _rhs(self, L: dict, v: Tensor) -> Tensor:
        """Gather–scatter KCL: ``v (batch, nodes)`` → dv/dt ``(batch, nodes)``."""
        self.nfe += 1
        v_pad = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)
        i = activation(L["act"], L["a"] * v_pad[:, L["src"]] + L["b"] * v_pad[:, L["dst"]] + L["c"],
                       self.spec.leaky_slope)
        out = torch.zeros_like(v_pad).index_add(1, L["dst"], i).index_add(1, L["src"], -i)
        return out[:, 1:] * L["inv_cap"]

    def _func(self, L: dict):
        def f(_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            v = state[0]
            with torch.enable_grad():
                v = v.detach().requires_grad_(True) if not v.requires_grad else v
                dv = self._rhs(L, v)
                tr = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
                for k in range(v.shape[1]):  # exact trace, one backward pass per dimension
                    tr = tr + torch.autograd.grad(dv[:, k].sum(), v, create_graph=False, retain_graph=True)[0][:, k]
            return dv.detach(), -tr.detach()
        return f

    def _solve(self, v: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        from torchdiffeq import odeint
        delta = torch.zeros(v.shape[0], dtype=self.dtype, device=self.device)
        order = reversed(self.layers) if reverse else self.layers
        for L in order:
            t = torch.tensor([L["duration"], 0.0] if reverse else [0.0, L["duration"]], dtype=self.dtype,
                             device=self.device)
            vs, ds = odeint(self._func(L), (v, delta), t, method="dopri5", rtol=PUBLISHED_RTOL, atol=PUBLISHED_ATOL)
            v, delta = vs[-1], ds[-1]
        return v, delta

    def sample(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z (batch, d)`` → ``(x (batch, d), log q(x) (batch,))``."""
        z = z.to(device=self.device, dtype=self.dtype)
        x, delta = self._solve(z, reverse=False)
        return x, standard_normal_log_prob(z) + delta

    def log_prob(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (batch, d)`` → ``(z (batch, d), log p(x) (batch,))``: integrates T → 0."""
        z, delta = self._solve(x.to(device=self.device, dtype=self.dtype), reverse=True)
        return z, standard_normal_log_prob(z) - delta

