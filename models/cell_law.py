"""The device law as a transistor cell realises it: a KirchhoffNet *as characterized*.

An ideal device drives i = tanh(a·v_s + b·v_d + c) out of s and into d. The characterized
cell (``silicon``; docs/silicon.md) differs in four ways that training, the exact
log-density and serving must see, all in model units (I0, V0, the hardware C):

1. **Per-terminal outputs.** Into d flows γ_d·tanh(z) + o_d, into s −γ_s·tanh(z) + o_s
   (two mirror copies: separate gains, offsets); a device touching ground has no output there.
2. **Output conductance.** Each output also draws g·v from its node (active), and every
   *parked* cell (its layer not connected; it stays biased) draws g_p·v and adds o_p.
3. **Capacitive coupling.** Weights are capacitor ratios onto floating gates: the term α·v
   couples the node to a gate of total capacitance κ (units of C) by η = |α|·u, u = 1/(k·V0).
   Charge conservation makes the nodes' capacitance a matrix
       C = diag(c_k + outputs·c_out + κ·Σ_g η_gk) − κ·Σ_g η_g η_gᵀ     (every gate g of every layer)
   and the circuit is C·dv/dt = I(v). C depends on the weights, not on v.
4. **Limits.** A gate carries at most ``limit − cost·|c|`` of same-sign |α| (for each
   (limit, cost) in :attr:`CellLaw.gain_limits`): the divider and the gate's voltage window.
   :func:`project` maps parameters onto that set (training applies it after every step);
   :func:`violations` reports what a model exceeds.

So with M = C⁻¹ a layer's field is dv/dt = act(v·A + c)·B + v·L + m with B = B_γ·M,
L = −diag(G)·M and m = I_bias·M, and its divergence Σ_e act'(z_e)·w_e + tr(L) with
w_e = Σ_k A_ke·B_ek: a dense :class:`models.circuit.LayerOperator` with a linear and a
constant term. Nothing here knows about transistors; ``silicon.characterize`` fills the law.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor


class CellLaw(BaseModel):
    """A characterized cell's law in model units (see the module doc); stored in circuit.json.

    ``gain_*`` γ, ``offset_*`` o (model amperes), ``conductance_*`` g (model amperes per model
    volt), ``gate_capacitance`` κ and ``output_capacitance`` (units of the hardware C),
    ``coupling_per_gain`` u = 1/(k·V0); ``gain_limits``: (limit, cost per |c|) pairs, the
    tighter one binds; ``node_range``: the node voltages (model volts) inside which the outputs
    hold their current (the supply clips beyond); ``source``: the characterization it came
    from (PDK, corner, temperature, cell)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    pdk: str | None = None  # where it was characterized (silicon/datasheets/<pdk>-<corner>-<temp>C)
    corner: str | None = None
    temp_c: float | None = None
    gain_dst: float = Field(1.0, gt=0)
    gain_src: float = Field(1.0, gt=0)
    offset_dst: float = 0.0
    offset_src: float = 0.0
    offset_parked: float = 0.0
    conductance_dst: float = Field(0.0, ge=0)
    conductance_src: float = Field(0.0, ge=0)
    conductance_parked: float = Field(0.0, ge=0)
    gate_capacitance: float = Field(gt=0)
    output_capacitance: float = Field(0.0, ge=0)
    coupling_per_gain: float = Field(gt=0)
    gain_limits: tuple[tuple[float, float], ...] = Field(min_length=1)
    node_range: tuple[float, float] = (-4.0, 4.0)


