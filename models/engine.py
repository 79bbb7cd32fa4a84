"""The serving engine: fixed-step RK4 with few allocations and a fused, augmented state.

``KirchhoffNet.integrate`` dispatches here for ``method="rk4"`` whenever no gradient is
needed (serving, benchmarks, calibration); training keeps the differentiable generic path.
Both give the same numbers up to rounding (tested in ``tests/test_engine_paths.py``).

Why it is fast (each lever measured in docs/engine.md):

- **Augmented, batch-last state** ``S (nodes + 2, batch)``: row 0 is held at 1 and
  carries the biases, rows 1..N the node voltages, row N+1 the divergence integral ℓ. One RK4 update moves
  voltages and ℓ together, so a step is 4 evaluations + 7 small in-place updates.
- **tanh through the logistic function**: tanh(z) = 2σ(2z) − 1 and tanh'(z) = 4(σ − σ²);
  torch's CPU ``sigmoid`` is ~3–4× faster than its ``tanh``. The factors 2 and 4 and the
  constant −1 are folded into the frozen weights, so an evaluation of a dense layer is
  4 kernels: ``z = Ã·S`` (mm, bias included), ``σ(z)`` in place, ``u = σ − σ²`` into the
  second half of the same buffer, and one ``mm`` that yields [0; dv/dt; div] at once.
- **Gather–scatter for large circuits** in the same layout: ``index_select`` and
  ``index_add_`` along contiguous rows of the batch-last state.
- **Blocking on the CPU**: rows are independent, so a large batch is solved in blocks
  whose scratch fits the L2 cache; **NumPy for a few rows** (``models.engine_small``),
  where torch's per-kernel dispatch dominates; **CUDA graphs** of whole solves on a GPU
  (``models.engine_cuda``).
- **Calibrated step counts** per layer (``models.calibration``) instead of a fixed 16–32.

Not differentiable by design: it runs under ``torch.no_grad``.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .circuit import LayerOperator
from .config import SolverConfig
from .solvers import Budget, BudgetExceeded, SolveStats, Status

# Dense matmuls win while the node count is small (docs/engine.md, "dense vs gather").
ENGINE_DENSE_MAX_NODES = 16
# Scratch per CPU block (docs/engine.md, "levers"): 1024 rows of a 150-device layer,
# 256 rows of the 786-device digits layer.
CPU_BLOCK_BYTES = 3_000_000
# On CUDA, replay whole solves captured as graphs (models.engine_cuda); not measured here.
USE_CUDA_GRAPHS = True


@dataclass(frozen=True)
class FastLayer:
    """One layer frozen for the engine, for one direction (forward or reverse).

    The state's row 0 is held at 1 (ground terminals are masked out of every weight), so
    biases ride on it. Dense form: ``Wz (E, N+2)`` (column 0: bias) gives the pre-activation;
    ``Wo (N+2, 2E+1)`` maps [current terms; slope terms; 1] to [0; dv/dt; div]; ``bo`` is its
    last column. Gather form: ``src, dst (E,)`` index the state; ``a, b, c (E, 1)``; ``alpha``
    and ``bias``/``scale`` ``(N+2, 1)`` finish Kirchhoff's law; ``w (E,)`` the divergence.
    """

    form: str  # "dense" or "gather"
    act: str
    leaky_slope: float
    n_nodes: int
    n_edges: int
    tanh_trick: bool
    Wz: Tensor | None = None
    Wo: Tensor | None = None
    bo: Tensor | None = None
    src: Tensor | None = None
    dst: Tensor | None = None
    a: Tensor | None = None
    b: Tensor | None = None
    c: Tensor | None = None
    alpha: float = 1.0  # scale of the scattered currents (2·sign with the tanh trick)
    bias: Tensor | None = None
    scale: Tensor | None = None
    w: Tensor | None = None


def freeze_layer(op: LayerOperator, inv_cap_padded: Tensor, src: Tensor, dst: Tensor,
                 reverse: bool, form: str) -> FastLayer:
    """Fold an operator's effective parameters into engine weights (no autograd)."""
    with torch.no_grad():
        sign = -1.0 if reverse else 1.0
        n, dtype, dev = op.n_nodes, op.c.dtype, op.c.device
        if op.form != "gather":
            raise ValueError("freeze_layer needs a gather-form operator (it holds a, b)")
        a, b = op.a, op.b
        e = op.c.shape[0]
        tanh = op.act == "tanh"
        k = 2.0 if tanh else 1.0  # tanh(z) = 2σ(2z) − 1
        inv = inv_cap_padded.to(dtype=dtype, device=dev)
        inv_col = torch.cat([inv, inv.new_ones(1)])[:, None]  # (N+2, 1): ground 0, ℓ row 1
        if form == "dense":
            Wz = op.c.new_zeros(e, n + 2)
            rows = torch.arange(e, device=dev)
            Wz.index_put_((rows, src), k * a, accumulate=True)
            Wz.index_put_((rows, dst), k * b, accumulate=True)
            # row 0 of the state is held at 1, so column 0 carries the bias (ground
            # terminals add nothing: they sit at 0 V)
            Wz[:, 0] = k * op.c
            K = op.c.new_zeros(n + 2, e)  # node k gets +i from edges into it, −i from edges out
            K.index_put_((dst, rows), op.c.new_ones(e), accumulate=True)
            K.index_put_((src, rows), -op.c.new_ones(e), accumulate=True)
            K = K * inv_col
            K[0] = 0.0
            K[n + 1] = 0.0
            Wo = op.c.new_zeros(n + 2, 2 * e + 1)  # last column: bias, against a row of ones
            Wo[:, :e] = sign * k * K
            Wo[n + 1, e:2 * e] = (4.0 if tanh else 1.0) * op.w
            if tanh:
                Wo[:, 2 * e] = -sign * K.sum(1)
            Wo = Wo.contiguous()
            return FastLayer("dense", op.act, op.leaky_slope, n, e, tanh, Wz=Wz.contiguous(), Wo=Wo,
                             bo=Wo[:, 2 * e:])
        cnt = op.c.new_zeros(n + 2)
        cnt.index_add_(0, dst, op.c.new_ones(e)).index_add_(0, src, -op.c.new_ones(e))
        bias = (sign * cnt)[:, None] if tanh else op.c.new_zeros(n + 2, 1)
        scale = inv_col.clone()
        scale[n + 1] = 0.0  # the ℓ row is written separately
        return FastLayer("gather", op.act, op.leaky_slope, n, e, tanh, src=src, dst=dst,
                         a=(k * a * (src != 0))[:, None].contiguous(), b=(k * b * (dst != 0))[:, None].contiguous(),
                         c=(k * op.c)[:, None].contiguous(), alpha=sign * k, bias=bias.contiguous(),
                         scale=scale.contiguous(), w=((4.0 if tanh else 1.0) * op.w).contiguous())


