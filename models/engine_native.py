"""The engine's compiled CPU path: whole RK4 solves in C (``models._rk4``, ``models/_rk4_*.c``).

Where the torch paths run each RK4 stage as a handful of whole-batch kernels, one call here runs
a whole solve: every layer, its steps, the budget and the finiteness checks, with a block of rows
in vector registers through whole steps. Two layer forms, both from the device table's direct
:class:`~models.devices.FusedForm` (any device family):

- **dense** (at most 8 nodes, the 2-D zoo): the weights of :func:`models.engine_layers.dense_weights`;
  16 rows per vector, or, for a request of a few rows, 16 devices × 1 row, 8 × 2, 4 × 4 or
  2 × 8 per vector, so that every lane works at every batch size;
- **gather** (more nodes: the 64-D digits model, 784-D imported circuits): the weights of
  :class:`models.engine_layers.GatherLayer`; 16 rows per vector, and for 1–4 rows a kernel that
  runs the activations of 16 (device, row) pairs per instruction and sums each node's currents
  through its own device list.

Measured in docs/engine.md ("The compiled path"). The extension is built when the package is
installed (``setup.py``; a C compiler is needed). Without it :func:`available` is False and the
engine serves from its torch and NumPy paths, with the same answers up to float32 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .devices import FusedForm
from .engine_layers import GatherLayer, dense_weights
from .engine_state import layer_order, nonfinite
from .solvers import Budget, BudgetExceeded, Status

try:
    from . import _rk4
except ImportError:  # built without a C compiler: the torch paths serve
    _rk4 = None

_STATUS = {int(s): s for s in Status}


def available() -> bool:
    """True when the compiled extension was built and imports."""
    return _rk4 is not None


def supports(model, v: Tensor) -> bool:
    """True when this path can serve ``v`` for ``model``: the extension is built, ``v`` and the
    model are float32 on the CPU, and every layer has a kernel and feature the C code knows
    (:func:`layers_supported`, the part that never changes for a model)."""
    return on_cpu_float32(model, v) and layers_supported(model)


def on_cpu_float32(model, v: Tensor) -> bool:
    """The extension is built and ``v`` and the model's weights are float32 CPU tensors (the C
    code reads raw host pointers: a GPU model must never get here)."""
    return (_rk4 is not None and v.device.type == "cpu" and v.dtype == torch.float32
            and model.device.type == "cpu" and model.dtype == torch.float32)


def layers_supported(model) -> bool:
    """Every layer has ``data_dim`` nodes (the engine's bijective circuits) and a kernel and feature
    the C code knows."""
    if _rk4 is None:
        return False
    for layer in model.layers:
        fused = _fused_form(layer)
        if (layer.nodes != model.data_dim or fused.kernel not in _rk4.KERNELS
                or (fused.feature or "none") not in _rk4.FEATURES):
            return False
    return True


def _fused_form(layer) -> FusedForm:
    # the direct form: the C kernel evaluates tanh through exp like sigmoid, so the logistic
    # rewrite the torch path uses (a faster torch kernel) gains nothing here
    return layer.family.law.direct(layer.leaky_slope)


def form_for(nodes: int) -> str:
    """The compiled form of a layer of ``nodes`` nodes: ``dense`` up to the C code's
    ``DENSE_MAX_NODES``, else ``gather``."""
    return "dense" if nodes <= _rk4.DENSE_MAX_NODES else "gather"


@dataclass(frozen=True)
class NativePlan:
    """A model's layers for one direction as the C code holds them: ``layers[k]`` the capsule of
    layer k, ``order`` the layer indices in solve order, ``form`` ``dense`` or ``gather``,
    ``nbytes`` the memory the capsules hold."""

    layers: tuple
    order: tuple[int, ...]
    form: str
    nbytes: int

    @property
    def path(self) -> str:
        """``native-dense`` or ``native-gather``: :attr:`EngineStats.path` of its solves."""
        return "native-" + self.form


def _f32(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def _dense_capsule(layer, fused: FusedForm, sign: float, kernel: int, feature: int):
    Wz, Wo = dense_weights(layer.operator("dense"), fused, sign)
    n, e = layer.nodes, Wz.shape[0]
    # the C code reads only what dense_weights can make non-zero: Wz's bias and voltage columns,
    # Wo's currents into the voltage rows and slope features into the l row, and their offsets
    if bool(Wz[:, n + 1].any() or Wo[0].any() or Wo[1:n + 1, e:2 * e].any() or Wo[n + 1, :e].any()):
        raise ValueError("dense_weights put weight where the compiled kernel does not read it")
    wz, wo = _f32(Wz), _f32(Wo)
    return _rk4.dense_layer(n, e, kernel, feature, fused.leaky_slope, layer.spec.duration,
                            wz.ctypes.data, wo.ctypes.data)


def _gather_capsule(layer, fused: FusedForm, sign: float, kernel: int, feature: int):
    g = GatherLayer.from_operator(layer.operator("gather"), fused, sign)
    n = layer.nodes
    scale = g.scale[:n + 1, 0]  # rows 1..N are the nodes (row 0, the bias row, is ground here)
    node_scale = _f32(g.alpha * scale)
    node_const = _f32(-scale * g.bias[:n + 1, 0]) if g.bias is not None else np.zeros(n + 1, np.float32)
    node_scale[0] = node_const[0] = 0.0
    src, dst = (np.ascontiguousarray(t.cpu().numpy(), dtype=np.int32) for t in (g.src, g.dst))
    a, b, c, w = (_f32(t.reshape(-1)) for t in (g.a, g.b, g.c, g.w))
    return _rk4.gather_layer(n, len(src), kernel, feature, fused.leaky_slope, layer.spec.duration,
                             src.ctypes.data, dst.ctypes.data, a.ctypes.data, b.ctypes.data, c.ctypes.data,
                             w.ctypes.data, node_scale.ctypes.data, node_const.ctypes.data, g.div_const)


def build_plan(model, reverse: bool) -> NativePlan:
    """The model's layers for this path (see :func:`supports`), for one direction. The C code
    copies the weights, so the plan holds them whatever happens to the model's tensors."""
    sign = -1.0 if reverse else 1.0
    form = form_for(model.data_dim)
    capsules = []
    with torch.no_grad():
        for layer in model.layers:
            fused = _fused_form(layer)
            kernel, feature = _rk4.KERNELS.index(fused.kernel), _rk4.FEATURES.index(fused.feature or "none")
            build = _dense_capsule if form == "dense" else _gather_capsule
            capsules.append(build(layer, fused, sign, kernel, feature))
    return NativePlan(tuple(capsules), tuple(layer_order(len(capsules), reverse)), form,
                      sum(_rk4.layer_bytes(c) for c in capsules))


def solve(plan: NativePlan, v: Tensor, steps: list[int], with_div: bool, budget: Budget,
          ell: Tensor | None = None, order: tuple[int, ...] | None = None
          ) -> tuple[Tensor, Tensor, BudgetExceeded | None]:
    """One compiled solve of ``v (batch, N)`` (float32, CPU) through the layers ``order`` (default:
    the plan's, all of them) with ``steps[k]`` RK4 steps for layer k, ℓ starting from ``ell
    (batch,)`` (default 0). Returns ``(v_end (batch, N), ℓ (batch,), failure or None)``: the state
    reached, and on failure the error the other paths raise (models.engine_state.run_layers: the
    budget's MAX_STEPS or TIMEOUT, NONFINITE after a layer), with the budget charged alike."""
    order = plan.order if order is None else order
    x = v.contiguous()
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.ndim != 2:
        raise ValueError(f"the compiled path needs float32 CPU rows (batch, N), not {x.dtype} {x.device.type} "
                         f"{tuple(x.shape)}")
    batch = x.shape[0]
    out = torch.empty_like(x)
    ell_out = torch.empty(batch, dtype=torch.float32)
    ell_in = 0 if ell is None else ell.to(torch.float32).contiguous()
    status, charged, ran, position = _rk4.solve(
        tuple(plan.layers[k] for k in order), tuple(steps[k] for k in order), x.data_ptr(), batch,
        out.data_ptr(), 0 if ell is None else ell_in.data_ptr(), ell_out.data_ptr(), with_div,
        budget.max_steps - budget.steps, budget.wall_left_s)
    budget.steps += charged
    budget.nfe += 4 * ran
    status = _STATUS[status]
    failure = None
    if status == Status.NONFINITE:
        failure = nonfinite(order[position])
    elif status != Status.SUCCESS:
        failure = budget.exceeded(status)
    return out, ell_out, failure


def advance_layer(plan: NativePlan, k: int, S: Tensor, n_steps: int, budget: Budget) -> None:
    """Advance the state ``S (N+2, batch)`` of layer ``k`` alone in place by ``n_steps`` RK4 steps,
    with ℓ (models.engine_state's layout); raises a budget failure, as the torch layer does (a
    non-finite state is left for the caller to see, as there)."""
    n = S.shape[0] - 2
    steps = [0] * len(plan.layers)
    steps[k] = n_steps
    v, ell, failure = solve(plan, S[1:n + 1].t(), steps, True, budget, ell=S[n + 1], order=(k,))
    S[1:n + 1] = v.t()
    S[n + 1] = ell
    if failure is not None and failure.status != Status.NONFINITE:
        raise failure
