"""Per-model calibration of the serving solver: the fewest RK4 steps per layer that keep
the error of samples, log q and log p at or below the published method's error.

Procedure (``calibrate``):

1. Draw ``points`` latents z; solve the model tightly (float64, dopri5, rtol = atol = 1e-9)
   layer by layer, keeping the state at every layer boundary and each layer's ∫ div dt.
2. Measure the bar: the published solver (dopri5, rtol = atol = 1e-4, float32) on the same
   z (sampling, with log q) and on the tight x (log p), as one batch and as
   ``single_requests`` one-row solves of the first rows (dopri5 controls the error over the
   whole batch, so single rows come out more accurate). Four targets, ``safety ×`` each max
   error (x and log p; batch and single), capped by ``tolerance_cap`` when given: ours on
   all points must meet the batch targets, ours on the first rows the single targets.
3. For every layer, the smallest step count whose *local* error (one layer, started from the
   tight boundary state, both directions) is ≤ the tighter target / L, for the voltages and
   the log-density increment each (their own targets, their own floors). The search climbs 1, 2, 4, …
   steps and then bisects the last doubling, so it costs about twice the answer's steps. RK4's
   error falls 16× per doubling; when it falls less than 2× over two doublings running, the
   layer has reached its rounding floor (float32 arithmetic, e.g. the log-density increment
   summed over 784 nodes) and more steps only cost time: the layer then gets the fewest steps
   within 2× of its floor, and is listed in the record's ``floor_layers``.
4. Verify end to end (sample with log q and log p, in the serving dtype); while an error
   exceeds its target, halve the per-layer budget and search again (local errors are
   remembered across rounds); if every layer is at its floor, halving cannot help: stop.
5. Trim: drop single steps from layers while the end-to-end errors stay within target.

Errors are max absolute errors: voltages in model volts, log-densities in nats.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from . import engine
from .config import CalibrationRecord, SolverConfig
from .engine_state import pack, unpack
from .flow import KirchhoffNet, standard_normal_log_prob
from .solvers import Budget, adaptive

REFERENCE = SolverConfig(method="dopri5", rtol=1e-9, atol=1e-9, max_steps=1_000_000, max_wall_s=3600)
PUBLISHED = SolverConfig(method="dopri5", rtol=1e-4, atol=1e-4, max_steps=1_000_000, max_wall_s=3600)
STEP_LADDER = tuple(range(1, 13)) + (14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256)


@dataclass
class Reference:
    """A tight solution: z ``(n, d)``, x ``(n, d)``, log q(x) ``(n,)``; boundary states
    ``(L+1)`` × ``(n, d)`` and per-layer ∫ div dt ``L`` × ``(n,)`` (float64)."""

    z: Tensor
    x: Tensor
    logp: Tensor
    boundaries: list[Tensor]
    increments: list[Tensor]

    def rows(self, i: int, j: int) -> Reference:
        """The reference restricted to rows ``i:j``."""
        return Reference(self.z[i:j], self.x[i:j], self.logp[i:j], [b[i:j] for b in self.boundaries],
                         [d[i:j] for d in self.increments])


def tight_reference(model: KirchhoffNet, z: Tensor) -> Reference:
    """Float64 dopri5 (1e-9) solution from ``z (n, d)``, layer by layer."""
    m64 = _as(model, torch.float64)
    v = z.to(torch.float64)
    bounds, incs = [v], []
    with torch.no_grad():
        for op, lspec in zip(m64.operators(), m64.spec.layers):
            budget = Budget(REFERENCE.max_steps, REFERENCE.max_wall_s)
            v, ell = adaptive(lambda s, op=op: op.rhs_and_divergence(s), v, v.new_zeros(v.shape[0]),
                              lspec.duration, REFERENCE, budget)
            bounds.append(v)
            incs.append(ell)
    z64 = z.to(torch.float64)
    return Reference(z64, v, standard_normal_log_prob(z64) - sum(incs), bounds, incs)


def row_errors(model: KirchhoffNet, ref: Reference, solver: SolverConfig) -> tuple[Tensor, Tensor]:
    """Per-row errors ``(n,)`` each: max |x − x_ref| over sampling's x and log_prob's z, and
    max |log p − ref| over both, in the model's dtype with ``solver``."""
    with torch.no_grad():
        s = model.sample(0, z=ref.z.to(model.dtype), solver=solver)
        lp = model.log_prob(ref.x.to(model.dtype), solver=solver)
    ex = torch.maximum(_abs(s.x, ref.x).amax(1), _abs(lp.x, ref.z).amax(1))
    el = torch.maximum(_abs(s.logp, ref.logp), _abs(lp.logp, ref.logp))
    return ex, el


