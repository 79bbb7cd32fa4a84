"""Thermal noise in the circuit simulator: a ``sample`` deck with one noise current per device,
simulated many times and compared with the SDE of ``models.chip``.

The noise model (``models.chip``): device e injects a current of one-sided spectral density
S_e = 4kT·g_e between its terminals, g_e = (I0/V0)·G_e·act'(z_e) its small-signal conductance
(siemens) at the operating point, G_e = s_e·(|a_e| + |b_e|)/2 the model-unit gain of
``models.circuit.layer_operator`` (``noise_gain``).

The deck: :func:`export.netlist.build_deck`'s ``sample`` deck plus, per device,

- ``VN_L<l>_E<e> nn_L<l>_E<e> 0``: a unit-rms noise voltage, either ngspice's transient noise
  source ``TRNOISE(1 Δ 0 0)`` or (``source="pwl"``) a ``PWL`` of seeded N(0, 1) samples;
- ``BN_L<l>_E<e> src dst I = A_e·V(g<l>)·sqrt(act'(z_e))·V(nn_L<l>_E<e>)``, gated like the
  device, with ``A_e = sqrt(2·k·T·(I0/V0)·G_e / Δ)``.

Why that amplitude: both sources hold a fresh N(0, 1) value every Δ seconds and interpolate
linearly in between (ngspice's trnoise does; a PWL does by definition). The integral of such a
signal of rms A over a time t ≫ Δ has variance A²·Δ·t (each sample's triangle integrates to
Δ), while white noise of one-sided density S has variance (S/2)·t; so A = sqrt(S/(2Δ)). The
interpolation low-passes the noise near 1/Δ, so Δ must be far below the node time constants
(c_k·C/g): by default Δ is the deck's own maximum time step (1/64 of the shortest layer).

Seeding: ngspice 39 fills the Gaussian pool that trnoise draws from (a Wallace generator,
``initw()``) from its process id at start-up, before the deck's ``.options seed`` or a
``set rndseed`` in ``.spiceinit`` is read; the Tausworthe generator those reseed only shuffles
the pool. So trnoise runs are independent (each ngspice process has its own pid) but cannot be
reproduced. ``source="pwl"`` gives reproducible runs: the same seed, the same noise.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from models.chip import K_BOLTZMANN_J_PER_K, Chip
from models.config import ChipConfig
from models.device_expr import render_text
from models.devices import LEAKY, get_activation
from models.errors import UserInputError
from models.flow import KirchhoffNet
from models.hardware import settle_time_s

from .chip_export import chip_instance
from .erc import check
from .netlist import SPICE, SpiceOptions, build_deck, physical_params
from .spice import run_deck
from .spice_ir import GROUND, Deck, Element, num, signed_sum, tnum

SOURCES = ("trnoise", "pwl")
# Noise decks run at reltol 1e-6, not the exported decks' 1e-9: the noise (~1e-3 V rms at
# 1 fF) dwarfs the integration error (~1e-5 V measured on the test circuit, same PWL noise at
# both settings), and the noise breakpoints every Δ already force short steps; 1e-9 costs ~3x.
NOISE_OPTIONS = SpiceOptions(reltol=1e-6, abstol_rel=1e-10, vntol_rel=1e-7, chgtol_rel=1e-10)


def noise_interval_s(model: KirchhoffNet, options: SpiceOptions = NOISE_OPTIONS) -> float:
    """Δ: seconds between noise samples, the deck's maximum time step by default."""
    shortest = min(layer.duration for layer in model.spec.layers)
    return shortest * model.spec.hardware.tau_s / options.steps_per_layer