def _terminal_masks(src: Tensor, dst: Tensor, n_nodes: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """One-hot ``(edges, nodes)`` of each edge's source and destination, ground dropped."""
    rows = torch.arange(1, n_nodes + 1, device=src.device)
    return (src[:, None] == rows[None, :]).to(dtype), (dst[:, None] == rows[None, :]).to(dtype)


def floating_gate_matrix(base: Tensor, couplings: Tensor, gate_total: float | Tensor) -> Tensor:
    """Capacitance matrix ``(N, N)`` of nodes with capacitors ``base (N,)`` to ground and floating
    gates: row g of ``couplings (G, N)`` holds gate g's capacitors to each node, ``gate_total``
    everything on a gate (couplings, fill and parasitic). Charge conservation on every gate:
    C = diag(base + Σ_g c_g) − Σ_g c_g c_gᵀ / C_gt. Any consistent unit."""
    return torch.diag(base + couplings.sum(0)) - couplings.t() @ couplings / gate_total


def capacitance_matrix(law: CellLaw, effective: list[tuple[Tensor, Tensor]], terminals: list[tuple[Tensor, Tensor]],
                       node_caps: Tensor) -> Tensor:
    """The nodes' capacitance matrix C ``(N, N)`` (units of C), differentiable in the weights.

    Args:
        effective: per layer, the effective ``(a, b)`` of its devices, each ``(edges,)``.
        terminals: per layer, ``(src, dst)`` node indices ``(edges,)``, 0 = ground.
        node_caps: ``(N,)`` the explicit node capacitors (the layers' ``capacitance``).
    """
    n = node_caps.shape[0]
    u, kappa = law.coupling_per_gain, law.gate_capacitance
    base = node_caps.clone()
    gates = []
    for (a, b), (src, dst) in zip(effective, terminals):
        p_src, p_dst = _terminal_masks(src, dst, n, a.dtype)
        base = base + law.output_capacitance * (p_src.sum(0) + p_dst.sum(0))
        for sign in (1.0, -1.0):  # gate G+ takes the positive terms, G− the negative ones
            eta = u * (torch.relu(sign * a)[:, None] * p_src + torch.relu(sign * b)[:, None] * p_dst)  # (E, N)
            gates.append(kappa * eta)
    return floating_gate_matrix(base, torch.cat(gates), kappa)


def output_matrix(law: CellLaw, src: Tensor, dst: Tensor, n_nodes: int, dtype: torch.dtype) -> Tensor:
    """B_γ ``(edges, N)``: +γ_d at the destination, −γ_s at the source (ground dropped)."""
    p_src, p_dst = _terminal_masks(src, dst, n_nodes, dtype)
    return law.gain_dst * p_dst - law.gain_src * p_src


def node_currents(law: CellLaw, layer: int, terminals: list[tuple[Tensor, Tensor]], n_nodes: int,
                  dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(G, I_bias)``, each ``(N,)``: the output conductance every node sees while ``layer`` is
    connected (its cells active, every other layer's parked) and the constant currents into it."""
    g = torch.zeros(n_nodes, dtype=dtype)
    bias = torch.zeros(n_nodes, dtype=dtype)
    for k, (src, dst) in enumerate(terminals):
        p_src, p_dst = _terminal_masks(src, dst, n_nodes, dtype)
        if k == layer:
            g = g + law.conductance_dst * p_dst.sum(0) + law.conductance_src * p_src.sum(0)
            bias = bias + law.offset_dst * p_dst.sum(0) + law.offset_src * p_src.sum(0)
        else:
            outputs = p_src.sum(0) + p_dst.sum(0)
            g = g + law.conductance_parked * outputs
            bias = bias + law.offset_parked * outputs
    return g, bias


def gate_loads(a: Tensor, b: Tensor, src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """Σ|α| each device puts on its G+ and its G− ``(edges,)`` (ground terms drop out)."""
    ma, mb = (src != 0).to(a.dtype), (dst != 0).to(a.dtype)
    return torch.relu(a) * ma + torch.relu(b) * mb, torch.relu(-a) * ma + torch.relu(-b) * mb


def gate_limit(law: CellLaw, c: Tensor) -> Tensor:
    """The largest Σ|α| a gate may carry for offsets ``c``: min over (limit − cost·|c|), ≥ 0."""
    limit = None
    for lim, cost in law.gain_limits:
        value = lim - cost * c.abs()
        limit = value if limit is None else torch.minimum(limit, value)
    return torch.clamp(limit, min=0.0)


def project(law: CellLaw, a: Tensor, b: Tensor, c: Tensor, src: Tensor, dst: Tensor) -> None:
    """In place, the nearest parameters (per device, scaling) the cell can realise: |c| first
    (so that some gain remains), then (a, b) scaled down until both gates fit."""
    with torch.no_grad():
        c_max = min(lim / cost if cost > 0 else float("inf") for lim, cost in law.gain_limits)
        c.clamp_(-c_max, c_max)
        plus, minus = gate_loads(a, b, src, dst)
        need = torch.maximum(plus, minus)
        scale = torch.where(need > 0, torch.clamp(gate_limit(law, c) / need.clamp(min=1e-30), max=1.0),
                            torch.ones_like(need))
        a.mul_(scale)
        b.mul_(scale)


def violations(law: CellLaw, a: Tensor, b: Tensor, c: Tensor, src: Tensor, dst: Tensor,
               tolerance: float = 1e-6) -> Tensor:
    """Indices of devices whose gates exceed the limit by more than ``tolerance`` ``(k,)``."""
    plus, minus = gate_loads(a, b, src, dst)
    return torch.nonzero(torch.maximum(plus, minus) > gate_limit(law, c) + tolerance).flatten()


def cell_operators(law: CellLaw, layers) -> list:
    """Every layer's dense :class:`models.circuit.LayerOperator` under the cell law (one
    capacitance matrix for all layers: parked cells' capacitors stay connected). ``layers``
    are the model's :class:`models.circuit.CircuitLayer` s; differentiable in their parameters."""
    from .circuit import LayerOperator
    n = layers[0].nodes
    effective = [layer.family.effective(dict(layer.params.items())) for layer in layers]
    terminals = [(layer.src, layer.dst) for layer in layers]
    node_caps = 1.0 / layers[0].inv_cap_padded[1:]
    cap = capacitance_matrix(law, [(a, b) for a, b, _ in effective], terminals, node_caps)
    inv = torch.linalg.inv(cap)
    inv = 0.5 * (inv + inv.t())  # C is symmetric; keep its inverse exactly so
    ops = []
    for k, (layer, (a, b, c)) in enumerate(zip(layers, effective)):
        p_src, p_dst = _terminal_masks(layer.src, layer.dst, n, a.dtype)
        A = (p_src * a[:, None] + p_dst * b[:, None]).t()
        B = output_matrix(law, layer.src, layer.dst, n, a.dtype) @ inv
        g, i_bias = node_currents(law, k, terminals, n, a.dtype)
        ops.append(LayerOperator("dense", n, layer.family.activation, layer.leaky_slope, c=c, w=(A.t() * B).sum(1),
                                 noise_gain=0.5 * (a.abs() + b.abs()), A=A, B=B, linear=-g[:, None] * inv,
                                 bias=i_bias @ inv))
    return ops
