"""Accuracy tiers: RK4 step tables whose error is verified on inputs their search never saw.

For each tolerance τ (nats on log p; the same number in model volts on x), ``calibrate_tiers``:

1. builds calibration inputs of two kinds: ``points`` latents z ~ N(0, I) (the model's own
   samples) and ``points`` *diverse* data-space points (``diverse_points``: for a 2-D task,
   uniform on the box ±plot_range that covers its data and more; for other data tasks, training
   data perturbed by N(0, 0.1²); otherwise latents from the wider N(0, 1.5²) pushed through the
   flow), mapped to their latents by a tight reverse solve; a float64 dopri5 1e-9 reference of all
   of them, layer by layer (``models.calibration.tight_reference``);
2. searches the fewest RK4 steps per layer whose max errors on those rows are ≤ τ
   (``models.calibration.search_steps``: per-layer local budgets, end-to-end check, trim);
3. verifies the steps on fresh inputs drawn the same way with another seed and records the
   maximum and 99.9th-percentile errors of log p and x there, and the region those inputs
   covered: the data-space box of their points and the largest |z_i| of their latents.

The bound is empirical: measured on the verification inputs, not proven; answers for inputs
outside the verified region are flagged (:func:`in_region`). A tolerance no RK4 step count can
meet in the model's dtype (e.g. 1e-4 nats under float32 rounding) yields no tier, and says why.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from .calibration import REFERENCE, _as, _rk4, row_errors, search_steps, tight_reference
from .config import AccuracyTier, SolverConfig
from .data import Task
from .flow import KirchhoffNet

DEFAULT_TOLERANCES = (1e-2, 1e-3, 1e-4)
# Above 64 dimensions a float32 log-density summed over hundreds of nodes has a rounding floor
# near half a nat (784-D genmnist: 0.55 nats at any step count), so the tiers above cannot be met;
# one 1-nat tier is (the published solver's own error there is about 11 nats).
HIGH_DIM_TOLERANCES = (1.0,)
HIGH_DIM = 64
DEFAULT_TIER_NATS = 1e-3  # the tier that answers when a request names no tolerance
NO_TIERS_WARNING = ("no verified accuracy tiers: answers come from the model's own solver with accuracy_tier and "
                    "error_bound null (no verified bound); `knet calibrate MODEL --tiers --write` adds them")
SMALL_INPUT = 256  # values; below, the region check runs in Python (it is on every request's path)


def default_tolerances(data_dim: int) -> tuple[float, ...]:
    """The tolerances (nats) tiers are searched for when none are named."""
    return DEFAULT_TOLERANCES if data_dim <= HIGH_DIM else HIGH_DIM_TOLERANCES


def diverse_points(model: KirchhoffNet, task: Task | None, n: int, seed: int) -> Tensor:
    """``(n, d)`` float64 data-space points beyond the model's own samples (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    d = model.data_dim
    if task is not None and task.kind == "data" and d == 2:
        return (torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1) * task.plot_range
    if task is not None and task.kind == "data":
        data = task.sample(n, seed)
        return data + 0.1 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    z = 1.5 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        return _as(model, torch.float64).sample(0, z=z, solver=REFERENCE).x