def _activate(L: FastLayer, z: Tensor, slope_out: Tensor | None) -> Tensor:
    """In place: z ← σ(z) (tanh trick) or act(z); writes the slope term into ``slope_out``."""
    if L.tanh_trick:
        z.sigmoid_()
        if slope_out is not None:
            torch.addcmul(z, z, z, value=-1.0, out=slope_out)  # σ − σ²
        return z
    if L.act in ("relu", "leaky_relu"):
        pos = z > 0
        if slope_out is not None:
            slope_out.copy_(pos).mul_(1.0 - L.leaky_slope if L.act == "leaky_relu" else 1.0)
            if L.act == "leaky_relu":
                slope_out.add_(L.leaky_slope)
        return torch.nn.functional.leaky_relu_(z, L.leaky_slope) if L.act == "leaky_relu" else z.relu_()
    if slope_out is not None:  # identity
        slope_out.fill_(1.0)
    return z


def evaluate(L: FastLayer, S: Tensor, buf: Tensor, with_div: bool) -> Tensor:
    """dS/dt ``(N+2, batch)`` = [0; dv/dt; div (or 0)] for the state ``S (N+2, batch)``.

    ``buf`` is a scratch ``(2E+1, batch)`` buffer reused across evaluations; its last row
    holds ones (set by :func:`rk4_layer`).
    """
    e = L.n_edges
    zb, sb = buf[:e], buf[e:2 * e]
    if L.form == "dense":
        # bias included via S[0] = 1: a broadcast addmm, or broadcast multiply-adds for 2 nodes,
        # are 1.5–2× slower than this K ≤ N+2 GEMM
        torch.mm(L.Wz, S, out=zb)
        _activate(L, zb, sb if with_div else None)
        if with_div:
            return torch.mm(L.Wo, buf)  # buf's last row is ones
        return torch.addmm(L.bo, L.Wo[:, :e], zb)
    torch.index_select(S, 0, L.src, out=zb)
    zb.mul_(L.a).addcmul_(S.index_select(0, L.dst), L.b).add_(L.c)
    _activate(L, zb, sb if with_div else None)
    out = torch.zeros_like(S)
    out.index_add_(0, L.dst, zb, alpha=L.alpha).index_add_(0, L.src, zb, alpha=-L.alpha)
    out.sub_(L.bias).mul_(L.scale)
    if with_div:
        torch.mv(sb.t(), L.w, out=out[L.n_nodes + 1])
    return out


