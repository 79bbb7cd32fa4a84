"""KirchhoffNet as a continuous normalizing flow: sampling and exact log-density.

Generation: z ~ N(0, I) is the initial voltage at t = 0 and x = v(T). Along a trajectory
d log p/dt = −tr(∂f/∂v), so  log q(x) = log N(z; 0, I) − ∫_0^T tr(∂f/∂v) dt,  with the
trace in closed form (``models.circuit``). ``log_prob`` integrates from x at T back to z.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .circuit import CircuitLayer, Form, LayerOperator
from .config import CircuitSpec, LayerSpec, SolverConfig
from .solvers import Budget, BudgetExceeded, SolveStats, Status, adaptive, fixed_step


@dataclass
class FlowResult:
    """What a flow call returns.

    ``x``: ``(batch, data_dim)`` samples (``sample``) or latents z (``log_prob``);
    ``logp``: ``(batch,)`` log-density in nats, or None when not requested or undefined;
    ``stats``: status, NFE, steps and wall time of the solve.
    """

    x: Tensor
    logp: Tensor | None
    stats: SolveStats


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) for ``z (…, batch, d)`` → ``(…, batch)``."""
    return -0.5 * (z * z).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def resize_nodes(v: Tensor, nodes: int, pad_mode: str) -> Tensor:
    """Adapt ``v (…, batch, n)`` to ``nodes``: drop surplus nodes, or add nodes at 0 V
    (``zeros``) or repeating the existing voltages cyclically (``repeat``)."""
    n = v.shape[-1]
    if nodes == n:
        return v
    if nodes < n:
        return v[..., :nodes]
    if pad_mode == "zeros":
        return torch.nn.functional.pad(v, (0, nodes - n))
    idx = torch.arange(nodes, device=v.device) % n
    return v[..., idx]