def _latents(model: KirchhoffNet, n: int, task: Task | None, seed: int) -> Tensor:
    """The latents of ``n`` own samples and ``n`` diverse points (tight reverse solve), float64."""
    z = torch.randn(n, model.data_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = diverse_points(model, task, n, seed + 1)
    with torch.no_grad():
        back = _as(model, torch.float64).log_prob(x, REFERENCE)
    if not back.stats.ok:
        raise ValueError(f"tight reverse solve of the diverse points failed: {back.stats.message}")
    return torch.cat([z, back.x.double()])


def calibrate_tiers(model: KirchhoffNet, task: Task | None, tolerances=DEFAULT_TOLERANCES, points: int = 512,
                    seed: int = 0, progress: Callable[[str], None] | None = None,
                    on_tier: Callable[[AccuracyTier], None] | None = None
                    ) -> tuple[list[AccuracyTier], dict[float, str]]:
    """The verified tiers of ``model`` (in its own dtype) for ``tolerances`` (nats), and the reason
    for each tolerance that got none. ``on_tier`` receives each tier as soon as it is verified
    (a caller under a time bound keeps those if a later search runs out of time)."""
    if not model.spec.bijective:
        raise ValueError("accuracy tiers need a bijective circuit (log-density defined)")
    say = progress or (lambda _: None)
    say(f"tight reference on {2 * points} calibration and {2 * points} verification rows")
    cal = tight_reference(model, _latents(model, points, task, seed))
    ver = tight_reference(model, _latents(model, points, task, seed + 1000))
    low = tuple(float(v) for v in ver.x.amin(0))
    high = tuple(float(v) for v in ver.x.amax(0))
    radius = float(ver.z.abs().max())
    tiers, missing = [], {}
    for tol in sorted(tolerances, reverse=True):
        say(f"tier {tol:g} nats: searching steps")
        try:
            steps, _, _ = search_steps(model, cal, [tol, tol, tol, tol])
        except ValueError as err:
            missing[tol] = str(err)
            say(f"tier {tol:g} nats: none ({err})")
            continue
        ex, el = row_errors(model, ver, _rk4(model, steps))
        tiers.append(AccuracyTier(tolerance_nats=tol, steps_per_layer=tuple(steps),
                                  max_error_logp=float(el.max()), p999_error_logp=_quantile(el, 0.999),
                                  max_error_x=float(ex.max()), p999_error_x=_quantile(ex, 0.999),
                                  verified_points=len(ver.z), region_low=low, region_high=high,
                                  latent_radius=radius, dtype=str(model.dtype).removeprefix("torch.")))
        say(f"tier {tol:g} nats: steps {steps}, verified max log p error {float(el.max()):.2g}")
        if on_tier is not None:
            on_tier(tiers[-1])
    return tiers, missing


def choose_tier(tiers, tolerance: float | None) -> AccuracyTier | None:
    """The tier that answers a request: the fewest-step tier whose verified max log p error is
    within ``tolerance`` (None: the :data:`DEFAULT_TIER_NATS` tier, else the most accurate one;
    None without tiers).

    Raises:
        ValueError: a tolerance no tier meets (naming the best verified one).
    """
    if not tiers:
        if tolerance is not None:
            raise ValueError("the model has no verified accuracy tiers (`knet calibrate MODEL --tiers --write`)")
        return None
    if tolerance is None:
        default = next((t for t in tiers if t.tolerance_nats == DEFAULT_TIER_NATS), None)
        return default or min(tiers, key=lambda t: t.max_error_logp)
    meeting = [t for t in tiers if t.max_error_logp <= tolerance]
    if not meeting:
        best = min(tiers, key=lambda t: t.max_error_logp)
        raise ValueError(f"no accuracy tier meets tolerance {tolerance:g} nats; the most accurate is verified "
                         f"to {best.max_error_logp:.2g} nats (tier {best.tolerance_nats:g})")
    return min(meeting, key=lambda t: (sum(t.steps_per_layer), t.max_error_logp))


def tier_solver(solver: SolverConfig, tier: AccuracyTier) -> SolverConfig:
    """``solver`` (its budgets kept) with the tier's RK4 steps."""
    return solver.model_copy(update={"method": "rk4", "steps_per_layer": tier.steps_per_layer})


def in_region(tier: AccuracyTier, points: Tensor | None = None, latents: Tensor | None = None) -> bool:
    """True when every data-space point ``(n, d)`` lies in the tier's verified box and every latent
    ``(n, d)`` within its verified radius."""
    ok = True
    if points is not None:
        if points.numel() <= SMALL_INPUT:  # a few rows: plain Python beats a handful of torch kernels
            ok = all(lo <= v <= hi for row in points.tolist() for v, lo, hi in zip(row, tier.region_low,
                                                                                   tier.region_high))
        else:
            low, high = _box(tier)
            ok = bool(((points >= low.to(points.dtype)) & (points <= high.to(points.dtype))).all())
    if latents is not None:
        if latents.numel() <= SMALL_INPUT:
            ok = ok and all(abs(v) <= tier.latent_radius for row in latents.tolist() for v in row)
        else:
            ok = ok and bool((latents.abs() <= tier.latent_radius).all())
    return ok


def answer_accuracy(tier: AccuracyTier | None, with_logprob: bool, points: Tensor | None = None,
                    latents: Tensor | None = None) -> dict:
    """The accuracy fields of an answer: ``accuracy_tier`` (the answering tier's tolerance, nats;
    None when no verified tier answered), ``error_bound`` (the tier's verified max log p error,
    nats; None without a log-density or a tier) and ``in_verified_region`` (None without a tier)."""
    if tier is None:
        return {"accuracy_tier": None, "error_bound": None, "in_verified_region": None}
    return {"accuracy_tier": tier.tolerance_nats, "error_bound": tier.max_error_logp if with_logprob else None,
            "in_verified_region": in_region(tier, points=points, latents=latents)}


def tiers_summary(spec) -> dict:
    """What the circuit ``spec`` promises about accuracy, for its description (``GET
    /models/{name}``): each tier's tolerance, steps and verified errors, the default tier, and a
    warning where a model with a log-density has no verified tier (its answers carry no bound)."""
    tiers = spec.accuracy_tiers
    default = choose_tier(tiers, None)
    return {"tiers": [{"tolerance_nats": t.tolerance_nats, "steps_per_layer": list(t.steps_per_layer),
                       "max_error_logp": t.max_error_logp, "p999_error_logp": t.p999_error_logp,
                       "max_error_x": t.max_error_x} for t in tiers],
            "default_tier_nats": None if default is None else default.tolerance_nats,
            "warning": None if tiers or not spec.bijective else NO_TIERS_WARNING}


@functools.lru_cache(maxsize=256)
def _box(tier: AccuracyTier) -> tuple[Tensor, Tensor]:
    """The tier's verified box as float64 tensors, built once per tier (checked on every answer)."""
    return (torch.tensor(tier.region_low, dtype=torch.float64), torch.tensor(tier.region_high, dtype=torch.float64))


def _quantile(t: Tensor, q: float) -> float:
    v = t.double().sort().values
    return float(v[min(len(v) - 1, math.ceil(q * len(v)) - 1)])
