"""The engine's two layer forms, built from the circuit operator, and its in-place RK4.

Both act on the state layout of ``models.engine_state`` and fold one :class:`FusedForm`
of the device table (``models.devices``) into their weights: with the activation
evaluated as y = kernel(gain·z), a device's current is scale·y + offset and its slope
slope_const + slope_feature·g(y). For tanh devices the torch engine uses the logistic
form (y = σ(2z), current 2y − 1, slope 4(y − y²)): torch's CPU ``sigmoid`` is ~3–4× faster
than its ``tanh`` (docs/engine.md, levers).

- :class:`DenseLayer` (few nodes): ``Wz (E, N+2)`` gives the pre-activation including the
  bias column (the state's row 0 is 1); ``Wo (N+2, 2E+1)`` maps [y; g; 1] to
  [0; dv/dt; div] in one GEMM. :func:`dense_weights` is shared with the NumPy path.
- :class:`GatherLayer` (many nodes): ``index_select`` of the terminal voltages and
  ``index_add_`` of the currents along contiguous rows of the batch-last state.

Not differentiable by design: built and run under ``torch.no_grad``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .circuit import LayerOperator
from .devices import FusedForm
from .engine_state import BIAS_ROW, divergence_row, state_rows, voltage_rows
from .solvers import Budget


def _check(op: LayerOperator, form: str) -> None:
    if op.form != form:
        raise ValueError(f"a {form} engine layer needs a {form}-form operator, not {op.form}")
    if op.current_scale is not None or op.c.ndim != 1:
        raise ValueError("the engine serves plain circuits (no per-device current scale, no instance axis)")


def dense_weights(op: LayerOperator, fused: FusedForm, sign: float) -> tuple[Tensor, Tensor]:
    """``(Wz (E, N+2), Wo (N+2, 2E+1))`` of a dense operator for the state layout, in its dtype.

    z = Wz·S (column 0 holds the bias c); [0; dv/dt; div] = Wo·[y; g; 1] with the form's
    gain folded into Wz, its scale and offset into the KCL rows of Wo, its slope constants
    into the divergence row. ``sign`` is −1 for reverse time.
    """
    _check(op, "dense")
    n, e = op.n_nodes, op.c.shape[0]
    kcl = op.B.t()  # (N, E): node k gets +i from edges into it, −i from edges out, over C_k
    volts = voltage_rows(n)
    Wz = op.c.new_zeros(e, state_rows(n))
    Wz[:, BIAS_ROW] = fused.gain * op.c
    Wz[:, volts] = fused.gain * op.A.t()
    Wo = op.c.new_zeros(state_rows(n), 2 * e + 1)
    Wo[volts, :e] = sign * fused.scale * kcl
    Wo[volts, 2 * e] = sign * fused.offset * kcl.sum(1)
    Wo[divergence_row(n), e:2 * e] = fused.slope_feature * op.w
    Wo[divergence_row(n), 2 * e] = fused.slope_const * op.w.sum()
    return Wz.contiguous(), Wo.contiguous()


@dataclass(frozen=True)
class DenseLayer:
    """A layer as two dense matrices (see :func:`dense_weights`); ``bo`` is Wo's last column."""

    n_nodes: int
    n_edges: int
    Wz: Tensor
    Wo: Tensor
    bo: Tensor
    kernel: Callable[[Tensor], Tensor]
    feature: Callable[[Tensor, Tensor], None] | None

    @classmethod
    def from_operator(cls, op: LayerOperator, fused: FusedForm, sign: float) -> DenseLayer:
        Wz, Wo = dense_weights(op, fused, sign)
        e = op.c.shape[0]
        return cls(op.n_nodes, e, Wz, Wo, Wo[:, 2 * e:], *fused.torch_ops())

    def evaluate(self, S: Tensor, buf: Tensor, with_div: bool) -> Tensor:
        """dS/dt ``(N+2, batch)`` for ``S (N+2, batch)``; ``buf (2E+1, batch)`` is scratch
        whose last row holds ones and whose feature rows start at 0 (:func:`rk4_layer`)."""
        e = self.n_edges
        zb = buf[:e]
        # bias included via S[0] = 1: a broadcast addmm, or broadcast multiply-adds for 2
        # nodes, are 1.5–2× slower than this K ≤ N+2 GEMM
        torch.mm(self.Wz, S, out=zb)
        self.kernel(zb)
        if with_div:
            if self.feature is not None:
                self.feature(zb, buf[e:2 * e])
            return torch.mm(self.Wo, buf)
        return torch.addmm(self.bo, self.Wo[:, :e], zb)


