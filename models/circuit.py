"""The circuit core: one time slice (layer) of a KirchhoffNet and its right-hand side.

Kirchhoff's current law at every non-ground node k (DESIGN.md §1):

    C_k · dv_k/dt = Σ_{e: d_e = k} i_e − Σ_{e: s_e = k} i_e,   i_e = act(a_e v_s + b_e v_d + c_e)

and the exact divergence of that vector field (DESIGN.md §2):

    tr(∂f/∂v) = Σ_e act'(z_e) · (b_e [d_e ≠ 0] / C_d − a_e [s_e ≠ 0] / C_s)

A :class:`CircuitLayer` owns the parameters; :meth:`CircuitLayer.operator` freezes them
into a :class:`LayerOperator` once per solve, in one of two equivalent forms:

- ``gather``: gather v at the edge terminals, apply the device, scatter-add into nodes;
- ``dense``: f(v) = act(v·A + c)·B with A ``(nodes, edges)`` and B ``(edges, nodes)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .config import LayerSpec
from .devices import DeviceFamily, activation, activation_and_slope

Form = Literal["auto", "dense", "gather"]

# Dense matmuls win while the node count is small; gather–scatter wins for large sparse
# circuits (it touches each edge once, dense touches nodes × edges).
DENSE_MAX_NODES = 16


@dataclass(frozen=True)
class LayerOperator:
    """A layer's vector field with parameters frozen for one solve.

    Shapes: ``v`` is ``(batch, nodes)`` in model volts; ``dv/dt`` is ``(batch, nodes)``;
    the divergence is ``(batch,)`` in 1/model-time.
    """

    form: str
    n_nodes: int
    act: str
    leaky_slope: float
    c: Tensor  # (edges,)
    w: Tensor  # (edges,) divergence weights b[d≠0]/C_d − a[s≠0]/C_s
    A: Tensor | None = None  # (nodes, edges), dense form
    B: Tensor | None = None  # (edges, nodes), dense form, includes 1/C
    a: Tensor | None = None  # (edges,), gather form
    b: Tensor | None = None
    src: Tensor | None = None  # (edges,) long, 0 = ground
    dst: Tensor | None = None
    inv_cap: Tensor | None = None  # (nodes,) or None when every C is 1

    def _pre_activation(self, v: Tensor) -> Tensor:
        if self.form == "dense":
            return torch.addmm(self.c, v, self.A)  # (batch, edges)
        v_pad = torch.nn.functional.pad(v, (1, 0))  # column 0 is ground, 0 V
        return self.a * v_pad[:, self.src] + self.b * v_pad[:, self.dst] + self.c

    def _kcl(self, i: Tensor, nodes: int) -> Tensor:
        if self.form == "dense":
            return i @ self.B
        out = i.new_zeros(i.shape[0], nodes + 1)
        out = out.index_add(1, self.dst, i).index_add(1, self.src, -i)[:, 1:]
        return out if self.inv_cap is None else out * self.inv_cap

    def rhs(self, v: Tensor) -> Tensor:
        """dv/dt, ``(batch, nodes)``."""
        z = self._pre_activation(v)
        return self._kcl(activation(self.act, z, self.leaky_slope), self.n_nodes)

    def rhs_and_divergence(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(dv/dt ``(batch, nodes)``, closed-form tr(∂f/∂v) ``(batch,)``) in one pass."""
        z = self._pre_activation(v)
        i, slope = activation_and_slope(self.act, z, self.leaky_slope)
        return self._kcl(i, self.n_nodes), slope @ self.w


class CircuitLayer(nn.Module):
    """One layer: an edge list, a device family and its learnable parameters.

    Args:
        spec: nodes, edges, duration and capacitances of the layer.
        device: a device family name (``affine-tanh``, ``diff-relu``, ``conductance`` …).
        params: optional initial raw parameters, each ``(edges,)``.
        leaky_slope: negative slope of ``leaky_relu`` devices.
    """

    def __init__(self, spec: LayerSpec, device: str, params: dict[str, Tensor] | None = None,
                 leaky_slope: float = 0.2, init_scale: float = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        self.spec = spec
        self.family = DeviceFamily.parse(device)
        self.leaky_slope = leaky_slope
        edges = torch.tensor(spec.edges, dtype=torch.long).reshape(-1, 2)
        self.register_buffer("src", edges[:, 0].contiguous(), persistent=False)
        self.register_buffer("dst", edges[:, 1].contiguous(), persistent=False)
        caps = torch.as_tensor(spec.capacitance, dtype=torch.float64).expand(spec.nodes)
        self.unit_capacitance = bool(torch.all(caps == 1.0))
        # index 0 (ground) gets 0 so ground terminals drop out of the divergence weights
        inv = torch.cat([torch.zeros(1, dtype=torch.float64), 1.0 / caps])
        self.register_buffer("inv_cap_padded", inv.to(torch.get_default_dtype()), persistent=False)
        n_edges = edges.shape[0]
        self.params = nn.ParameterDict()
        for name in self.family.param_names:
            if params is not None:
                value = torch.as_tensor(params[name], dtype=torch.get_default_dtype()).reshape(-1)
                if value.shape[0] != n_edges:
                    raise ValueError(f"parameter {name!r} has {value.shape[0]} values for {n_edges} edges")
            else:
                value = torch.randn(n_edges, generator=generator) * init_scale
            self.params[name] = nn.Parameter(value.clone())

    @property
    def nodes(self) -> int:
        return self.spec.nodes

    @property
    def num_edges(self) -> int:
        return self.src.shape[0]

    def choose_form(self, form: Form = "auto") -> str:
        if form != "auto":
            return form
        return "dense" if self.nodes <= DENSE_MAX_NODES else "gather"

    def operator(self, form: Form = "auto") -> LayerOperator:
        """Freeze the current parameters into a :class:`LayerOperator` (differentiable)."""
        a, b, c = self.family.effective(dict(self.params.items()))
        inv = self.inv_cap_padded
        w = b * inv[self.dst] - a * inv[self.src]
        kind = self.choose_form(form)
        if kind == "dense":
            n, e = self.nodes, self.num_edges
            rows = torch.arange(e, device=a.device)
            # built with index_put (accumulate) so a gradient flows to a, b; ground row is dropped
            A = a.new_zeros(n + 1, e).index_put((self.src, rows), a, accumulate=True)
            A = A.index_put((self.dst, rows), b, accumulate=True)[1:]
            B = a.new_zeros(e, n + 1)
            B = B.index_put((rows, self.src), -torch.ones_like(a), accumulate=True)
            B = B.index_put((rows, self.dst), torch.ones_like(a), accumulate=True)[:, 1:]
            B = B * inv[1:]
            return LayerOperator("dense", n, self.family.activation, self.leaky_slope, c=c, w=w, A=A, B=B)
        return LayerOperator("gather", self.nodes, self.family.activation, self.leaky_slope, c=c, w=w,
                             a=a, b=b, src=self.src, dst=self.dst,
                             inv_cap=None if self.unit_capacitance else inv[1:])


def autograd_divergence(op: LayerOperator, v: Tensor) -> Tensor:
    """tr(∂f/∂v) by autograd, one node at a time: ``(batch,)``. For verification only."""
    with torch.enable_grad():
        v = v.detach().requires_grad_(True)
        f = op.rhs(v)
        div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
        for k in range(v.shape[1]):
            div = div + torch.autograd.grad(f[:, k].sum(), v, retain_graph=True)[0][:, k]
    return div