def noise_deck(model: KirchhoffNet, z: torch.Tensor, source: str = "trnoise", seed: int = 0,
               options: SpiceOptions = NOISE_OPTIONS, interval_s: float | None = None) -> Deck:
    """The ``sample`` deck of ``model`` (a circuit: ideal or a chip instance) for the latent
    ``z (d,)`` with a thermal-noise current on every device (module docstring).

    Args:
        source: ``trnoise`` (ngspice's generator, unseedable) or ``pwl`` (samples drawn
            from ``torch.Generator().manual_seed(seed)``, reproducible).
        interval_s: Δ, seconds between noise samples (default :func:`noise_interval_s`).

    Raises:
        ValueError: unknown source; ``ERCError`` if the deck breaks an electrical rule.
    """
    if source not in SOURCES:
        raise UserInputError(f"unknown noise source {source!r}; expected one of {', '.join(SOURCES)}")
    spec, hw = model.spec, model.spec.hardware
    delta = noise_interval_s(model, options) if interval_s is None else float(interval_s)
    kt = K_BOLTZMANN_J_PER_K * hw.temperature_k
    note = (f"thermal noise ({source}): device e adds I = A_e*V(g<l>)*sqrt(act'(z_e))*V(nn_L<l>_E<e>), "
            f"V(nn) unit rms, a new sample every {tnum(delta)} s (linear in between),",
            f"  A_e = sqrt(2*k*T*(I0/V0)*G_e/dt), T = {num(hw.temperature_k)} K, "
            "G_e = s*(|a| + |b|)/2: one-sided density 4kT*g (docs/export.md)")
    base = build_deck(model, "sample", z.reshape(1, -1), options=options, measures=False, note=note)
    end = settle_time_s(spec)
    n_samples = math.ceil(end / delta - 1e-9) + 1
    gen = torch.Generator().manual_seed(int(seed))
    params = physical_params(model)
    node = (lambda k: GROUND if k == 0 else f"n{k}")
    elems = []
    for li, layer in enumerate(model.layers):
        gain = layer.operator("gather").noise_gain.detach().to("cpu", torch.float64)
        law = get_activation(layer.family.activation)
        p = params[li]
        for e, (s, d) in enumerate(spec.layers[li].edges):
            if float(gain[e]) == 0:
                continue
            terms = ([(float(p["a"][e]) / hw.voltage_scale_v, f"V({node(s)})")] if s else []) + \
                    ([(float(p["b"][e]) / hw.voltage_scale_v, f"V({node(d)})")] if d else [])
            z_text = signed_sum(terms, float(p["c"][e]))
            amp = math.sqrt(2 * kt * hw.current_scale_a / hw.voltage_scale_v * float(gain[e]) / delta)
            slope = "" if law.constant_slope else \
                f"*sqrt({render_text(law.slope, z_text, {LEAKY: spec.leaky_slope}, SPICE)})"
            tag = f"L{li}_E{e}"
            if source == "trnoise":
                value = f"DC 0 TRNOISE(1 {tnum(delta)} 0 0)"
            else:
                samples = torch.randn(n_samples, generator=gen, dtype=torch.float64).tolist()
                value = "PWL(" + " ".join(f"{tnum(k * delta)} {num(x)}" for k, x in enumerate(samples)) + ")"
            elems.append(Element(f"VN_{tag}", "V", (f"nn_{tag}", GROUND), value, f"layer {li}, edge {e} noise source"))
            elems.append(Element(f"BN_{tag}", "BI", (node(s), node(d)), f"I={num(amp)}*V(g{li}){slope}*V(nn_{tag})",
                                 f"layer {li}, edge {e} ({s}->{d}) thermal noise", (amp,)))
    deck = dataclasses.replace(
        base, title=f"KirchhoffNet {spec.name} (sample netlist with thermal noise, {source})",
        sections=base.sections + ((f"thermal noise: one unit-rms {source} source and one noise current per device",
                                   tuple(elems)),))
    check(deck)
    return deck


@dataclass
class NoiseComparison:
    """Output statistics of ``runs`` noisy circuit simulations beside the SDE's.

    Per output coordinate (model units): ``mean_sim``, ``mean_sde``, ``mean_z`` (the mean
    difference in standard errors), ``var_sim``, ``var_sde``, ``ratio`` = var_sim/var_sde;
    ``interval``: the central 95 % interval of that ratio for ``runs`` Gaussian runs
    (χ²_{runs−1}/(runs−1)); ``noiseless``: the deck's output without noise sources.
    """

    source: str
    runs: int
    sde_samples: int
    mean_sim: list[float]
    mean_sde: list[float]
    mean_z: list[float]
    var_sim: list[float]
    var_sde: list[float]
    ratio: list[float]
    interval: tuple[float, float]
    noiseless: list[float]
    distinct_runs: int
    sim_wall_s: float
    sde_wall_s: float

    def inside(self) -> bool:
        return all(self.interval[0] <= r <= self.interval[1] for r in self.ratio)