def rk4_layer(L: FastLayer, S: Tensor, duration: float, n_steps: int, with_div: bool,
              budget: Budget) -> None:
    """Advance ``S`` in place by ``n_steps`` classical RK4 steps over ``duration``."""
    h = duration / n_steps
    buf = S.new_empty(2 * L.n_edges + 1, S.shape[1])
    buf[2 * L.n_edges] = 1.0
    tmp = torch.empty_like(S)
    for _ in range(n_steps):
        budget.take_step()
        acc = evaluate(L, S, buf, with_div)
        torch.add(S, acc, alpha=0.5 * h, out=tmp)
        k = evaluate(L, tmp, buf, with_div)
        acc.add_(k, alpha=2.0)
        torch.add(S, k, alpha=0.5 * h, out=tmp)
        k = evaluate(L, tmp, buf, with_div)
        acc.add_(k, alpha=2.0)
        torch.add(S, k, alpha=h, out=tmp)
        acc.add_(evaluate(L, tmp, buf, with_div))
        S.add_(acc, alpha=h / 6.0)
        budget.nfe += 4


class _Prepared:
    """Frozen layers of one model for one (direction, form choice), with a version key;
    ``small`` holds the NumPy copies for small batches, built on first use."""

    def __init__(self, key: tuple, layers: list[FastLayer]):
        self.key, self.layers = key, layers
        self.small: list | None = None
        self.graphs: dict = {}  # CUDA graphs (models.engine_cuda), per bucket and step counts


_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _params(model) -> tuple:
    """The model's parameters, listed once per model (module traversal costs ~50 µs)."""
    per_model = _CACHE.setdefault(model, {})
    params = per_model.get("params")
    if params is None:
        params = per_model["params"] = tuple(model.parameters())
    return params


def _version_key(model) -> tuple:
    # in-place updates (optimizer steps, load_state_dict) bump _version; .to() swaps storage
    return tuple((p.data_ptr(), p._version, p.dtype) for p in _params(model))


