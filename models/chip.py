"""Emulated chips: what a manufactured KirchhoffNet would produce, not the ideal circuit.

Effects (each switchable on its own through :class:`models.config.ChipConfig`):

- **Device mismatch**: each device's raw gains (a, b or g) and its current scale I0 are
  multiplied by (1 + σ·N(0,1)); its offset c is shifted by σ_off·N(0,1) (model volts, an
  input-referred threshold offset); each node capacitor is multiplied by (1 + σ_C·N(0,1)),
  the same physical capacitor in every layer. Draws are standard normals fixed by the
  chip's ``instance`` seed and scaled by σ afterwards, so one instance seen at several σ
  levels moves smoothly.
- **Weight quantization**: raw parameters programmed with k bits, symmetric, 2^k − 1
  levels over ±max|w| of each layer and parameter kind (applied before mismatch: the
  programmed value is what the mismatched device then realises).
- **Layer switching**: a transition of ``switching_s`` seconds at every internal layer
  boundary, either a linear cross-fade centred on the boundary (both layers partly
  connected; emulated by :data:`CROSSFADE_SLICES` slices at the ramp's midpoint weights,
  an O((w/S)²) approximation of the ramp) or break-before-make (a gap in which no device
  is connected, so every node holds its voltage).
- **Thermal noise**: each device injects a current noise of one-sided density 4kT·g with g
  its small-signal conductance at the operating point (see :func:`noise_scale`), integrated
  as an Itô SDE (RK4 drift, Euler–Maruyama noise).
- **Converters**: the input DAC and the output ADC quantize with b bits over ±full scale.

Mismatch, quantization and switching keep the chip a flow (its exact log-density stays
available, with the same closed-form divergence); noise and the converters do not.

A chip is described by a :class:`ChipPlan`: the slices the solver integrates, each with
its layer spec, raw parameters, per-device current scale and per-node inverse
capacitances, optionally for a stack of instances at once (leading dimension K), so a
Monte Carlo over chips is one batched solve.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .circuit import DENSE_MAX_NODES, LayerOperator, layer_operator
from .config import ChipConfig, CircuitSpec, LayerSpec, SolverConfig
from .errors import UserInputError
from .flow import FlowResult, KirchhoffNet, standard_normal_log_prob
from .hardware import model_time_s
from .solvers import Budget, BudgetExceeded, SolveStats, Status, fixed_step

K_BOLTZMANN_J_PER_K = 1.380649e-23
GAIN_PARAMS = ("a", "b", "g")  # raw parameters that mismatch multiplies; "c" is shifted instead
CROSSFADE_SLICES = 8  # piecewise-constant slices per cross-fade ramp (midpoint weights)
ENSEMBLE_DENSE_MAX_NODES = 64  # batched dense matmuls beat gather–scatter up to here
CHUNK_ELEMENTS = 1 << 20  # (instances × rows × edges) per solve: ~4 MB float32 intermediates
MIN_NOISE_STEPS = 16  # per model layer: keeps the Euler–Maruyama variance bias small


class UnsupportedChip(UserInputError):
    """The requested chip cannot be emulated for this model (the message says why);
    ``field`` names the :class:`ChipConfig` field at fault, when one is."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def quantize(w: Tensor, bits: int, full_scale: float | Tensor | None = None,
             straight_through: bool = False) -> Tensor:
    """Symmetric mid-tread quantizer: 2^bits − 1 levels over ±full_scale, clipping outside.

    ``full_scale`` defaults to max|w| (weight programming). With ``straight_through`` the
    forward value is quantized and the gradient passes through unchanged (training).
    """
    fs = w.detach().abs().max() if full_scale is None else torch.as_tensor(full_scale, dtype=w.dtype)
    if not bool(fs > 0):
        return w
    levels = 2 ** (bits - 1) - 1
    if levels < 1:
        raise ValueError(f"{bits} bits give no level besides 0")
    step = fs / levels
    q = torch.clamp(torch.round(w / step), -levels, levels) * step
    return w + (q - w).detach() if straight_through else q


