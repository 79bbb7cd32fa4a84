"""The serving engine: fixed-step RK4 with few allocations and a fused, augmented state.

``KirchhoffNet.integrate`` dispatches here for ``method="rk4"`` whenever no gradient is
needed (serving, benchmarks, calibration); training keeps the differentiable generic path.
Both give the same numbers up to rounding (tested in ``tests/test_engine_paths.py``).

This module only prepares (and caches) layers and dispatches; the pieces are:

- ``models.engine_state``: the one state layout ``S (N+2, batch)`` = [1; v; ℓ] (pack,
  unpack) and the one layer loop with the budget and non-finite checks;
- ``models.engine_layers``: the dense and gather layer forms, built from the circuit
  operator with the device table's fused form folded in (tanh through the logistic
  function), and the in-place RK4;
- ``models.engine_native``: compiled C for float32 solves on the CPU, one call per solve with
  every vector lane busy at every batch size, dense kernels up to 8 nodes and gather kernels
  above (the CPU default where it applies);
- ``models.engine_small``: NumPy for a few rows on the CPU, where torch's per-kernel
  dispatch dominates (float64, or where the compiled path is not built);
- ``models.engine_cuda``: CUDA graphs of whole layers on a GPU.

Which one ran is reported in :attr:`EngineStats.path`. CPU solves of large batches run
block by block so each block's scratch stays in the L2 cache; step counts per layer come
from ``models.calibration``. Each lever is measured in docs/engine.md.

Not differentiable by design: it runs under ``torch.no_grad``.
"""
from __future__ import annotations

import time
import weakref

import numpy as np
import torch
from torch import Tensor

from . import engine_cuda, engine_native, engine_small
from .config import SolverConfig
from .engine_layers import DenseLayer, EngineLayer, build_layer, rk4_layer
from .engine_small import SmallLayer
from .engine_state import EngineStats, layer_order, pack, run_layers, unpack
from .solvers import Budget

# Scratch per CPU block (docs/engine.md, "levers"): 1024 rows of a 150-device layer,
# 256 rows of the 786-device digits layer.
CPU_BLOCK_BYTES = 3_000_000
# On CUDA, replay layers captured as graphs (models.engine_cuda).
USE_CUDA_GRAPHS = True


class _Prepared:
    """Frozen layers of one model for one (path, direction, form or dtype), with the
    parameter-version key they were built from; ``graphs`` holds CUDA graphs of them."""

    def __init__(self, key: tuple, layers: list):
        self.key, self.layers = key, layers
        self.graphs: dict = {}


_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


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


def _cached(model, slot_key: tuple, build) -> _Prepared:
    per_model = _CACHE.setdefault(model, {})
    key = _version_key(model)
    slot = per_model.get(slot_key)
    if slot is None or slot.key != key:
        with torch.no_grad():
            slot = per_model[slot_key] = _Prepared(key, build())
    return slot


def _torch_slot(model, reverse: bool, form: str) -> _Prepared:
    def build() -> list[EngineLayer]:
        out = []
        for layer in model.layers:
            law = layer.family.law
            fused = law.logistic(layer.leaky_slope) or law.direct(layer.leaky_slope)
            out.append(build_layer(layer.operator(layer.choose_form(form)), fused, reverse))
        return out
    return _cached(model, ("torch", reverse, form), build)


def _numpy_slot(model, reverse: bool, dtype) -> _Prepared:
    def build() -> list[SmallLayer]:
        # always the dense form: at a few rows an (E, N) matrix-vector product beats E
        # gathers and scatters even for 64 nodes (docs/engine.md)
        return [SmallLayer.from_operator(layer.operator("dense"), layer.family.law.direct(layer.leaky_slope),
                                         reverse, dtype) for layer in model.layers]
    return _cached(model, ("numpy", reverse, np.dtype(dtype).name), build)


def _native_slot(model, reverse: bool) -> _Prepared:
    """``layers`` holds the :class:`~models.engine_native.NativePlan` (one per model and direction)."""
    return _cached(model, ("native", reverse), lambda: engine_native.build_plan(model, reverse))


def _native_supports(model, v: Tensor) -> bool:
    """:func:`models.engine_native.supports` with its per-layer part cached per model (it is on
    every request's path; a model's layer forms and device family never change, while its
    device and dtype may, so those are checked on every call)."""
    if not engine_native.on_cpu_float32(model, v):
        return False
    per_model = _CACHE.setdefault(model, {})
    ok = per_model.get("native_layers_ok")
    if ok is None:
        ok = per_model["native_layers_ok"] = engine_native.layers_supported(model)
    return ok