def variance_ratio_interval(runs: int, level: float = 0.95) -> tuple[float, float]:
    """Central ``level`` interval of s²/σ² for ``runs`` Gaussian samples: the χ²_{runs−1}/(runs−1)
    quantiles by the Wilson–Hilferty approximation (within ~1e-3 of the tables at 200 runs)."""
    k = runs - 1
    zq = math.sqrt(2) * torch.erfinv(torch.tensor(level, dtype=torch.float64)).item()

    def q(sign: float) -> float:
        return (1 - 2 / (9 * k) + sign * zq * math.sqrt(2 / (9 * k))) ** 3

    return q(-1), q(1)


def simulate_noise(circuit: KirchhoffNet, z: torch.Tensor, runs: int, source: str = "trnoise", seed: int = 0,
                   jobs: int = 1, timeout_s: float = 120.0,
                   progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, float]:
    """Outputs x ``(runs, d)`` (model units) of ``runs`` noisy simulations of ``circuit`` from
    ``z (d,)``, and the summed ngspice wall time. PWL run j uses seed ``seed + j``."""
    v0 = circuit.spec.hardware.voltage_scale_v
    trnoise_deck = noise_deck(circuit, z, "trnoise") if source == "trnoise" else None

    def one(j: int):
        deck = trnoise_deck or noise_deck(circuit, z, source, seed + j)
        run = run_deck(deck, timeout_s=timeout_s)
        return [run.values[r.label] / v0 for r in deck.readouts], run.wall_s

    out, wall = [], 0.0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for values, w in pool.map(one, range(runs)):
            out.append(values)
            wall += w
            if progress is not None:
                progress(1)
    return torch.tensor(out, dtype=torch.float64), wall


def compare_noise(model: KirchhoffNet, chip: ChipConfig, z: torch.Tensor, runs: int = 200, sde_samples: int = 20000,
                  source: str = "trnoise", seed: int = 0, jobs: int = 1,
                  progress: Callable[[int], None] | None = None) -> NoiseComparison:
    """Simulate chip instance ``chip`` of ``model`` (mismatch etc.; its ``noise`` flag is
    implied) ``runs`` times with noise and compare the outputs with ``sde_samples`` SDE paths
    of ``models.chip.Chip`` from the same latent ``z (d,)``."""
    circuit = chip_instance(model, chip.model_copy(update={"noise": False}))
    started = time.perf_counter()
    x_sde = Chip(copy.deepcopy(model).to(torch.float64), chip.model_copy(update={"noise": True})).sample(
        sde_samples, z=z.reshape(1, -1).expand(sde_samples, -1).to(torch.float64),
        noise_generator=torch.Generator().manual_seed(seed + 10**6)).x
    sde_wall = time.perf_counter() - started
    x_sim, sim_wall = simulate_noise(circuit, z, runs, source, seed, jobs, progress=progress)
    clean = run_deck(build_deck(circuit, "sample", z.reshape(1, -1), measures=False))  # exported-deck tolerances
    v0 = model.spec.hardware.voltage_scale_v
    m_sim, m_sde = x_sim.mean(0), x_sde.mean(0)
    v_sim, v_sde = x_sim.var(0), x_sde.var(0)
    se = (v_sim / runs + v_sde / sde_samples).sqrt()
    return NoiseComparison(
        source=source, runs=runs, sde_samples=sde_samples, mean_sim=m_sim.tolist(), mean_sde=m_sde.tolist(),
        mean_z=((m_sim - m_sde) / se).tolist(), var_sim=v_sim.tolist(), var_sde=v_sde.tolist(),
        ratio=(v_sim / v_sde).tolist(), interval=variance_ratio_interval(runs),
        noiseless=[v / v0 for v in clean.values.values()], distinct_runs=len({tuple(r) for r in x_sim.tolist()}),
        sim_wall_s=sim_wall, sde_wall_s=sde_wall)