def chunk_rows(layers: list[FastLayer], element_size: int) -> int:
    """Rows per block on the CPU: the (2E, rows) scratch buffer of the widest layer within
    ``CPU_BLOCK_BYTES``, rounded down to a power of two in [64, 1024]."""
    widest = max(L.n_edges for L in layers)
    rows = max(CPU_BLOCK_BYTES // (2 * widest * element_size), 64)
    return min(1 << (rows.bit_length() - 1), 1024)


def choose_form(nodes: int, form: str = "auto") -> str:
    if form != "auto":
        return form
    return "dense" if nodes <= ENGINE_DENSE_MAX_NODES else "gather"


def prepared_layers(model, reverse: bool, form: str = "auto") -> list[FastLayer]:
    """The model's layers frozen for the engine; cached until a parameter changes."""
    return _slot(model, reverse, form).layers


def _slot(model, reverse: bool, form: str) -> _Prepared:
    per_model = _CACHE.setdefault(model, {})
    key = _version_key(model)
    slot = per_model.get((reverse, form))
    if slot is None or slot.key != key:
        layers = []
        with torch.no_grad():
            for layer in model.layers:
                op = layer.operator("gather")
                layers.append(freeze_layer(op, layer.inv_cap_padded, layer.src, layer.dst, reverse,
                                           choose_form(layer.nodes, form)))
        slot = _Prepared(key, layers)
        per_model[(reverse, form)] = slot
    return slot


def supports(model, v: Tensor, cfg: SolverConfig) -> bool:
    """True when the engine can serve this call: RK4, every layer of ``data_dim`` nodes,
    and no gradient wanted (grad mode off, or neither parameters nor input require it)."""
    if cfg.method != "rk4" or not model.spec.bijective:
        return False
    if torch.is_grad_enabled() and (v.requires_grad or any(p.requires_grad for p in _params(model))):
        return False
    return True


def integrate(model, v: Tensor, cfg: SolverConfig, reverse: bool = False, with_divergence: bool = True,
              form: str = "auto", small: bool | None = None, graphs: bool | None = None
              ) -> tuple[Tensor, Tensor | None, SolveStats]:
    """Same contract as :meth:`KirchhoffNet.integrate` for RK4 (see there), computed by the engine.

    ``v`` is ``(batch, data_dim)``; returns ``(v_end (batch, data_dim), ℓ (batch,) | None, stats)``.
    ``small``: force (True) or forbid (False) the NumPy small-batch path; by default it is
    used on the CPU for dense tanh circuits and at most ``SMALL_BATCH_MAX`` rows.
    ``graphs``: on CUDA, replay a captured whole-solve graph (default: ``USE_CUDA_GRAPHS``).
    """
    from . import engine_small
    budget = Budget(cfg.max_steps, cfg.max_wall_s)
    slot = _slot(model, reverse, form)
    layers = slot.layers
    n_layers, n = len(layers), model.data_dim
    steps = [cfg.steps_for(k, n_layers) for k in range(n_layers)]
    durations = [lspec.duration for lspec in model.spec.layers]
    stats = SolveStats()
    if small is None:
        small = v.device.type == "cpu" and v.shape[0] <= engine_small.SMALL_BATCH_MAX
    if v.device.type == "cuda" and (USE_CUDA_GRAPHS if graphs is None else graphs):
        from .engine_cuda import integrate_graphed
        with torch.no_grad():
            out = integrate_graphed(slot.graphs, layers, durations, steps, v, reverse, with_divergence,
                                    cfg.max_steps)
        if out is not None:
            return out
    if small and engine_small.supports(model):
        np_dtype = np.float64 if v.dtype == torch.float64 else np.float32
        # the NumPy path always runs the dense form: at a few rows a (E, N) matrix-vector
        # product beats E gathers and scatters even for 64 nodes (docs/engine.md)
        dense = _slot(model, reverse, "dense") if any(L.form != "dense" for L in layers) else slot
        if dense.small is None or dense.small[0].Wz.dtype != np_dtype:
            dense.small = [engine_small.small_layer(L, np_dtype) for L in dense.layers]
        slot = dense
        with np.errstate(all="ignore"):
            ve, ell, stats.status, stats.message = engine_small.integrate(
                slot.small, durations, steps, v.detach().cpu().numpy().astype(np_dtype), reverse, budget)
        v_end = torch.from_numpy(np.ascontiguousarray(ve)).to(device=v.device, dtype=v.dtype)
        ell_t = torch.from_numpy(ell.copy()).to(device=v.device, dtype=v.dtype) if with_divergence else None
    else:
        with torch.no_grad():
            S = v.new_zeros(n + 2, v.shape[0])
            S[0] = 1.0
            S[1:n + 1] = v.t()
            order = range(n_layers - 1, -1, -1) if reverse else range(n_layers)
            # rows are independent, so a CPU solve runs block by block: each block's scratch
            # stays in cache through all its steps (~1.6× at batch 16384, docs/engine.md)
            width = chunk_rows(layers, S.element_size()) if S.device.type == "cpu" else S.shape[1]
            blocks = S.split(width, dim=1) if S.shape[1] > width else (S,)
            try:
                for block in blocks:  # each block is one solve: its own step count, shared clock
                    budget = Budget(cfg.max_steps, cfg.max_wall_s, started=budget.started)
                    for k in order:
                        rk4_layer(layers[k], block, durations[k], steps[k], with_divergence, budget)
                        if not bool(torch.isfinite(block).all()):
                            raise BudgetExceeded(Status.NONFINITE, f"non-finite voltages after layer {k}")
            except BudgetExceeded as exc:
                stats.status, stats.message = exc.status, str(exc)
            v_end = S[1:n + 1].t().contiguous()
            ell_t = S[n + 1].clone() if with_divergence else None
    stats.nfe, stats.steps = budget.nfe, budget.steps
    stats.wall_s = time.perf_counter() - budget.started
    return v_end, ell_t, stats