class KirchhoffNet(nn.Module):
    """A multi-layer KirchhoffNet flow. Parameters live in ``layers``; architecture in ``spec``."""

    def __init__(self, spec: CircuitSpec, params: list[dict[str, Tensor]] | None = None,
                 init_scale: float = 0.5, seed: int = 0, current_scales: list[Tensor | None] | None = None):
        super().__init__()
        self.spec = spec
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(
            CircuitLayer(layer, spec.device, None if params is None else params[i], spec.leaky_slope,
                         init_scale=init_scale, generator=gen,
                         current_scale=None if current_scales is None else current_scales[i])
            for i, layer in enumerate(spec.layers)
        )
        # an emulated chip's per-device I0 factors are fixed at construction (models.chip)
        self._has_current_scale = current_scales is not None and any(c is not None for c in current_scales)
        self.form: Form = "auto"
        # RK4 calls that need no gradient go through models.engine (same results, faster);
        # set False to force the generic tableau loop (used by tests and benchmarks).
        self.engine_enabled = True

    # -- bookkeeping -----------------------------------------------------------------
    @property
    def data_dim(self) -> int:
        return self.spec.data_dim

    @property
    def device(self) -> torch.device:
        return self._first_parameter().device

    @property
    def dtype(self) -> torch.dtype:
        return self._first_parameter().dtype

    def _first_parameter(self) -> torch.Tensor:
        # not next(self.parameters()): that walks every submodule (~30 µs, 4× per request); and
        # through the modules' own dicts, not attribute lookups and ModuleList indexing (~4 µs
        # each; the engine reads device and dtype on every request, docs/engine.md)
        params = self._modules["layers"]._modules["0"]._modules["params"]._parameters
        return next(iter(params.values()))

    def operators(self) -> list[LayerOperator]:
        if self.spec.cell is not None:  # a characterized cell couples every layer (models.cell_law)
            from .cell_law import cell_operators
            return cell_operators(self.spec.cell, list(self.layers))
        return [layer.operator(self.form) for layer in self.layers]

    @property
    def has_current_scale(self) -> bool:
        """True for an emulated chip whose devices carry per-device I0 factors (``models.chip``)."""
        return self._has_current_scale

    def make_realisable(self) -> None:
        """Project the parameters, in place, onto what the characterized cell can realise
        (``models.cell_law.project``); nothing to do for an ideal circuit."""
        law = self.spec.cell
        if law is None:
            return
        from .cell_law import project
        with torch.no_grad():
            for layer in self.layers:
                a, b, c = (t.clone() for t in layer.family.effective(dict(layer.params.items())))
                project(law, a, b, c, layer.src, layer.dst)
                layer.params["a"].copy_(a)
                layer.params["c"].copy_(c)
                if "b" in layer.params:
                    layer.params["b"].copy_(b)

    def raw_params(self) -> list[dict[str, Tensor]]:
        return [{k: p.detach().cpu() for k, p in layer.params.items()} for layer in self.layers]

    # -- integration -----------------------------------------------------------------
    def integrate(self, v: Tensor, solver: SolverConfig | None = None, reverse: bool = False,
                  with_divergence: bool = True, operators: list[LayerOperator] | None = None,
                  layers: Sequence[LayerSpec] | None = None, steps: Sequence[int] | None = None
                  ) -> tuple[Tensor, Tensor | None, SolveStats]:
        """Solve the circuit from t = 0 to T (or T to 0 when ``reverse``).

        Args:
            v: ``(batch, data_dim)`` initial voltages (model volts).
            solver: solver settings; defaults to the model's serving settings.
            reverse: integrate data → latent (requires a bijective circuit).
            with_divergence: also accumulate ∫ tr(∂f/∂v) dt, ``(batch,)``.
            operators, layers: solve these frozen operators over these layer specs (an
                emulated chip's perturbed circuit, ``models.chip``) instead of the model's
                own; ``v`` may then carry leading instance dimensions ``(*instances, batch, d)``.
            steps: fixed steps per layer of ``layers`` (default: the solver's).

        Returns:
            ``(v_end (batch, data_dim), integral or None, stats)``. On failure the
            state reached so far is returned with a non-success status.
        """
        cfg = solver or self.spec.solver
        if operators is None and self.engine_enabled and not self.has_current_scale and self.spec.cell is None:
            from . import engine  # the serving fast path: RK4 without autograd
            if engine.supports(self, v, cfg):
                # a forced form (tests comparing dense and gather) also forces the torch path
                return engine.integrate(self, v, cfg, reverse, with_divergence, form=self.form,
                                        small=None if self.form == "auto" else False)
        ops = operators if operators is not None else self.operators()
        specs = tuple(layers) if layers is not None else self.spec.layers
        if len(specs) != len(ops):
            raise ValueError(f"{len(ops)} operators for {len(specs)} layers")
        budget = Budget(cfg.max_steps, cfg.max_wall_s)
        order = range(len(ops) - 1, -1, -1) if reverse else range(len(ops))
        if reverse and not all(layer.nodes == self.data_dim for layer in specs):
            raise ValueError("reverse integration needs every layer to have data_dim nodes")
        ell = v.new_zeros(v.shape[:-1]) if with_divergence else None
        stats = SolveStats()
        sign = -1.0 if reverse else 1.0
        try:
            for k in order:
                op, layer = ops[k], specs[k]
                v = resize_nodes(v, layer.nodes, self.spec.pad_mode)
                fn = field_of(op, sign, with_divergence)
                if cfg.adaptive:
                    v, ell = adaptive(fn, v, ell, layer.duration, cfg, budget)
                else:
                    n_steps = cfg.steps_for(k, len(ops)) if steps is None else steps[k]
                    v, ell = fixed_step(fn, v, ell, layer.duration, n_steps, cfg.method, budget)
                if not bool(torch.isfinite(v).all()) or (ell is not None and not bool(torch.isfinite(ell).all())):
                    raise BudgetExceeded(Status.NONFINITE, f"non-finite voltages after layer {k}")
        except BudgetExceeded as exc:
            stats.status, stats.message = exc.status, str(exc)
        stats.nfe, stats.steps = budget.nfe, budget.steps
        stats.wall_s = time.perf_counter() - budget.started
        return resize_nodes(v, self.data_dim, self.spec.pad_mode), ell, stats

    # -- flow API --------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, solver: SolverConfig | None = None,
               with_logprob: bool = True, z: Tensor | None = None) -> FlowResult:
        """Draw ``n`` samples: ``x (n, data_dim)`` and, for bijective circuits, log q(x) ``(n,)``.

        The latent is drawn on the CPU from ``generator`` so a seed gives the same samples
        on any device.
        """
        if z is None:
            if n < 1:
                raise ValueError("n must be >= 1")
            z = torch.randn(n, self.data_dim, generator=generator, dtype=torch.float64)
        z = z.to(device=self.device, dtype=self.dtype)
        want_logp = with_logprob and self.spec.bijective
        x, ell, stats = self.integrate(z, solver, reverse=False, with_divergence=want_logp)
        logq = standard_normal_log_prob(z) - ell if want_logp else None
        return FlowResult(x, logq, stats)

    def log_prob(self, x: Tensor, solver: SolverConfig | None = None) -> FlowResult:
        """Exact log-density of ``x (batch, data_dim)`` in nats: ``logp (batch,)``; ``x`` of the
        result holds the latents z. ValueError for non-bijective circuits or a wrong shape."""
        if not self.spec.bijective:
            raise ValueError(f"model {self.spec.name!r} changes node counts between layers; "
                             "its log-density is not defined")
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"points must have shape (batch, {self.data_dim}), got {tuple(x.shape)}")
        x = x.to(device=self.device, dtype=self.dtype)
        z, ell, stats = self.integrate(x, solver, reverse=True, with_divergence=True)
        return FlowResult(z, standard_normal_log_prob(z) - ell, stats)

    def forward(self, z: Tensor, solver: SolverConfig | None = None) -> Tensor:
        """The map z ↦ x = v(T), ``(batch, data_dim)``."""
        return self.integrate(z, solver, with_divergence=False)[0]


def field_of(op: LayerOperator, sign: float, with_divergence: bool):
    """The solver's field of one layer operator: (dv/dt, divergence or None), time sign applied."""
    if with_divergence:
        def fn(v: Tensor):
            dv, div = op.rhs_and_divergence(v)
            return (dv if sign > 0 else -dv), div
    else:
        def fn(v: Tensor):
            dv = op.rhs(v)
            return (dv if sign > 0 else -dv), None
    return fn