@dataclass(frozen=True)
class GatherLayer:
    """A layer as gathers and scatters: ``src, dst (E,)`` index the state; ``a, b, c (E, 1)``
    (gain folded in, ground terminals masked); ``alpha`` the scattered currents' scale;
    ``bias (N+2, 1)`` or None the offset currents; ``scale (N+2, 1)`` 1/C per row (0 on
    the bias and ℓ rows); ``w (E,)`` and ``div_const`` the divergence."""

    n_nodes: int
    n_edges: int
    src: Tensor
    dst: Tensor
    a: Tensor
    b: Tensor
    c: Tensor
    alpha: float
    bias: Tensor | None
    scale: Tensor
    w: Tensor
    div_const: float
    kernel: Callable[[Tensor], Tensor]
    feature: Callable[[Tensor, Tensor], None] | None

    @classmethod
    def from_operator(cls, op: LayerOperator, fused: FusedForm, sign: float) -> GatherLayer:
        _check(op, "gather")
        n, e, k = op.n_nodes, op.c.shape[0], fused.gain
        src, dst = op.src, op.dst
        ones = op.c.new_ones(e)
        count = op.c.new_zeros(state_rows(n)).index_add_(0, dst, ones).index_add_(0, src, -ones)  # in − out
        bias = None if fused.offset == 0 else (-sign * fused.offset * count)[:, None].contiguous()
        scale = op.c.new_ones(state_rows(n))
        if op.inv_cap is not None:
            scale[voltage_rows(n)] = op.inv_cap
        scale[BIAS_ROW] = 0.0  # the bias row stays 1
        scale[divergence_row(n)] = 0.0  # ℓ is written separately
        return cls(n, e, src, dst, (k * op.a * (src != 0))[:, None].contiguous(),
                   (k * op.b * (dst != 0))[:, None].contiguous(), (k * op.c)[:, None].contiguous(),
                   sign * fused.scale, bias, scale[:, None].contiguous(),
                   (fused.slope_feature * op.w).contiguous(), float(fused.slope_const * op.w.sum()),
                   *fused.torch_ops())

    def evaluate(self, S: Tensor, buf: Tensor, with_div: bool) -> Tensor:
        """dS/dt ``(N+2, batch)`` for ``S (N+2, batch)``; ``buf`` as for :class:`DenseLayer`."""
        e = self.n_edges
        zb = buf[:e]
        torch.index_select(S, 0, self.src, out=zb)
        zb.mul_(self.a).addcmul_(S.index_select(0, self.dst), self.b).add_(self.c)
        self.kernel(zb)
        out = torch.zeros_like(S)
        # the scaled currents go through the second half of ``buf`` (the divergence's scratch,
        # written only below): torch's CPU index_add_ with alpha ≠ 1 takes a per-index slow
        # path, 22× slower at 50k edges (the 784-D import), so alpha is applied here instead
        scaled = torch.mul(zb, self.alpha, out=buf[e:2 * e])
        out.index_add_(0, self.dst, scaled).index_add_(0, self.src, scaled.neg_())
        if self.bias is not None:
            out.sub_(self.bias)
        out.mul_(self.scale)
        if with_div:
            row = out[divergence_row(self.n_nodes)]
            if self.feature is None:
                row.fill_(self.div_const)
            else:
                self.feature(zb, buf[e:2 * e])
                torch.mv(buf[e:2 * e].t(), self.w, out=row)
                if self.div_const:
                    row.add_(self.div_const)
        return out


EngineLayer = DenseLayer | GatherLayer


def build_layer(op: LayerOperator, fused: FusedForm, reverse: bool) -> EngineLayer:
    """The engine layer of ``op`` (its form decides the class), for one direction."""
    cls = DenseLayer if op.form == "dense" else GatherLayer
    return cls.from_operator(op, fused, -1.0 if reverse else 1.0)


def rk4_layer(L: EngineLayer, S: Tensor, duration: float, n_steps: int, with_div: bool,
              budget: Budget) -> None:
    """Advance ``S`` in place by ``n_steps`` classical RK4 steps over ``duration`` (model time)."""
    h = duration / n_steps
    buf = S.new_zeros(2 * L.n_edges + 1, S.shape[1])
    buf[2 * L.n_edges] = 1.0
    tmp = torch.empty_like(S)
    for _ in range(n_steps):
        budget.take_step()
        acc = L.evaluate(S, buf, with_div)
        torch.add(S, acc, alpha=0.5 * h, out=tmp)
        k = L.evaluate(tmp, buf, with_div)
        acc.add_(k, alpha=2.0)
        torch.add(S, k, alpha=0.5 * h, out=tmp)
        k = L.evaluate(tmp, buf, with_div)
        acc.add_(k, alpha=2.0)
        torch.add(S, k, alpha=h, out=tmp)
        acc.add_(L.evaluate(tmp, buf, with_div))
        S.add_(acc, alpha=h / 6.0)
        budget.nfe += 4
