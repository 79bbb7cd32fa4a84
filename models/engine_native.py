"""The engine's compiled CPU path: RK4 over dense-form layers in C (``models/_rk4_dense.c``).

Where the torch dense form runs each RK4 stage as a handful of whole-batch kernels, the
compiled loop keeps a block of 16 rows in vector registers through whole steps: one pass
over the devices per stage, no intermediate arrays, no dispatch. Measured 2.4–2.9× faster
than the torch path per solve at 1024 rows and 3–8× at 1–16 rows on the zoo's 2-D
architectures (docs/engine.md, "The compiled path"). It takes float32 CPU solves of dense-form layers
of up to 8 nodes (``MAX_ROWS`` of the C module, any device family of the table); the
weights are the dense form's own (:func:`models.engine_layers.dense_weights`), the
activation and slope feature the device table's :class:`~models.devices.FusedForm` names.

The extension is built when the package is installed (``setup.py``; a C compiler is
needed). Without it :func:`available` is False and the engine serves from its torch and
NumPy paths, with the same answers up to float32 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .circuit import LayerOperator
from .devices import FusedForm
from .engine_layers import dense_weights
from .solvers import Budget

try:
    from . import _rk4_dense
except ImportError:  # built without a C compiler: the torch paths serve
    _rk4_dense = None

# Steps per call into C: enough that Python's per-call cost (~1 µs) stays small against the
# call's work at a few rows, few enough that the wall-clock budget is checked often. A call
# does STEP_WORK // row blocks steps (at least 1): 1024 rows run step by step.
STEP_WORK = 32


def available() -> bool:
    """True when the compiled extension was built and imports."""
    return _rk4_dense is not None


def supports(model, v: Tensor) -> bool:
    """True when this path can serve ``v`` for ``model``: the extension is built, ``v`` and the
    model are float32 on the CPU, and every layer is in dense form with a kernel and feature the
    C code knows (:func:`layers_supported`, the part that never changes for a model)."""
    return on_cpu_float32(model, v) and layers_supported(model)


def on_cpu_float32(model, v: Tensor) -> bool:
    """The extension is built and ``v`` and the model's weights are float32 CPU tensors (the C
    code reads raw host pointers: a GPU model must never get here)."""
    return (_rk4_dense is not None and v.device.type == "cpu" and v.dtype == torch.float32
            and model.device.type == "cpu" and model.dtype == torch.float32)


def layers_supported(model) -> bool:
    """Every layer in dense form, within the C code's row limit, with a kernel and feature it knows."""
    if _rk4_dense is None:
        return False
    for layer in model.layers:
        if layer.choose_form("auto") != "dense" or layer.nodes + 2 > _rk4_dense.MAX_ROWS:
            return False
        fused = _fused_form(layer)
        if fused.kernel not in _rk4_dense.KERNELS or (fused.feature or "none") not in _rk4_dense.FEATURES:
            return False
    return True


def _fused_form(layer) -> FusedForm:
    # the direct form: the C kernel evaluates tanh through exp like sigmoid, so the logistic
    # rewrite the torch path uses (a faster torch kernel) gains nothing here
    return layer.family.law.direct(layer.leaky_slope)


@dataclass(frozen=True)
class NativeLayer:
    """A dense-form layer as the C code reads it: ``wz (E, K)``, ``wy (E, K)``, ``wg (E, K)``
    device-major, ``bias (K,)``, float32 contiguous. ``rows`` R = nodes + 2 is the state's
    (models.engine_state); ``kernel_rows`` K ≥ R the compiled row count that runs it, the
    weights padded with zero columns before the ℓ column (:func:`pad_rows`)."""

    rows: int
    kernel_rows: int
    n_edges: int
    wz: Tensor
    wy: Tensor
    wg: Tensor
    bias: Tensor
    kernel: int
    feature: int
    leaky_slope: float

    @classmethod
    def from_operator(cls, op: LayerOperator, fused: FusedForm, reverse: bool) -> NativeLayer:
        Wz, Wo = dense_weights(op, fused, -1.0 if reverse else 1.0)
        e, rows = Wz.shape
        k = kernel_rows(rows)
        f32 = lambda t: pad_rows(t.detach().to(torch.float32), k).contiguous()  # noqa: E731
        return cls(rows, k, e, f32(Wz), f32(Wo[:, :e].t()), f32(Wo[:, e:2 * e].t()), f32(Wo[:, 2 * e]),
                   _rk4_dense.KERNELS.index(fused.kernel), _rk4_dense.FEATURES.index(fused.feature or "none"),
                   float(fused.leaky_slope))


def kernel_rows(rows: int) -> int:
    """The smallest compiled row count (``KERNEL_ROWS`` of the C module) that holds ``rows``."""
    return min(k for k in _rk4_dense.KERNEL_ROWS if k >= rows)


def pad_rows(t: Tensor, k: int) -> Tensor:
    """``t (..., R)`` over state rows → ``(..., k)``: zero columns inserted before the last (ℓ)
    one, the layout the C code reads a padded state in."""
    extra = k - t.shape[-1]
    if extra == 0:
        return t
    return torch.cat([t[..., :-1], t.new_zeros(*t.shape[:-1], extra), t[..., -1:]], dim=-1)


def build_layers(model, reverse: bool) -> list[NativeLayer]:
    """The model's layers for this path (see :func:`supports`), for one direction."""
    return [NativeLayer.from_operator(layer.operator("dense"), _fused_form(layer), reverse)
            for layer in model.layers]


def rk4_layer(L: NativeLayer, S: Tensor, duration: float, n_steps: int, with_div: bool, budget: Budget) -> None:
    """Advance ``S (N+2, batch)`` (float32, contiguous, CPU) in place by ``n_steps`` RK4 steps
    over ``duration``. Every step is taken from ``budget`` before it runs, as on the other
    paths: when the budget refuses one, the steps granted before it still run, then
    :class:`~models.solvers.BudgetExceeded` propagates (same state, steps and evaluations
    as the torch path's)."""
    if S.dtype != torch.float32 or S.device.type != "cpu" or not S.is_contiguous() or S.shape[0] != L.rows:
        raise ValueError(f"the compiled path needs a contiguous float32 CPU ({L.rows}, batch) state, "
                         f"not {S.dtype} {S.device.type} {tuple(S.shape)}")
    batch = S.shape[1]
    h = duration / n_steps
    per_call = max(STEP_WORK // max(-(-batch // _rk4_dense.BLOCK_ROWS), 1), 1)
    done = 0
    while done < n_steps:
        granted = 0
        try:
            for _ in range(min(per_call, n_steps - done)):
                budget.take_step()
                granted += 1
        finally:  # on a refusal, the granted steps still run before the error propagates
            _rk4_dense.rk4_dense(L.rows, L.kernel_rows, L.n_edges, L.kernel, L.feature, L.leaky_slope, L.wz.data_ptr(),
                                 L.wy.data_ptr(), L.wg.data_ptr(), L.bias.data_ptr(), S.data_ptr(), batch, batch,
                                 granted, h, with_div)
            budget.nfe += 4 * granted
        done += granted