def prepared_layers(model, reverse: bool, form: str = "auto") -> list[EngineLayer]:
    """The model's layers frozen for the torch engine; cached until a parameter changes."""
    return _torch_slot(model, reverse, form).layers


def advance_layer(model, k: int, S: Tensor, n_steps: int, reverse: bool, budget: Budget) -> None:
    """Advance the state ``S (N+2, batch)`` of layer ``k`` alone in place by ``n_steps`` RK4 steps,
    with ℓ, on the path a whole solve of ``S``'s rows would take (compiled where it applies,
    else the torch layer). Used by calibration's per-layer errors."""
    if model.spec.cell is not None:  # a characterized cell's law is not in the engine's layers
        _advance_cell_layer(model, k, S, n_steps, reverse, budget)
    elif _native_supports(model, S.t()):
        engine_native.advance_layer(_native_slot(model, reverse).layers, k, S, n_steps, budget)
    else:
        rk4_layer(prepared_layers(model, reverse)[k], S, model.spec.layers[k].duration, n_steps, True, budget)


def _advance_cell_layer(model, k: int, S: Tensor, n_steps: int, reverse: bool, budget: Budget) -> None:
    """:func:`advance_layer` for a cell-realised model: the generic RK4 of ``KirchhoffNet.integrate``
    through the cell's operator (``models.cell_law``), written back into ``S``."""
    from .flow import field_of
    from .solvers import fixed_step
    v, ell = unpack(S)
    fn = field_of(model.operators()[k], -1.0 if reverse else 1.0, True)
    v, ell = fixed_step(fn, v, ell, model.spec.layers[k].duration, n_steps, "rk4", budget)
    n = v.shape[1]
    S[1:n + 1] = v.t()
    S[n + 1] = ell