def noise_scale(spec: CircuitSpec, capacitance_f: float | None = None) -> float:
    """ε = √(kT/C)/V0: the rms thermal voltage of a node capacitor, in model volts.

    In model units a device of small-signal conductance g (model units, g = s·act'(z)·
    (|a| + |b|)/2: its conductance ∂i/∂(v_s − v_d) for diff and conductance devices, the
    mean of its two terminal gains for affine ones) adds ε·√(2g)·dW to its terminals'
    voltages (divided by their dimensionless capacitances); a lone RC node then settles at
    variance ε², i.e. kT/C. Thermal (4kTg) rather than shot (2qI) noise: the devices are
    modelled as conductances, and 4kTg is their noise at equilibrium.
    """
    hw = spec.hardware
    c = hw.capacitance_f if capacitance_f is None else capacitance_f
    return math.sqrt(K_BOLTZMANN_J_PER_K * hw.temperature_k / c) / hw.voltage_scale_v


@dataclass(frozen=True)
class MismatchDraw:
    """Standard-normal draws of one or more chip instances, independent of σ.

    Per layer: ``gains[l][name]`` (gain parameters only), ``current[l]``, ``offset[l]`` each
    ``(*K, edges)``;
    ``capacitor`` ``(*K, nodes)`` for the physical nodes 1..max nodes.
    """

    gains: list[dict[str, Tensor]]
    current: list[Tensor]
    offset: list[Tensor]
    capacitor: Tensor


def draw_mismatch(spec: CircuitSpec, param_names: Sequence[str], instance: int) -> MismatchDraw:
    """The draws of chip ``instance`` (float64, CPU) for the gain parameters ``param_names``;
    the order is fixed (per layer: each gain, I0, the offset; then the capacitors), so same
    seed, same chip."""
    gen = torch.Generator().manual_seed(int(instance))
    gains, current, offset = [], [], []
    for layer in spec.layers:
        e = len(layer.edges)
        gains.append({name: torch.randn(e, generator=gen, dtype=torch.float64) for name in param_names})
        current.append(torch.randn(e, generator=gen, dtype=torch.float64))
        offset.append(torch.randn(e, generator=gen, dtype=torch.float64))
    nodes = max(layer.nodes for layer in spec.layers)
    return MismatchDraw(gains, current, offset, torch.randn(nodes, generator=gen, dtype=torch.float64))


def _stack_draws(draws: list[MismatchDraw]) -> MismatchDraw:
    return MismatchDraw(
        [{k: torch.stack([d.gains[l][k] for d in draws]) for k in draws[0].gains[l]}
         for l in range(len(draws[0].gains))],
        [torch.stack([d.current[l] for d in draws]) for l in range(len(draws[0].current))],
        [torch.stack([d.offset[l] for d in draws]) for l in range(len(draws[0].offset))],
        torch.stack([d.capacitor for d in draws]))


@dataclass(frozen=True)
class ChipPlan:
    """The slices a chip's solve integrates, in time order.

    ``layers[j]``: nodes, edges and duration (model time) of slice j; ``params[j]``: raw
    device parameters, each ``(*K, edges)`` (differentiable in the model's parameters);
    ``current_scale[j]``: per-device I0 factor ``(*K, edges)`` or None (all 1);
    ``inv_cap[j]``: ``(*K, nodes + 1)`` inverse capacitances, 0 at index 0 (ground);
    ``steps[j]``: fixed solver steps; ``instances``: K, or None for one unbatched chip.
    """

    layers: tuple[LayerSpec, ...]
    params: tuple[dict[str, Tensor], ...]
    current_scale: tuple[Tensor | None, ...]
    inv_cap: tuple[Tensor, ...]
    steps: tuple[int, ...]
    instances: int | None

    def operators(self, model: KirchhoffNet) -> list[LayerOperator]:
        """Frozen operators of every slice (differentiable); dense while nodes are few."""
        limit = ENSEMBLE_DENSE_MAX_NODES if self.instances else DENSE_MAX_NODES
        out = []
        for spec, params, scale, inv in zip(self.layers, self.params, self.current_scale, self.inv_cap):
            edges = torch.tensor(spec.edges, dtype=torch.long, device=inv.device).reshape(-1, 2)
            form = "dense" if spec.nodes <= limit else "gather"
            out.append(layer_operator(model.layers[0].family, params, edges[:, 0].contiguous(),
                                      edges[:, 1].contiguous(), spec.nodes, inv, form, model.spec.leaky_slope,
                                      scale))
        return out


