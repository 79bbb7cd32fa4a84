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
    the divergence is ``(batch,)`` in 1/model-time. An operator built from parameters with
    leading *instance* dimensions (one set of devices per emulated chip, ``models.chip``)
    takes ``v (*instances, batch, nodes)``; its per-edge tensors are then stored as
    ``(*instances, 1, edges)`` and its per-node ones as ``(*instances, 1, nodes + 1)`` so
    that they broadcast over the batch.
    """

    form: str
    n_nodes: int
    act: str
    leaky_slope: float
    c: Tensor  # (edges,)
    w: Tensor  # (edges,) divergence weights s·(b[d≠0]/C_d − a[s≠0]/C_s)
    noise_gain: Tensor  # (edges,) s·(|a| + |b|)/2: conductance per unit act' (models.chip noise)
    A: Tensor | None = None  # (nodes, edges), dense form
    B: Tensor | None = None  # (edges, nodes), dense form, includes 1/C
    a: Tensor | None = None  # (edges,), gather form
    b: Tensor | None = None
    src: Tensor | None = None  # (edges,) long, 0 = ground
    dst: Tensor | None = None
    inv_cap: Tensor | None = None  # (nodes,) gather form; None when every C is 1
    current_scale: Tensor | None = None  # (edges,) per-device I0 factor; None when all are 1
    # a characterized cell's extra terms (models.cell_law): dv/dt += v·linear + bias
    linear: Tensor | None = None  # (nodes, nodes)
    bias: Tensor | None = None  # (nodes,)

    def _pre_activation(self, v: Tensor) -> Tensor:
        if self.form == "dense":
            if v.ndim == 2 and self.A.ndim == 2:
                return torch.addmm(self.c, v, self.A)  # (batch, edges)
            return torch.matmul(v, self.A) + self.c
        v_pad = torch.nn.functional.pad(v, (1, 0))  # column 0 is ground, 0 V
        return self.a * v_pad[..., self.src] + self.b * v_pad[..., self.dst] + self.c

    def kcl(self, i: Tensor) -> Tensor:
        """Node currents over capacitances: device currents ``i (…, batch, edges)`` (model
        amperes, already scaled) → dv/dt ``(…, batch, nodes)``."""
        if self.form == "dense":
            return torch.matmul(i, self.B)
        out = i.new_zeros(*i.shape[:-1], self.n_nodes + 1)
        out = out.index_add(-1, self.dst, i).index_add(-1, self.src, -i)[..., 1:]
        return out if self.inv_cap is None else out * self.inv_cap

    def _divergence(self, slope: Tensor) -> Tensor:
        if self.w.ndim == 1:
            div = slope @ self.w
        else:
            div = torch.matmul(slope, self.w.transpose(-1, -2)).squeeze(-1)
        return div if self.linear is None else div + torch.diagonal(self.linear).sum()

    def _affine(self, v: Tensor, dv: Tensor) -> Tensor:
        """dv plus the cell's linear and constant terms, when there are any."""
        return dv if self.linear is None else dv + v @ self.linear + self.bias

    def currents_and_slopes(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Device currents (model amperes, current scale applied) and act'(z), each
        ``(…, batch, edges)``."""
        i, slope = activation_and_slope(self.act, self._pre_activation(v), self.leaky_slope)
        return (i if self.current_scale is None else i * self.current_scale), slope

    def rhs(self, v: Tensor) -> Tensor:
        """dv/dt, ``(batch, nodes)``."""
        i = activation(self.act, self._pre_activation(v), self.leaky_slope)
        return self._affine(v, self.kcl(i if self.current_scale is None else i * self.current_scale))

    def rhs_and_divergence(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(dv/dt ``(batch, nodes)``, closed-form tr(∂f/∂v) ``(batch,)``) in one pass."""
        i, slope = self.currents_and_slopes(v)
        return self._affine(v, self.kcl(i)), self._divergence(slope)


def _incidence(index: Tensor, n_nodes: int, dtype: torch.dtype) -> Tensor:
    """``(nodes + 1, edges)`` one-hot: 1 at (index_e, e); row 0 is ground."""
    rows = torch.arange(n_nodes + 1, device=index.device)
    return (rows[:, None] == index[None, :]).to(dtype)


def layer_operator(family: DeviceFamily, params: dict[str, Tensor], src: Tensor, dst: Tensor, n_nodes: int,
                   inv_cap_padded: Tensor, form: str = "gather", leaky_slope: float = 0.2,
                   current_scale: Tensor | None = None, unit_capacitance: bool = False) -> LayerOperator:
    """Freeze raw device parameters into a :class:`LayerOperator` (differentiable).

    Args:
        family: the device family; ``params`` are its raw parameters, each ``(edges,)`` or
            ``(*instances, edges)`` for a stack of emulated chips.
        src, dst: ``(edges,)`` terminal node indices, 0 = ground.
        inv_cap_padded: ``(nodes + 1,)`` or ``(*instances, nodes + 1)`` inverse node
            capacitances (dimensionless) with 0 at index 0, so ground drops out.
        current_scale: optional per-device I0 factor, shaped like the parameters.
        unit_capacitance: every C is 1 (skips a multiply in the gather form).
    """
    a, b, c = family.effective(params)
    batched = a.ndim > 1
    if batched:  # (*instances, edges) → (*instances, 1, edges): broadcast over the batch rows
        a, b, c = a.unsqueeze(-2), b.unsqueeze(-2), c.unsqueeze(-2)
        inv_cap_padded = inv_cap_padded.unsqueeze(-2)
        if current_scale is not None:
            current_scale = current_scale.unsqueeze(-2)
    inv = inv_cap_padded
    w = b * inv[..., dst] - a * inv[..., src]
    gain = 0.5 * (a.abs() + b.abs())
    if current_scale is not None:
        w, gain = w * current_scale, gain * current_scale
    if form == "dense":
        p_src, p_dst = _incidence(src, n_nodes, a.dtype), _incidence(dst, n_nodes, a.dtype)
        A = (p_src * a + p_dst * b)[..., 1:, :]  # ground row dropped
        B = (p_dst - p_src).transpose(0, 1)[:, 1:] * inv[..., 1:]
        return LayerOperator("dense", n_nodes, family.activation, leaky_slope, c=c, w=w, noise_gain=gain,
                             A=A, B=B, current_scale=current_scale)
    return LayerOperator("gather", n_nodes, family.activation, leaky_slope, c=c, w=w, noise_gain=gain,
                         a=a, b=b, src=src, dst=dst,
                         inv_cap=None if unit_capacitance and not batched else inv[..., 1:],
                         current_scale=current_scale)


class CircuitLayer(nn.Module):
    """One layer: an edge list, a device family and its learnable parameters.

    Args:
        spec: nodes, edges, duration and capacitances of the layer.
        device: a device family name (``affine-tanh``, ``diff-relu``, ``conductance`` …).
        params: optional initial raw parameters, each ``(edges,)``.
        leaky_slope: negative slope of ``leaky_relu`` devices.
        current_scale: optional per-device I0 factor ``(edges,)`` (an emulated chip's
            mismatch, ``models.chip``); not learnable, not saved in checkpoints.
    """

    def __init__(self, spec: LayerSpec, device: str, params: dict[str, Tensor] | None = None,
                 leaky_slope: float = 0.2, init_scale: float = 0.5, generator: torch.Generator | None = None,
                 current_scale: Tensor | None = None):
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
        if current_scale is not None:
            current_scale = torch.as_tensor(current_scale, dtype=torch.get_default_dtype()).reshape(-1)
            if current_scale.shape[0] != n_edges:
                raise ValueError(f"current_scale has {current_scale.shape[0]} values for {n_edges} edges")
        self.register_buffer("current_scale", current_scale, persistent=False)
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
        return layer_operator(self.family, dict(self.params.items()), self.src, self.dst, self.nodes,
                              self.inv_cap_padded, self.choose_form(form), self.leaky_slope,
                              self.current_scale, self.unit_capacitance)


def autograd_divergence(op: LayerOperator, v: Tensor) -> Tensor:
    """tr(∂f/∂v) by autograd, one node at a time: ``(batch,)``. For verification only."""
    with torch.enable_grad():
        v = v.detach().requires_grad_(True)
        f = op.rhs(v)
        div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
        for k in range(v.shape[1]):
            div = div + torch.autograd.grad(f[:, k].sum(), v, retain_graph=True)[0][:, k]
    return div