def chunk_rows(layers: list[EngineLayer], element_size: int) -> int:
    """Rows per block on the CPU: the (2E, rows) scratch buffer of the widest layer within
    ``CPU_BLOCK_BYTES``, rounded down to a power of two in [64, 1024]."""
    widest = max(L.n_edges for L in layers)
    rows = max(CPU_BLOCK_BYTES // (2 * widest * element_size), 64)
    return min(1 << (rows.bit_length() - 1), 1024)


def supports(model, v: Tensor, cfg: SolverConfig) -> bool:
    """True when the engine can serve this call: RK4, every layer of ``data_dim`` nodes,
    and no gradient wanted (grad mode off, or neither parameters nor input require it)."""
    if cfg.method != "rk4" or not model.spec.bijective:
        return False
    if torch.is_grad_enabled() and (v.requires_grad or any(p.requires_grad for p in _params(model))):
        return False
    return True


def integrate(model, v: Tensor, cfg: SolverConfig, reverse: bool = False, with_divergence: bool = True,
              form: str = "auto", small: bool | None = None, graphs: bool | None = None,
              native: bool | None = None) -> tuple[Tensor, Tensor | None, EngineStats]:
    """Same contract as :meth:`KirchhoffNet.integrate` for RK4 (see there), computed by the engine.

    ``v`` is ``(batch, data_dim)``; returns ``(v_end (batch, data_dim), ℓ (batch,) | None, stats)``
    with ``stats.path`` naming the path that ran. ``form``: the torch layers' form
    (``auto``: dense up to ``models.circuit.DENSE_MAX_NODES`` nodes). ``small``: force
    (True) or forbid (False) the NumPy path; by default it serves CPU calls of at most
    ``SMALL_BATCH_MAX`` rows the compiled path does not take. ``graphs``: on CUDA, replay captured graphs (default:
    ``USE_CUDA_GRAPHS``). ``native``: force (True) or forbid (False) the compiled path; by
    default it serves every call it supports (``models.engine_native.supports``) unless
    ``small`` or ``form`` names another path.

    Raises:
        ValueError: ``small=True`` for a circuit the NumPy path does not take, or
            ``native=True`` for a call the compiled path does not take.
    """
    budget = Budget(cfg.max_steps, cfg.max_wall_s)
    n_layers = len(model.layers)
    steps = [cfg.steps_for(k, n_layers) for k in range(n_layers)]
    durations = [lspec.duration for lspec in model.spec.layers]
    if native is None:
        native = small is None and form == "auto" and _native_supports(model, v)
    elif native and not _native_supports(model, v):
        raise ValueError("the compiled path takes float32 CPU solves of a float32 CPU model with the extension "
                         f"built (built: {engine_native.available()})")
    if small is None:
        small = (not native and v.device.type == "cpu" and v.shape[0] <= engine_small.SMALL_BATCH_MAX
                 and engine_small.supports(model))
    elif small and not engine_small.supports(model):
        raise ValueError(f"the NumPy path takes at most {engine_small.SMALL_MAX_NODES} nodes, "
                         f"not {model.data_dim}")
    out = None
    if native:
        out = _integrate_native(model, v, steps, reverse, with_divergence, budget)
    elif v.device.type == "cuda" and (USE_CUDA_GRAPHS if graphs is None else graphs):
        slot = _torch_slot(model, reverse, form)
        with torch.no_grad():
            out = engine_cuda.integrate_graphed(slot.graphs, slot.layers, durations, steps, v, reverse,
                                                with_divergence, budget)
    if out is None and small:
        out = _integrate_numpy(model, v, durations, steps, reverse, budget)
    elif out is None:
        out = _integrate_torch(model, v, durations, steps, reverse, with_divergence, form, budget)
    v_end, ell, stats = out
    stats.wall_s = time.perf_counter() - budget.started
    return v_end, ell if with_divergence else None, stats


def _integrate_native(model, v: Tensor, steps: list[int], reverse: bool, with_div: bool,
                      budget: Budget) -> tuple[Tensor, Tensor, EngineStats]:
    # one call into C runs every layer with the same budget and checks as run_layers
    plan = _native_slot(model, reverse).layers
    v_end, ell, failure = engine_native.solve(plan, v, steps, with_div, budget)
    stats = EngineStats(path=plan.path, nfe=budget.nfe, steps=budget.steps)
    if failure is not None:
        stats.status, stats.message = failure.status, str(failure)
    return v_end, ell, stats


def _integrate_numpy(model, v: Tensor, durations: list[float], steps: list[int], reverse: bool,
                     budget: Budget) -> tuple[Tensor, Tensor, EngineStats]:
    np_dtype = np.float64 if v.dtype == torch.float64 else np.float32
    layers = _numpy_slot(model, reverse, np_dtype).layers
    engine_small.match_blas_threads()
    S = pack(v.detach().cpu().numpy().astype(np_dtype))
    stats = EngineStats(path="numpy-dense")
    with np.errstate(all="ignore"):
        stats.status, stats.message = run_layers(
            layer_order(len(layers), reverse),
            lambda k: engine_small.rk4_layer(layers[k], S, durations[k], steps[k], budget),
            lambda: bool(np.isfinite(S).all()), budget)
    stats.nfe, stats.steps = budget.nfe, budget.steps
    ve, ell = unpack(S)
    return (torch.from_numpy(ve).to(device=v.device, dtype=v.dtype),
            torch.from_numpy(ell).to(device=v.device, dtype=v.dtype), stats)


def _integrate_torch(model, v: Tensor, durations: list[float], steps: list[int], reverse: bool,
                     with_div: bool, form: str, budget: Budget) -> tuple[Tensor, Tensor, EngineStats]:
    layers = _torch_slot(model, reverse, form).layers
    stats = EngineStats(path="torch-" + ("dense" if isinstance(layers[0], DenseLayer) else "gather"))
    with torch.no_grad():
        S = pack(v)
        # rows are independent, so a CPU solve runs block by block: each block's scratch
        # stays in cache through all its steps (~1.6× at batch 16384, docs/engine.md)
        width = chunk_rows(layers, S.element_size()) if S.device.type == "cpu" else S.shape[1]
        blocks = S.split(width, dim=1) if S.shape[1] > width else (S,)
        for block in blocks:  # each block is one solve: its own step count, a shared clock
            budget = Budget(budget.max_steps, budget.max_wall_s, started=budget.started)
            stats.status, stats.message = run_layers(
                layer_order(len(layers), reverse),
                lambda k, block=block, budget=budget: rk4_layer(layers[k], block, durations[k], steps[k],
                                                                with_div, budget),
                lambda block=block: bool(torch.isfinite(block).all()), budget)
            if not stats.ok:
                break
        stats.nfe, stats.steps = budget.nfe, budget.steps
        v_end, ell = unpack(S)
    return v_end, ell, stats