def chip_plan(model: KirchhoffNet, chip: ChipConfig, instances: Sequence[int] | None = None,
              solver: SolverConfig | None = None, straight_through: bool = False) -> ChipPlan:
    """The circuit of ``chip`` built from ``model``'s parameters (mismatch, quantization,
    switching; noise and converters act at solve time).

    Args:
        instances: chip seeds to stack along a leading dimension K; None → one unbatched
            chip, ``chip.instance``.
        solver: fixed-step settings whose step counts the slices inherit (default: the
            model's serving solver).
        straight_through: quantize with straight-through gradients (training).

    Raises:
        UnsupportedChip: a switching time longer than a layer, or a cross-fade between
            layers of different node counts.
    """
    spec, cfg = model.spec, solver or model.spec.solver
    n_layers = len(spec.layers)
    ref = model.layers[0].params[model.layers[0].family.param_names[0]]
    dtype, device = ref.dtype, ref.device
    params = [dict(layer.params.items()) for layer in model.layers]
    if chip.quant_bits is not None:
        params = [{k: quantize(w, chip.quant_bits, straight_through=straight_through) for k, w in p.items()}
                  for p in params]
    seeds = [chip.instance] if instances is None else list(instances)
    k_shape = () if instances is None else (len(seeds),)
    scales: list[Tensor | None] = [None] * n_layers
    inv_caps = []
    for layer in model.layers:
        inv = layer.inv_cap_padded.to(dtype)
        inv_caps.append(inv.expand(*k_shape, inv.shape[0]))
    if chip.has_mismatch:
        names = [k for k in model.layers[0].family.param_names if k in GAIN_PARAMS]
        draw = _stack_draws([draw_mismatch(spec, names, s) for s in seeds])
        if instances is None:
            draw = MismatchDraw([{k: v[0] for k, v in g.items()} for g in draw.gains], [c[0] for c in draw.current],
                                [o[0] for o in draw.offset], draw.capacitor[0])
        cast = dict(dtype=dtype, device=device)
        sigma, sigma_off, sigma_cap = chip.mismatch, chip.sigma_offset, chip.sigma_capacitor
        new_params = []
        for l, p in enumerate(params):
            q = {}
            for k, w in p.items():
                if k in draw.gains[l]:  # a gain: relative mismatch
                    q[k] = w * (1 + sigma * draw.gains[l][k].to(**cast))
                else:  # the offset c: an absolute, input-referred shift
                    q[k] = w + sigma_off * draw.offset[l].to(**cast)
            new_params.append(q)
            if sigma > 0:
                scales[l] = 1 + sigma * draw.current[l].to(**cast)
        params = new_params
        if sigma_cap > 0:
            cap_factor = 1 + sigma_cap * draw.capacitor.to(**cast)  # (*K, nodes)
            if bool((cap_factor <= 0).any()):
                raise UnsupportedChip(f"capacitor mismatch σ={sigma_cap:g} drew a non-positive capacitor",
                                      "capacitor_sigma" if chip.capacitor_sigma is not None else "mismatch")
            for l, layer in enumerate(spec.layers):
                inv = inv_caps[l].clone()
                inv[..., 1:] = inv[..., 1:] / cap_factor[..., :layer.nodes]
                inv_caps[l] = inv
    steps = [cfg.steps_for(l, n_layers) if not cfg.adaptive else 1 for l in range(n_layers)]
    plan = ChipPlan(tuple(spec.layers), tuple(params), tuple(scales), tuple(inv_caps), tuple(steps),
                    None if instances is None else len(seeds))
    if chip.switching_s > 0:
        plan = _with_switching(plan, chip, spec)
    return plan