def solve_errors(model: KirchhoffNet, ref: Reference, solver: SolverConfig) -> tuple[float, float]:
    """(max x error, max log p error) over all rows; see :func:`row_errors`."""
    ex, el = row_errors(model, ref, solver)
    return float(ex.max()), float(el.max())


def local_error(model: KirchhoffNet, ref: Reference, k: int, steps: int) -> tuple[float, float]:
    """Max errors of layer ``k`` alone with ``steps`` RK4 steps, forward and reverse, started
    from the tight boundary states (model dtype): ``(voltages, ∫ div dt)``, model volts and nats.
    Kept apart because they reach their rounding floors at different step counts."""
    worst_v, worst_ell = 0.0, 0.0
    for reverse in (False, True):
        start, goal = ref.boundaries[k], ref.boundaries[k + 1]
        if reverse:
            start, goal = goal, start
        S = pack(start.to(model.dtype))
        with torch.no_grad():
            engine.advance_layer(model, k, S, steps, reverse, Budget(10**9, 3600.0))
        v_end, ell = unpack(S)
        worst_v, worst_ell = max(worst_v, _maxabs(v_end, goal)), max(worst_ell, _maxabs(ell, ref.increments[k]))
    return worst_v, worst_ell


def calibrate(model: KirchhoffNet, points: int = 512, seed: int = 0, safety: float = 0.5,
              tolerance_cap: float | None = None, max_rounds: int = 6, single_requests: int = 32,
              progress=None) -> CalibrationRecord:
    """Find per-layer RK4 step counts for ``model`` (in its own dtype; see module doc).

    Raises:
        ValueError: the model is not bijective, or no step count up to the ladder's top
            reaches the target.
    """
    if not model.spec.bijective:
        raise ValueError("calibration needs a bijective circuit (log-density defined)")
    z = torch.randn(points, model.data_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ref = tight_reference(model, z)
    published = _as(model, torch.float32)
    published.engine_enabled = False
    bx, bl = solve_errors(published, ref, PUBLISHED)
    # dopri5 controls its error over the whole batch, so single requests come out more
    # accurate than a batch: a second pair of targets holds on the first rows as requests
    n_single = min(single_requests, points)
    singles = [solve_errors(published, ref.rows(i, i + 1), PUBLISHED) for i in range(n_single)]
    sx = max((e[0] for e in singles), default=bx)
    sl = max((e[1] for e in singles), default=bl)
    targets = [safety * t for t in (bx, bl, sx, sl)]
    if tolerance_cap is not None:
        targets = [min(t, tolerance_cap) for t in targets]
    tx, tl, stx, stl = targets

    steps, errs, floors = search_steps(model, ref, targets, n_single, max_rounds, progress)
    return CalibrationRecord(steps_per_layer=tuple(steps), target_x=tx, target_logp=tl,
                             tolerance_cap=tolerance_cap, safety=safety,
                             dtype=str(model.dtype).removeprefix("torch."), points=points, seed=seed,
                             error_x=errs[0], error_logp=errs[1], baseline_error_x=bx,
                             baseline_error_logp=bl, single_requests=n_single, single_target_x=stx,
                             single_target_logp=stl, single_error_x=errs[2], single_error_logp=errs[3],
                             baseline_single_error_x=sx, baseline_single_error_logp=sl,
                             floor_layers=tuple(floors))


def search_steps(model: KirchhoffNet, ref: Reference, targets: list[float], n_single: int = 0,
                 max_rounds: int = 12, progress=None) -> tuple[list[int], tuple[float, ...], list[int]]:
    """Steps 3–5 of the module doc: the fewest RK4 steps per layer whose end-to-end errors on
    ``ref`` meet ``targets`` = (x, log p on all rows, x, log p on the first ``n_single`` rows).
    Returns ``(steps, errors in the targets' order, layers set by their rounding floor)``.

    Raises:
        ValueError: no step counts up to the ladder's top reach the targets (naming the floors).
    """
    tx, tl, stx, stl = targets

    seen: dict[tuple[int, ...], tuple[float, float, float, float]] = {}

    def errors(steps: list[int]) -> tuple[float, float, float, float]:
        # memoised: rounds whose steps did not move (layers at the ladder's top or at their
        # floors) cost nothing, so the halving rounds are cheap when a target is out of reach
        key = tuple(steps)
        if key not in seen:
            ex, el = row_errors(model, ref, _rk4(model, steps))
            head = max(n_single, 1)
            seen[key] = float(ex.max()), float(el.max()), float(ex[:head].max()), float(el[:head].max())
        return seen[key]

    def ok(errs: tuple[float, ...]) -> bool:
        return all(e <= t for e, t in zip(errs, targets))

    n_layers = len(model.spec.layers)
    # per layer and per quantity (voltages; log-density increment): a share of the tighter target
    budgets = [min(tx, stx) / n_layers, min(tl, stl) / n_layers]
    local = [_memo(lambda steps, k=k: local_error(model, ref, k, steps)) for k in range(n_layers)]
    use_floors, floors_seen = True, set()
    for _ in range(max_rounds):
        steps, floors, stuck = [], [], 0
        for k in range(n_layers):
            found = [fewest_steps(lambda s, k=k, q=q: local[k](s)[q], budgets[q], use_floors) for q in (0, 1)]
            steps.append(max(count for count, _ in found))
            stuck += sum(at_floor for _, at_floor in found)
            if any(at_floor for _, at_floor in found):
                floors.append(k)
                floors_seen.add(k)
            if progress:
                progress(k, steps[-1])
        errs = errors(steps)
        if ok(errs):
            steps, errs = _trim(steps, errs, errors, ok)
            return steps, errs, floors
        if stuck == 2 * n_layers:
            if not use_floors:
                break
            # every layer at its rounding floors, and still too inaccurate: the plateaus may have
            # been slow starts after all; search once more without stopping at them
            use_floors = False
            continue
        budgets = [b / 2 for b in budgets]
    floor_note = (f"; layers {sorted(floors_seen)} reach their {model.dtype} rounding floor before the targets"
                  if floors_seen else "")
    raise ValueError(f"no RK4 step counts reach the targets (x {tx:.3g}/{stx:.3g}, log p {tl:.3g}/{stl:.3g} "
                     f"batch/single; last errors {', '.join(f'{e:.3g}' for e in errs)} with {steps}"
                     f"{floor_note}); try float64 or a looser --tolerance")


def _rk4(model: KirchhoffNet, steps: list[int]) -> SolverConfig:
    return model.spec.solver.model_copy(update=dict(method="rk4", steps_per_layer=tuple(steps)))


def _trim(steps: list[int], errs: tuple, errors, ok, passes: int = 3) -> tuple[list[int], tuple]:
    """Greedy end-to-end descent: drop one step from a layer (largest counts first) while
    every error stays within its target. The per-layer budget of the search is
    conservative (local errors do not simply add up), so this usually removes 10–30 %."""
    steps = list(steps)
    for _ in range(passes):
        changed = False
        for k in sorted(range(len(steps)), key=lambda i: -steps[i]):
            if steps[k] == 1:
                continue
            trial = steps[:k] + [steps[k] - 1] + steps[k + 1:]
            trial_errs = errors(trial)
            if ok(trial_errs):
                steps, errs, changed = trial, trial_errs, True
        if not changed:
            break
    return steps, errs


def apply(spec, record: CalibrationRecord):
    """``spec`` with the calibrated RK4 steps as its serving solver and the record attached."""
    solver = spec.solver.model_copy(update=dict(method="rk4", steps_per_layer=record.steps_per_layer))
    return spec.model_copy(update=dict(solver=solver, calibration=record))


FLOOR_RATIO = 0.5  # a doubling that cuts the error by less than this factor made no progress


def fewest_steps(local, budget: float, floors: bool = True) -> tuple[int, bool]:
    """The fewest steps of :data:`STEP_LADDER` with ``local(steps) <= budget``, and False; or,
    when the error stops falling first, the fewest steps within 2× of the smallest error seen,
    and True. Stopped falling (with ``floors``): two doublings running each cut it by less than
    2×, after an earlier doubling cut it by 16× or more (RK4's own rate: its error was already
    converging, so the plateau is rounding, not a slow start). ``local`` maps a step count to
    the layer's local error (non-finite: unstable).

    Climbs 1, 2, 4, … (costs grow with the steps, so the climb costs about what its last trial
    does) and bisects the ladder inside the last doubling; at the ladder's top without meeting
    the budget, returns the top and False (the end-to-end check decides)."""
    errs: dict[int, float] = {}

    def err(steps: int) -> float:
        if steps not in errs:
            e = float(local(steps))
            errs[steps] = e if e == e else float("inf")  # NaN → inf: an unstable step is no floor
        return errs[steps]

    climb = [s for s in STEP_LADDER if s & (s - 1) == 0]  # the powers of two: 1, 2, 4, …, top
    for i, s in enumerate(climb):
        if err(s) <= budget:
            return _bisect(err, budget, climb[i - 1] if i else 0, s), False
        flat = i >= 3 and all(err(b) > FLOOR_RATIO * err(a) for a, b in zip(climb[i - 2:i], climb[i - 1:i + 1]))
        if floors and flat and any(err(b) <= err(a) / 16 for a, b in zip(climb[:i - 2], climb[1:i - 1])):
            floor = min(errs.values())
            first = next(t for t in climb[:i + 1] if err(t) <= 2 * floor)
            before = climb[climb.index(first) - 1] if first > 1 else 0
            return _bisect(err, 2 * floor, before, first), True
    return climb[-1], False


def _bisect(err, limit: float, lo: int, hi: int) -> int:
    """The fewest ladder steps in (lo, hi] with ``err <= limit``, given that ``hi`` meets it
    (the error falls with the step count inside one doubling)."""
    inside = [s for s in STEP_LADDER if lo < s <= hi]
    a, b = 0, len(inside) - 1
    while a < b:
        mid = (a + b) // 2
        if err(inside[mid]) <= limit:
            b = mid
        else:
            a = mid + 1
    return inside[a]


def _memo(fn):
    cache: dict[int, float] = {}

    def cached(steps: int) -> float:
        if steps not in cache:
            cache[steps] = fn(steps)
        return cache[steps]
    return cached


def _as(model: KirchhoffNet, dtype: torch.dtype) -> KirchhoffNet:
    clone = copy.deepcopy(model)  # references and the published bar are CPU solves
    clone.requires_grad_(False)
    return clone.to(device="cpu", dtype=dtype)


def _abs(a: Tensor, b: Tensor) -> Tensor:
    return (a.detach().cpu().to(torch.float64) - b.detach().cpu().to(torch.float64)).abs()


def _maxabs(a: Tensor, b: Tensor) -> float:
    return float((a.detach().cpu().to(torch.float64) - b.detach().cpu().to(torch.float64)).abs().max())
