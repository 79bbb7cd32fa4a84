"""Monte Carlo robustness of a KirchhoffNet against chip non-idealities (``models.chip``).

For each effect and level this measures what a manufactured chip would produce:

- flows (mismatch, quantization, switching): the exact test NLL of each perturbed chip on
  fresh test points (generation) or E[log q + U] (density matching), mean ± standard error
  over chip instances and the worst instance;
- every effect, noise and converters included: the energy distance between chip samples
  and held-out data with a bootstrap confidence interval, read against the ideal model's
  distance and the floor (two independent data draws).

All instances of one level are solved together (one batched solve over K chips).
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from .chip import Chip
from .config import ChipConfig
from .data import Task
from .flow import KirchhoffNet

EFFECTS = ("mismatch", "quantization", "switching", "noise", "adc")
DEFAULT_LEVELS: dict[str, tuple[float, ...]] = {
    "mismatch": (0.0, 0.005, 0.01, 0.02, 0.05, 0.1),  # σ, relative
    "quantization": (4, 6, 8, 10, 12),  # weight bits
    "switching": (1e-12, 1e-11, 2.5e-11, 5e-11),  # transition time, seconds (cross-fade)
    "noise": (1.0, 0.1, 0.01),  # node capacitance as a fraction of the model's C
    "adc": (6, 8, 10, 12),  # DAC and ADC bits
}
LEVEL_UNITS = {"mismatch": "σ (relative)", "quantization": "weight bits", "switching": "transition time (s)",
               "noise": "C / C_model", "adc": "converter bits"}
EVAL_SEED = 20_240_101  # the test points of `knet eval`
SAMPLE_SEED, DATA_SEED, FLOOR_SEED = 7, 11, 13
CHUNK_ROWS = 2048


@dataclass
class RobustnessRow:
    """One effect at one level. ``nll``: the task's quality figure (test NLL, or E[log q + U]
    for density matching; nats, lower is better), mean over instances, with ``nll_se`` its
    standard error (over instances, or over points for a single deterministic chip) and
    ``nll_worst`` the worst instance; None where the chip has no density. ``distance``:
    energy distance of chip samples to held-out data, mean over instances, with a 95 %
    bootstrap interval ``distance_ci``."""

    effect: str
    level: float
    nll: float | None
    nll_se: float | None
    nll_worst: float | None
    distance: float
    distance_ci: tuple[float, float]
    instances: int


@dataclass
class RobustnessSettings:
    """Sizes of the Monte Carlo; the defaults are the documented ones."""

    instances: int = 32
    eval_points: int = 8192
    sample_points: int = 2048
    bootstrap: int = 200
    max_seconds: float = 1800.0


class EnergyDistance:
    """Energy distance E = 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖ to one reference set (U-statistic:
    the within-set means skip pairs of a point with itself, so the expected value of two
    draws of one distribution is 0), with bootstrap draws that resample both sets by
    multinomial weights, each draw three matrix–vector products. Within a resampled set,
    pairs of copies of one point are skipped too, so the bootstrap is not biased upwards."""

    def __init__(self, reference: Tensor, draws: int, seed: int = 0):
        self.y = reference.to(torch.float64)
        gen = torch.Generator().manual_seed(seed)
        n = self.y.shape[0]
        self.wy = _multinomial_weights(n, draws, gen)  # (n, draws)
        self.wx = _multinomial_weights(n, draws, gen)
        dyy = torch.cdist(self.y, self.y)
        self.yy = float(dyy.sum()) / (n * (n - 1))
        self.yy_draws = _within(dyy, self.wy)

    def __call__(self, x: Tensor) -> tuple[float, Tensor]:
        """Distance of samples ``x (n, d)`` (same n as the reference) and its bootstrap draws."""
        x = x.to(torch.float64)
        n = x.shape[0]
        dxy, dxx = torch.cdist(x, self.y), torch.cdist(x, x)
        value = 2 * float(dxy.mean()) - float(dxx.sum()) / (n * (n - 1)) - self.yy
        cross = (self.wx * (dxy @ self.wy)).sum(0) / n**2
        return value, 2 * cross - _within(dxx, self.wx) - self.yy_draws


def _within(d: Tensor, w: Tensor) -> Tensor:
    """Mean distance over pairs of distinct original points in each resampled set:
    wᵀDw / (n² − Σw²) per column of the weights ``w (n, draws)``."""
    n = w.shape[0]
    return (w * (d @ w)).sum(0) / (n * n - (w * w).sum(0))


def _multinomial_weights(n: int, draws: int, gen: torch.Generator) -> Tensor:
    idx = torch.randint(0, n, (draws, n), generator=gen)
    counts = torch.zeros(draws, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(draws, n, dtype=torch.float64))
    return counts.T.contiguous()


def _ci(draws: Tensor) -> tuple[float, float]:
    lo, hi = torch.quantile(draws, torch.tensor([0.025, 0.975], dtype=draws.dtype))
    return float(lo), float(hi)


def chip_for(effect: str, level: float, model: KirchhoffNet) -> tuple[KirchhoffNet, ChipConfig]:
    """The (model, chip) pair one effect at one level describes. Noise levels scale the node
    capacitance, which only changes the noise (model-time dynamics are unchanged)."""
    if effect == "mismatch":
        return model, ChipConfig(mismatch=level)
    if effect == "quantization":
        return model, ChipConfig(quant_bits=int(level))
    if effect == "switching":
        return model, ChipConfig(switching_s=level)
    if effect == "noise":
        return with_hardware(model, capacitance_f=model.spec.hardware.capacitance_f * level), ChipConfig(noise=True)
    if effect == "adc":
        return model, ChipConfig(dac_bits=int(level), adc_bits=int(level))
    raise ValueError(f"unknown effect {effect!r}; expected one of {', '.join(EFFECTS)}")


def with_hardware(model: KirchhoffNet, **constants: float) -> KirchhoffNet:
    """``model`` on other hardware constants (C, V0, I0, …): a shallow copy that shares the
    parameters, so the model-time dynamics are the same and only the physics around them
    (τ, noise, switching width) changes."""
    out = copy.copy(model)
    out.spec = model.spec.model_copy(update={"hardware": model.spec.hardware.model_copy(update=constants)})
    return out


class Robustness:
    """The Monte Carlo of one model on one task (see the module docstring)."""

    def __init__(self, model: KirchhoffNet, task: Task, settings: RobustnessSettings | None = None):
        settings = settings or RobustnessSettings()
        self.model, self.task, self.settings = model, task, settings
        s = settings
        # one solve of K chips does K times the work of a served request: bound it by the run
        self.solver = model.spec.solver.model_copy(update={"max_wall_s": settings.max_seconds})
        self.started = time.perf_counter()
        gen = torch.Generator().manual_seed(SAMPLE_SEED)
        self.z = torch.randn(s.sample_points, model.data_dim, generator=gen, dtype=torch.float64)
        if task.kind == "data":
            self.reference = task.sample(s.sample_points, DATA_SEED, split="test")
            floor = task.sample(s.sample_points, FLOOR_SEED, split="test")
            self.eval_points = task.sample(s.eval_points, EVAL_SEED, split="test")
        else:  # no data: the ideal model's own samples are the reference
            self.reference = self._ideal_samples(DATA_SEED)
            floor = self._ideal_samples(FLOOR_SEED)
            self.eval_points = None
        self.distance = EnergyDistance(self.reference, s.bootstrap)
        self.floor = self.distance(floor)
        self.ideal = self.row("mismatch", 0.0)

    def _ideal_samples(self, seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return self.model.sample(self.settings.sample_points, gen, with_logprob=False).x.double()

    def _check_time(self) -> None:
        if time.perf_counter() - self.started > self.settings.max_seconds:
            raise RobustnessFailed(f"robustness run exceeded its bound of {self.settings.max_seconds:g} s "
                                   "(--max-seconds)")

    def row(self, effect: str, level: float) -> RobustnessRow:
        """Measure one effect at one level."""
        self._check_time()
        model, chip = chip_for(effect, level, self.model)
        random_chips = effect == "mismatch" and level > 0
        k = self.settings.instances if random_chips else 1
        emu = Chip(model, chip, instances=list(range(k)), solver=self.solver)
        quality = self._quality(emu) if emu.is_flow else None
        noise_gen = torch.Generator().manual_seed(SAMPLE_SEED + 1)
        res = emu.sample(0, z=self.z, with_logprob=False, noise_generator=noise_gen)
        _require(res.stats, effect, level)
        values, draws = zip(*(self.distance(res.x[i]) for i in range(k)))
        mean_draws = torch.stack(draws).mean(0)
        nll, nll_se, worst = quality if quality is not None else (None, None, None)
        return RobustnessRow(effect, float(level), nll, nll_se, worst, float(np.mean(values)), _ci(mean_draws), k)

    def _quality(self, emu: Chip) -> tuple[float, float, float]:
        """Per-instance quality → (mean, s.e., worst)."""
        if self.eval_points is not None:
            parts = []
            for chunk in self.eval_points.split(CHUNK_ROWS):
                res = emu.log_prob(chunk)
                _require(res.stats, "log-density", None)
                parts.append(-res.logp.double())
            per_point = torch.cat(parts, dim=-1)  # (K, n)
        else:
            gen = torch.Generator().manual_seed(EVAL_SEED)
            z = torch.randn(self.settings.eval_points, self.model.data_dim, generator=gen, dtype=torch.float64)
            parts = []
            for chunk in z.split(CHUNK_ROWS):
                res = emu.sample(0, z=chunk)
                _require(res.stats, "sample", None)
                k, n, d = res.x.shape
                energy = self.task.energy(res.x.double().reshape(-1, d)).reshape(k, n)
                parts.append(res.logp.double() + energy)
            per_point = torch.cat(parts, dim=-1)
        per_chip = per_point.mean(-1)
        k = per_chip.shape[0]
        if k == 1:
            se = float(per_point.std() / math.sqrt(per_point.shape[-1]))
        else:
            se = float(per_chip.std() / math.sqrt(k))
        return float(per_chip.mean()), se, float(per_chip.max())

    def run(self, levels: dict[str, Sequence[float]], progress: Callable[[str, float], None] | None = None
            ) -> dict:
        """Every requested effect at every level; the JSON-ready report."""
        rows = []
        for effect, values in levels.items():
            for level in values:
                if progress is not None:
                    progress(effect, level)
                rows.append(self.ideal if (effect, level) == ("mismatch", 0.0) else self.row(effect, level))
        return self.report(rows)

    def report(self, rows: list[RobustnessRow]) -> dict:
        ideal = self.ideal
        return {
            "model": self.model.spec.name,
            "task": self.task.name,
            "metric": "nll" if self.task.kind == "data" else "elbo",
            "metric_note": ("test NLL on fresh points, nats" if self.task.kind == "data"
                            else "E[log q + U] over model samples, nats (no data: distances are to the ideal "
                                 "model's samples)"),
            "ideal": {"nll": ideal.nll, "nll_se": ideal.nll_se, "distance": ideal.distance,
                      "distance_ci": list(ideal.distance_ci)},
            "floor": {"distance": self.floor[0], "distance_ci": list(_ci(self.floor[1]))},
            "settings": asdict(self.settings),
            "level_units": LEVEL_UNITS,
            "hardware": self.model.spec.hardware.model_dump(mode="json"),
            "seconds": round(time.perf_counter() - self.started, 1),
            "rows": [{**asdict(r), "distance_ci": list(r.distance_ci)} for r in rows],
        }


class RobustnessFailed(RuntimeError):
    """A solve of the Monte Carlo failed (budget, non-finite state) or the run outlasted its
    time bound; the message names the effect, the level and the status."""


def _require(stats, what: str, level: float | None) -> None:
    if not stats.ok:
        at = "" if level is None else f" at level {level:g}"
        raise RobustnessFailed(f"{what} solve{at} failed: {stats.status.name.lower()}: {stats.message}")


def solver_check(model: KirchhoffNet, task: Task, mismatch: float = 0.1, instances: int = 4,
                 points: int = 256) -> dict:
    """Do perturbed chips stay within the calibrated solver's error bound? The log-density of
    ``instances`` chips at ``mismatch`` with the serving steps against a float64 dopri5
    solve at 1e-9, on test points (or model samples for energies): max |Δ log p|, nats,
    beside the error the calibration recorded for the ideal model."""
    from .config import SolverConfig
    reference_solver = SolverConfig(method="dopri5", rtol=1e-9, atol=1e-9, max_wall_s=600.0)
    if task.kind == "data":
        x = task.sample(points, EVAL_SEED + 1, split="test")
    else:
        x = model.sample(points, torch.Generator().manual_seed(EVAL_SEED + 1), with_logprob=False).x.double()
    seeds = list(range(instances))
    served = Chip(model, ChipConfig(mismatch=mismatch), instances=seeds).log_prob(x)
    exact_model = copy.deepcopy(model).to(torch.float64)
    exact = Chip(exact_model, ChipConfig(mismatch=mismatch), instances=seeds, solver=reference_solver).log_prob(x)
    _require(served.stats, "served log-density", mismatch)
    _require(exact.stats, "reference log-density", mismatch)
    err = float((served.logp.double() - exact.logp).abs().max())
    cal = model.spec.calibration
    return {"mismatch": mismatch, "instances": instances, "points": points, "max_abs_error_logp": err,
            "ideal_calibrated_error_logp": None if cal is None else cal.error_logp,
            "ideal_target_logp": None if cal is None else cal.target_logp,
            "within_target": None if cal is None else err <= cal.target_logp}