def _with_switching(plan: ChipPlan, chip: ChipConfig, spec: CircuitSpec) -> ChipPlan:
    """Replace hard layer switches by transitions of ``chip.switching_s`` seconds."""
    width = chip.switching_s / spec.hardware.tau_s  # model time
    durations = [layer.duration for layer in plan.layers]
    n = len(durations)
    for l, d in enumerate(durations):
        cut = width * ((l > 0) + (l < n - 1)) / 2
        if cut > d:
            raise UnsupportedChip(
                f"switching time {chip.switching_s:g} s is longer than layer {l} "
                f"({model_time_s(d, spec.hardware):g} s at τ = {spec.hardware.tau_s:g} s)", "switching_s")
    out: dict[str, list] = {"layers": [], "params": [], "scale": [], "inv": [], "steps": []}

    def add(layer: LayerSpec, params, scale, inv, steps: int) -> None:
        out["layers"].append(layer)
        out["params"].append(params)
        out["scale"].append(scale)
        out["inv"].append(inv)
        out["steps"].append(max(1, steps))

    for l in range(n):
        layer, d = plan.layers[l], durations[l]
        main = d - width * ((l > 0) + (l < n - 1)) / 2
        if main > 1e-12 * d:
            add(layer.model_copy(update={"duration": main}), plan.params[l], plan.current_scale[l],
                plan.inv_cap[l], math.ceil(plan.steps[l] * main / d - 1e-9))
        if l == n - 1 or chip.switching_mode == "break":
            continue
        nxt = plan.layers[l + 1]
        if nxt.nodes != layer.nodes:
            raise UnsupportedChip(f"a cross-fade between layer {l} ({layer.nodes} nodes) and layer {l + 1} "
                                  f"({nxt.nodes} nodes) is not defined; use switching_mode 'break'", "switching_mode")
        density = max(plan.steps[l] / d, plan.steps[l + 1] / durations[l + 1])
        s_here, s_next = _ones_if_none(plan, l), _ones_if_none(plan, l + 1)
        union = LayerSpec(duration=width / CROSSFADE_SLICES, nodes=layer.nodes, edges=layer.edges + nxt.edges,
                          capacitance=layer.capacitance)
        names = plan.params[l].keys()
        both = {k: torch.cat([plan.params[l][k], plan.params[l + 1][k]], dim=-1) for k in names}
        for j in range(CROSSFADE_SLICES):
            alpha = 1.0 - (j + 0.5) / CROSSFADE_SLICES
            scale = torch.cat([alpha * s_here, (1 - alpha) * s_next], dim=-1)
            add(union, both, scale, plan.inv_cap[l], math.ceil(density * union.duration - 1e-9))
    return ChipPlan(tuple(out["layers"]), tuple(out["params"]), tuple(out["scale"]), tuple(out["inv"]),
                    tuple(out["steps"]), plan.instances)


def _ones_if_none(plan: ChipPlan, l: int) -> Tensor:
    if plan.current_scale[l] is not None:
        return plan.current_scale[l]
    ref = next(iter(plan.params[l].values()))
    return torch.ones_like(ref)


