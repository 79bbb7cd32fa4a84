"""Typed, validated configuration for circuits, solvers, hardware constants and training.

Every knob of the project lives here with its documented default; nothing else in
``models/`` reads the environment or a file to decide a setting.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .cell_law import CellLaw

ACTIVATIONS = ("tanh", "relu", "leaky_relu", "identity")
DEVICE_FAMILIES = tuple(f"affine-{a}" for a in ACTIVATIONS) + tuple(
    f"diff-{a}" for a in ACTIVATIONS
) + ("conductance",)
ADAPTIVE_METHODS = ("dopri5", "bosh3", "adaptive_heun", "dopri8", "fehlberg2")
FIXED_METHODS = ("rk4", "euler", "midpoint")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HardwareConstants(_Frozen):
    """Physical constants that map the dimensionless ODE onto a chip (docs/design.md §3).

    One unit of model time lasts ``tau_s = capacitance_f * voltage_scale_v / current_scale_a``.
    The DAC/ADC figures are placeholders for a fast converter pair; override them per chip.
    """

    capacitance_f: float = Field(1e-12, gt=0, description="node capacitance C, farads")
    voltage_scale_v: float = Field(1.0, gt=0, description="V0: one model volt, in volts")
    current_scale_a: float = Field(1e-3, gt=0, description="I0: one model ampere, in amperes")
    dac_setup_s: float = Field(5e-9, ge=0, description="input DAC set-up time, seconds")
    adc_readout_s: float = Field(5e-9, ge=0, description="output sample/hold + ADC time, seconds")
    temperature_k: float = Field(300.0, gt=0, le=1000, description="die temperature for thermal noise, kelvin")
    converter_full_scale: float = Field(
        4.0, gt=0, description="DAC/ADC full scale: codes span ±this many model volts (±V0·full_scale)")

    @property
    def tau_s(self) -> float:
        """Seconds per unit of model time: C·V0/I0."""
        return self.capacitance_f * self.voltage_scale_v / self.current_scale_a


class ChipConfig(_Frozen):
    """Non-idealities of one emulated chip (``models.chip``); the default is the ideal chip.

    Mismatch figures are relative standard deviations (0.01 = 1 %) except ``offset_sigma``,
    an input-referred offset in model volts (units of V0). ``None`` for ``offset_sigma`` or
    ``capacitor_sigma`` means "the same as ``mismatch``". Bits ``None`` mean ideal (∞).
    ``switching_s`` is the layer-switch transition time in seconds, modelled as a linear
    cross-fade centred on each boundary or as break-before-make (a gap with no layer
    connected). One ``instance`` seed is one manufactured chip: same seed, same chip.
    """

    mismatch: float = Field(0.0, ge=0, le=0.5, description="σ of device gains a, b (or g) and of I0, relative")
    offset_sigma: float | None = Field(None, ge=0, le=1, description="σ of device offsets c, model volts")
    capacitor_sigma: float | None = Field(None, ge=0, le=0.5, description="σ of node capacitors, relative")
    quant_bits: int | None = Field(None, ge=2, le=24, description="weight bits (symmetric, 2^k − 1 levels)")
    noise: bool = Field(False, description="thermal noise 4kT|g| of every device (an SDE)")
    dac_bits: int | None = Field(None, ge=2, le=24, description="input DAC bits over ±full scale")
    adc_bits: int | None = Field(None, ge=2, le=24, description="output ADC bits over ±full scale")
    switching_s: float = Field(0.0, ge=0, le=1e-6, description="layer-switch transition time, seconds")
    switching_mode: Literal["crossfade", "break"] = "crossfade"
    instance: int = Field(0, ge=0, le=2**31 - 1, description="chip instance seed")

    @property
    def sigma_offset(self) -> float:
        return self.mismatch if self.offset_sigma is None else self.offset_sigma

    @property
    def sigma_capacitor(self) -> float:
        return self.mismatch if self.capacitor_sigma is None else self.capacitor_sigma

    @property
    def has_mismatch(self) -> bool:
        return self.mismatch > 0 or self.sigma_offset > 0 or self.sigma_capacitor > 0

    @property
    def is_flow(self) -> bool:
        """True while the chip is still a deterministic flow (exact log-density available)."""
        return not self.noise and self.dac_bits is None and self.adc_bits is None

    @property
    def is_ideal(self) -> bool:
        return self.is_flow and not self.has_mismatch and self.quant_bits is None and self.switching_s == 0

    def effects(self) -> list[str]:
        """Names of the effects this chip applies, in a fixed order."""
        out = []
        if self.has_mismatch:
            out.append("mismatch")
        if self.quant_bits is not None:
            out.append("quantization")
        if self.switching_s > 0:
            out.append("switching")
        if self.noise:
            out.append("noise")
        if self.dac_bits is not None:
            out.append("dac")
        if self.adc_bits is not None:
            out.append("adc")
        return out


class HardwareAwareConfig(_Frozen):
    """Hardware-aware training: every iteration draws fresh chip instances and the loss is
    the mean exact objective of those perturbed chips (rounding passes gradients through)."""

    mismatch: float = Field(0.0, ge=0, le=0.5)
    quant_bits: int | None = Field(None, ge=2, le=24)
    switching_s: float = Field(0.0, ge=0, le=1e-6)
    switching_mode: Literal["crossfade", "break"] = "crossfade"
    instances: int = Field(4, ge=1, le=64, description="chip instances per iteration (batch split among them)")

    def chip(self, instance: int) -> ChipConfig:
        return ChipConfig(mismatch=self.mismatch, quant_bits=self.quant_bits, switching_s=self.switching_s,
                          switching_mode=self.switching_mode, instance=instance)


class SolverConfig(_Frozen):
    """How to integrate the circuit ODE.

    ``rk4``/``euler``/``midpoint`` take ``steps_per_layer`` fixed steps in each layer
    (one int for all layers or one per layer); adaptive methods use torchdiffeq with
    ``rtol``/``atol``. Every solve is bounded by ``max_steps`` (accepted + rejected
    steps over the whole solve) and ``max_wall_s`` seconds, and reports a status.
    """

    method: Literal["rk4", "euler", "midpoint", "dopri5", "bosh3", "adaptive_heun", "dopri8", "fehlberg2"] = "rk4"
    steps_per_layer: int | tuple[int, ...] = 16
    rtol: float = Field(1e-4, gt=0, lt=1)
    atol: float = Field(1e-4, gt=0, lt=1)
    max_steps: int = Field(100_000, ge=1)
    max_wall_s: float = Field(60.0, gt=0)

    @field_validator("steps_per_layer")
    @classmethod
    def _positive_steps(cls, v: int | tuple[int, ...]) -> int | tuple[int, ...]:
        values = (v,) if isinstance(v, int) else v
        if not values or any(s < 1 for s in values):
            raise ValueError("steps_per_layer must be >= 1")
        return v

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS

    def steps_for(self, layer: int, n_layers: int) -> int:
        """Fixed steps for ``layer`` (0-based) of an ``n_layers`` circuit."""
        if isinstance(self.steps_per_layer, int):
            return self.steps_per_layer
        if len(self.steps_per_layer) != n_layers:
            raise ValueError(
                f"steps_per_layer has {len(self.steps_per_layer)} entries for {n_layers} layers"
            )
        return self.steps_per_layer[layer]


class LayerSpec(_Frozen):
    """One time slice: its duration (model time), node count and edge list.

    ``edges`` are ``[source, destination]`` pairs, 0 = ground, 1..nodes = non-ground nodes.
    ``capacitance`` is dimensionless (1 = the hardware C); a list gives one per node.
    """

    duration: float = Field(gt=0)
    nodes: int = Field(ge=1)
    edges: tuple[tuple[int, int], ...]
    capacitance: float | tuple[float, ...] = 1.0

    @model_validator(mode="after")
    def _check(self) -> LayerSpec:
        if not math.isfinite(self.duration):
            raise ValueError("duration must be finite")
        caps = (self.capacitance,) if isinstance(self.capacitance, float | int) else self.capacitance
        if isinstance(self.capacitance, tuple) and len(self.capacitance) != self.nodes:
            raise ValueError(f"capacitance has {len(self.capacitance)} entries for {self.nodes} nodes")
        if any(not (c > 0 and math.isfinite(c)) for c in caps):
            raise ValueError("capacitance must be positive and finite")
        for k, (s, d) in enumerate(self.edges):
            for which, node in (("source", s), ("destination", d)):
                if not 0 <= node <= self.nodes:
                    raise ValueError(f"edge {k}: {which} node {node} outside 0..{self.nodes}")
            if s == d:
                raise ValueError(f"edge {k}: self-loop on node {s}")
        if not self.edges:
            raise ValueError("a layer needs at least one edge")
        return self


class CalibrationRecord(_Frozen):
    """How the serving step counts were chosen (``knet calibrate``); stored in circuit.json.

    Errors are max absolute errors over the calibration points, of x (model volts) and of
    log p (nats), against ``reference`` (float64, tight tolerance); the engine runs RK4 in
    ``dtype`` with ``steps_per_layer``. ``baseline_error_*`` is the error of the published
    method (dopri5, rtol = atol = 1e-4, float32) on the same points solved as one batch,
    ``baseline_single_error_*`` on the first ``single_requests`` points solved one by one;
    each ``*target*`` = ``safety`` × its baseline figure, capped by ``tolerance_cap`` if
    given; ``error_*`` (all points) and ``single_error_*`` (first rows) are ours
    (see ``models.calibration``).
    """

    steps_per_layer: tuple[int, ...]
    target_x: float = Field(gt=0)
    target_logp: float = Field(gt=0)
    tolerance_cap: float | None = None
    safety: float = Field(0.5, gt=0, le=1)
    reference: str = "dopri5 float64 rtol=atol=1e-9"
    dtype: str = "float32"
    points: int = Field(ge=1)
    seed: int = 0
    error_x: float = Field(ge=0)
    error_logp: float = Field(ge=0)
    baseline_error_x: float = Field(ge=0)
    baseline_error_logp: float = Field(ge=0)
    single_requests: int = 0  # first rows also checked as one-row requests
    single_target_x: float | None = None
    single_target_logp: float | None = None
    single_error_x: float | None = None
    single_error_logp: float | None = None
    baseline_single_error_x: float | None = None
    baseline_single_error_logp: float | None = None
    # layers whose count was set by their rounding floor (the local error stopped falling with
    # more steps before reaching the per-layer budget), not by the budget (models.calibration)
    floor_layers: tuple[int, ...] = ()


class AccuracyTier(_Frozen):
    """One verified accuracy tier of a model (``knet calibrate --tiers``; models/accuracy.py).

    ``steps_per_layer`` RK4 steps (in ``dtype``) were searched so that the error of log p (nats)
    and of x (model volts) stays within ``tolerance_nats`` on the calibration inputs, then
    measured on held-out inputs the search never saw: ``max_error_*`` and ``p999_error_*`` (the
    99.9th percentile) over ``verified_points`` rows, against a float64 dopri5 1e-9 solution.
    The bound is empirical. ``region_low``/``region_high`` (data space, per coordinate) and
    ``latent_radius`` (max |z_i|) describe the inputs it was verified on: answers for inputs
    outside them are flagged.
    """

    tolerance_nats: float = Field(gt=0)
    steps_per_layer: tuple[int, ...]
    max_error_logp: float = Field(ge=0)
    p999_error_logp: float = Field(ge=0)
    max_error_x: float = Field(ge=0)
    p999_error_x: float = Field(ge=0)
    verified_points: int = Field(ge=1)
    region_low: tuple[float, ...]
    region_high: tuple[float, ...]
    latent_radius: float = Field(gt=0)
    dtype: str = "float32"


class ImportRecord(_Frozen):
    """Where an imported circuit came from (``knet import-reference``); stored in circuit.json.

    ``format`` names the source format, ``source`` the folder as given; the SHA-256 digests
    identify the exact files read. ``device_class`` and ``test_bench`` are the source's own
    names; ``trained_solver`` is the solver the source was trained with; ``ignored_keys`` lists
    settings present in the source that its own training script does not use.
    """

    format: str
    source: str
    config_sha256: str
    weights_sha256: str
    device_class: str
    test_bench: str | None = None
    trained_solver: str = ""
    ignored_keys: tuple[str, ...] = ()


class CircuitSpec(_Frozen):
    """The architecture of a KirchhoffNet: everything but the learned parameters."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    device: str
    data_dim: int = Field(ge=1)
    layers: tuple[LayerSpec, ...] = Field(min_length=1)
    pad_mode: Literal["zeros", "repeat"] = "zeros"
    leaky_slope: float = Field(0.2, gt=0, lt=1, description="negative slope of leaky_relu devices")
    hardware: HardwareConstants = HardwareConstants()
    solver: SolverConfig = SolverConfig()
    version: str = "1"
    calibration: CalibrationRecord | None = None  # set by `knet calibrate MODEL --write`
    accuracy_tiers: tuple[AccuracyTier, ...] = ()  # set by `knet calibrate MODEL --tiers --write`
    imported_from: ImportRecord | None = None  # set by `knet import-reference`
    # the device as a characterized transistor cell realises it (models.cell_law, docs/silicon.md)
    cell: CellLaw | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v not in DEVICE_FAMILIES:
            raise ValueError(f"unknown device {v!r}; expected one of {', '.join(DEVICE_FAMILIES)}")
        return v

    @model_validator(mode="after")
    def _dims(self) -> CircuitSpec:
        if self.layers[-1].nodes < self.data_dim:
            raise ValueError(
                f"last layer has {self.layers[-1].nodes} nodes, fewer than data_dim={self.data_dim}"
            )
        if self.cell is not None:
            # one physical capacitor per node and devices whose law the cell realises
            if not self.bijective or len({layer.capacitance for layer in self.layers}) != 1:
                raise ValueError("a cell-realised circuit needs every layer to have data_dim nodes and the same "
                                 "node capacitances")
            if not self.device.startswith(("affine-tanh", "diff-tanh")):
                raise ValueError(f"the characterized cell realises tanh devices, not {self.device!r}")
        return self

    @property
    def end_time(self) -> float:
        """T, the total model time (sum of layer durations)."""
        return float(sum(layer.duration for layer in self.layers))

    @property
    def layer_bounds(self) -> list[tuple[float, float]]:
        """[(t_{l-1}, t_l)] for every layer, model time."""
        out, t = [], 0.0
        for layer in self.layers:
            out.append((t, t + layer.duration))
            t += layer.duration
        return out

    @property
    def bijective(self) -> bool:
        """True when every layer has exactly ``data_dim`` nodes, so log-density is exact."""
        return all(layer.nodes == self.data_dim for layer in self.layers)

    @property
    def num_edges(self) -> int:
        return sum(len(layer.edges) for layer in self.layers)