class Chip:
    """An emulated chip (or a stack of K instances) of ``model``: sample and log-density.

    Shapes: unbatched (``instances=None``), inputs and outputs are ``(batch, d)`` as for
    :class:`KirchhoffNet`; with K instances, ``(K, batch, d)`` and log-densities ``(K, batch)``.
    Everything runs without gradients; every solve is bounded by the solver's budget.
    """

    def __init__(self, model: KirchhoffNet, chip: ChipConfig, instances: Sequence[int] | None = None,
                 solver: SolverConfig | None = None):
        self.model, self.config = model, chip
        self.solver = solver or model.spec.solver
        with torch.no_grad():
            self.plan = chip_plan(model, chip, instances, self.solver)
            self.ops = self.plan.operators(model)

    @property
    def is_flow(self) -> bool:
        return self.config.is_flow and self.model.spec.bijective

    def _chunk_rows(self) -> int:
        """Rows per solve: a stack of K chips multiplies every intermediate by K, so rows are
        cut until one (K, rows, edges) intermediate fits in cache (measured 2.5× faster than
        2048-row solves at K = 32 on twomoon)."""
        edges = max(len(layer.edges) for layer in self.plan.layers)
        return max(16, CHUNK_ELEMENTS // (edges * (self.plan.instances or 1)))

    def _solve_rows(self, solve, v: Tensor) -> tuple[Tensor, Tensor | None, SolveStats]:
        """``solve(chunk) -> (out, ell, stats)`` over row chunks of ``v (*K, rows, d)``; the
        stats add up (NFE, steps, wall time) and keep the first failure."""
        outs, ells, total = [], [], SolveStats()
        for chunk in v.split(self._chunk_rows(), dim=-2):
            out, ell, stats = solve(chunk)
            outs.append(out)
            ells.append(ell)
            total.nfe, total.steps, total.wall_s = total.nfe + stats.nfe, total.steps + stats.steps, \
                total.wall_s + stats.wall_s
            if not stats.ok:
                total.status, total.message = stats.status, stats.message
                break
        ell = None if ells[0] is None else torch.cat(ells, dim=-1)
        return torch.cat(outs, dim=-2), ell, total

    def sample(self, n: int, generator: torch.Generator | None = None, z: Tensor | None = None,
               with_logprob: bool = True, noise_generator: torch.Generator | None = None) -> FlowResult:
        """``n`` samples of each instance from latents z ~ N(0, I) drawn on the CPU (the same z
        for every instance, so instances differ only by their devices). ``logp`` is None
        where the chip has no tractable density (noise, DAC, ADC) or when not requested."""
        model, hw = self.model, self.model.spec.hardware
        if z is None:
            z = torch.randn(n, model.data_dim, generator=generator, dtype=torch.float64)
        z = z.to(device=model.device, dtype=model.dtype)
        if self.plan.instances is not None and z.ndim == 2:
            z = z.expand(self.plan.instances, *z.shape)
        if self.config.dac_bits is not None:
            z = quantize(z, self.config.dac_bits, hw.converter_full_scale)
        want_logp = with_logprob and self.is_flow
        with torch.no_grad():
            if self.config.noise:
                gen = noise_generator or generator
                x, ell, stats = self._solve_rows(lambda c: self._noisy_chunk(c, gen), z)
            else:
                x, ell, stats = self._solve_rows(
                    lambda c: model.integrate(c, self.solver, with_divergence=want_logp, operators=self.ops,
                                              layers=self.plan.layers, steps=self.plan.steps), z)
        if self.config.adc_bits is not None:
            x = quantize(x, self.config.adc_bits, hw.converter_full_scale)
        logq = standard_normal_log_prob(z) - ell if want_logp else None
        return FlowResult(x, logq, stats)

    def log_prob(self, x: Tensor) -> FlowResult:
        """Exact log-density of points ``x (batch, d)`` under every instance: ``(*K, batch)``.

        Raises:
            UnsupportedChip: the chip has noise or converters (no tractable density).
        """
        if not self.is_flow:
            stochastic = [e for e in self.config.effects() if e in ("noise", "dac", "adc")]
            raise UnsupportedChip(f"a chip with {', '.join(stochastic)} has no tractable log-density")
        model = self.model
        x = x.to(device=model.device, dtype=model.dtype)
        if self.plan.instances is not None and x.ndim == 2:
            x = x.expand(self.plan.instances, *x.shape)
        with torch.no_grad():
            z, ell, stats = self._solve_rows(
                lambda c: model.integrate(c, self.solver, reverse=True, operators=self.ops, layers=self.plan.layers,
                                          steps=self.plan.steps), x)
        return FlowResult(z, standard_normal_log_prob(z) - ell, stats)

    def _noisy_chunk(self, z: Tensor, generator: torch.Generator | None) -> tuple[Tensor, None, SolveStats]:
        x, stats = self._noisy(z, generator)
        return x, None, stats

    def _noisy(self, z: Tensor, generator: torch.Generator | None) -> tuple[Tensor, SolveStats]:
        eps = noise_scale(self.model.spec)
        # at least MIN_NOISE_STEPS per model layer, spread over its slices by duration
        density = MIN_NOISE_STEPS / min(layer.duration for layer in self.model.spec.layers)
        steps = [max(s, math.ceil(density * layer.duration - 1e-9))
                 for s, layer in zip(self.plan.steps, self.plan.layers)]
        return integrate_noisy(self.ops, self.plan.layers, steps, z, eps, self.solver, generator)


def integrate_noisy(ops: Sequence[LayerOperator], layers: Sequence[LayerSpec], steps: Sequence[int], v: Tensor,
                    eps: float, solver: SolverConfig, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, SolveStats]:
    """Itô SDE dv = f(v) dt + ε·K(√(2·g(v))·dW): RK4 for the drift, Euler–Maruyama for the
    device noise currents (one independent Wiener process per device), ``g`` each device's
    small-signal conductance at the step's start and K Kirchhoff's scatter with 1/C.

    Args:
        v: ``(…, batch, nodes)`` initial voltages, model volts (every slice has this width).
        eps: :func:`noise_scale`, model volts.
        solver: only its budget (``max_steps``, ``max_wall_s``) is used.

    Returns:
        ``(v_end, stats)``; on failure the state reached so far with a non-success status.
    """
    budget, stats = Budget(solver.max_steps, solver.max_wall_s), SolveStats()
    try:
        for op, layer, n in zip(ops, layers, steps):
            if layer.nodes != v.shape[-1]:
                raise UnsupportedChip("noise emulation needs every layer to have the same node count", "noise")
            dt = layer.duration / n
            drift = _drift(op)
            for _ in range(n):
                _, slope = op.currents_and_slopes(v)
                g = (slope * op.noise_gain).clamp_min(0)
                xi = torch.randn(g.shape, generator=generator, dtype=torch.float64).to(g)
                v_next, _ = fixed_step(drift, v, None, dt, 1, "rk4", budget)
                v = v_next + op.kcl(eps * torch.sqrt(2 * g * dt) * xi)
            if not bool(torch.isfinite(v).all()):
                raise BudgetExceeded(Status.NONFINITE, "non-finite voltages in the noisy solve")
    except BudgetExceeded as exc:
        stats.status, stats.message = exc.status, str(exc)
    stats.nfe, stats.steps = budget.nfe, budget.steps
    stats.wall_s = time.perf_counter() - budget.started
    return v, stats


def _drift(op: LayerOperator):
    def fn(v: Tensor):
        return op.rhs(v), None
    return fn


def chip_model(model: KirchhoffNet, chip: ChipConfig) -> KirchhoffNet:
    """One chip instance as a plain :class:`KirchhoffNet` (per-device I0 factors, per-node
    capacitors, switching slices as layers) for export and circuit simulation.

    Raises:
        UnsupportedChip: noise or converters (not a deterministic circuit).
    """
    if not chip.is_flow:
        raise UnsupportedChip("only mismatch, quantization and switching define a fixed circuit; "
                              "noise and converters are emulated at solve time")
    with torch.no_grad():
        plan = chip_plan(model, chip)
        layers = []
        for spec, inv in zip(plan.layers, plan.inv_cap):
            caps = tuple(float(1.0 / c) for c in inv[1:spec.nodes + 1].double())
            layers.append(spec.model_copy(update={"capacitance": caps if len(set(caps)) > 1 else caps[0]}))
        solver = model.spec.solver
        if not solver.adaptive:
            solver = solver.model_copy(update={"steps_per_layer": tuple(plan.steps)})
        new_spec = model.spec.model_copy(update={"layers": tuple(layers), "solver": solver, "calibration": None})
        params = [{k: v.detach().clone() for k, v in p.items()} for p in plan.params]
        out = KirchhoffNet(new_spec, params, current_scales=[None if s is None else s.detach().clone()
                                                             for s in plan.current_scale])
    out.requires_grad_(False)
    return out.to(dtype=model.dtype, device=model.device)