class TopologySpec(_Frozen):
    """Recipe for a layer's edge list (see ``models.topology``)."""

    kind: Literal["full", "neighbourhood", "mixed"] = "full"
    repeat: int = Field(1, ge=1)
    include_ground: bool = True
    grid: tuple[int, int, int] | None = None  # (channels, height, width) for neighbourhood/mixed
    kernel: int = Field(3, ge=1)
    hubs: int = Field(0, ge=0)


class ArchitectureConfig(_Frozen):
    """Generator-level description used in training configs."""

    device: str = "affine-tanh"
    layers: int = Field(2, ge=1, le=64)
    end_time: float = Field(1.0, gt=0)
    nodes: int | None = None  # default: data_dim
    topology: TopologySpec = TopologySpec()
    init_scale: float = Field(0.5, gt=0)


class TrainConfig(_Frozen):
    """A training run: ``knet train CONFIG.yaml`` reads exactly this."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    task: str
    objective: Literal["likelihood", "density_matching"] = "likelihood"
    architecture: ArchitectureConfig = ArchitectureConfig()
    train_solver: SolverConfig = SolverConfig(method="rk4", steps_per_layer=8)
    serve_solver: SolverConfig = SolverConfig(method="rk4", steps_per_layer=16)
    hardware: HardwareConstants = HardwareConstants()
    iterations: int = Field(2000, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(5e-3, gt=0)
    lr_final: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(10.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)
    eval_samples: int = Field(8192, ge=1)
    hardware_aware: HardwareAwareConfig | None = None
    init_from: str | None = Field(None, description="zoo name or checkpoint directory to fine-tune from")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="keep an exponential moving average of the "
                                    "weights with this decay per iteration; the average is what is saved")
    # train the device as a characterized cell realises it (models.cell_law); in YAML a path to
    # the law's JSON (written by `knet cells characterize`) is read by the command line
    cell: CellLaw | None = None

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        from .data import TASKS  # lazy: the task registry imports torch and numpy
        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; expected one of {', '.join(TASKS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        from .data import TASKS
        task = TASKS[self.task]
        wanted = "likelihood" if task.kind == "data" else "density_matching"
        if self.objective != wanted:
            raise ValueError(f"task {self.task!r} is {'a data set' if task.kind == 'data' else 'an energy'}; "
                             f"its objective must be {wanted!r}, not {self.objective!r}")
        nodes = self.architecture.nodes
        if nodes is not None and nodes != task.dim:
            # log q needs a bijective flow: every layer holds exactly the data dimensions
            raise ValueError(f"architecture.nodes is {nodes}, but task {self.task!r} has {task.dim} "
                             "dimensions; training needs nodes equal to the data dimension")
        grid = self.architecture.topology.grid
        if grid is not None and grid[0] * grid[1] * grid[2] != task.dim:
            raise ValueError(f"architecture.topology.grid {list(grid)} holds {grid[0] * grid[1] * grid[2]} "
                             f"nodes, but task {self.task!r} has {task.dim} dimensions")
        if self.lr_final > self.lr:
            raise ValueError(f"lr_final ({self.lr_final:g}) must not exceed lr ({self.lr:g})")
        return self
