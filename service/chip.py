"""The virtual chip behind ``POST /sample`` with a ``chip`` object: emulated chip instances
(``models.chip``) cached per model version and chip configuration, solved off the event loop.

Why a cache: building a chip draws its mismatch and freezes its perturbed operators; a client
sampling the same chip instance again should not pay for that twice. Why a separate executor:
chip solves (a torch path without the fast engine, an SDE when noise is on) must never occupy
the micro-batcher's solver threads, so ideal requests keep their latency beside them.

An ideal chip (every effect off) is not emulated here: the service answers it through the
batcher, exactly as a request without ``chip``.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import threading

import torch
from pydantic import ValidationError

from models.chip import Chip, UnsupportedChip
from models.config import ChipConfig, SolverConfig
from models.flow import FlowResult

from .errors import ServiceError

NOISE_SEED_SALT = 0x5DEECE66D  # the noise stream of a request: its seed xor this, so it differs from z's


def parse_chip(raw: dict) -> ChipConfig:
    """The request's ``chip`` object as a :class:`ChipConfig`.

    Raises:
        ServiceError: 400 naming the first bad field as ``chip.<field>``.
    """
    try:
        return ChipConfig.model_validate(raw, strict=True)  # as the schema says: no true for 1, no "8" for 8
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e.get("loc", ()))
        field = f"chip.{loc}" if loc else "chip"
        raise ServiceError(400, f"{field}: {e['msg']}", field) from None


def chip_info(chip: ChipConfig) -> dict:
    """What the answer says about the chip: the effects applied and the full configuration
    (defaults filled in)."""
    return {"effects": chip.effects(), "config": chip.model_dump(mode="json")}


class ChipCache:
    """Least-recently-used emulated chips, keyed by (model name, model version, chip config).

    Thread-safe: chips are built in solver threads; a build holds the lock, so two requests
    for the same new chip build it once.
    """

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._chips: collections.OrderedDict[tuple, Chip] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # chips constructed so far (for tests and logs)

    def get(self, served, chip: ChipConfig) -> Chip:
        """The chip ``chip`` of ``served`` (a :class:`service.registry.ServedModel`).

        Raises:
            UnsupportedChip: the chip cannot be emulated for this model.
        """
        if not chip.has_mismatch:  # the instance seed only draws mismatch: one chip for every seed
            chip = chip.model_copy(update={"instance": 0})
        key = (served.name, served.version, chip)
        with self._lock:
            if key in self._chips:
                self._chips.move_to_end(key)
                return self._chips[key]
            built = Chip(served.model, chip, solver=served.solver)
            self.builds += 1
            self._chips[key] = built
            while len(self._chips) > self.capacity:
                self._chips.popitem(last=False)
            return built

    def __len__(self) -> int:
        return len(self._chips)


def chip_sample(cache: ChipCache, served, chip: ChipConfig, z: torch.Tensor, want_logp: bool,
                solver: SolverConfig, seed: int) -> FlowResult:
    """Samples of ``z (n, d)`` latents through the emulated chip, bounded by ``solver``'s
    budget (the request's ``timeout_s`` lowers its ``max_wall_s``); x and logp float64 on the CPU.

    The noise stream is seeded from the request's ``seed``: same seed, same chip, same samples.
    """
    built = cache.get(served, chip)
    if solver != built.solver:  # same circuit and steps, this request's budget
        built = copy.copy(built)
        built.solver = solver
    noise_gen = torch.Generator().manual_seed(seed ^ NOISE_SEED_SALT)
    res = built.sample(z.shape[0], z=z, with_logprob=want_logp, noise_generator=noise_gen)
    x = res.x.detach().to("cpu", torch.float64)
    logp = None if res.logp is None else res.logp.detach().to("cpu", torch.float64)
    return FlowResult(x, logp, res.stats)


class ChipSolver:
    """The service's chip cache and the threads chip solves run in (not the batcher's)."""

    def __init__(self, threads: int = 1, capacity: int = 8):
        self.cache = ChipCache(capacity)
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="knet-chip")

    async def sample(self, served, chip: ChipConfig, z: torch.Tensor, want_logp: bool,
                     solver: SolverConfig, seed: int) -> FlowResult:
        """:func:`chip_sample` in a chip thread.

        Raises:
            ServiceError: 422 naming the ``chip.*`` field when the chip cannot be emulated.
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, chip_sample, self.cache, served, chip, z,
                                              want_logp, solver, seed)
        except UnsupportedChip as err:
            raise ServiceError(422, f"chip: {err}", f"chip.{err.field}" if err.field else "chip") from None
        except ValueError as err:  # a configuration the emulation rejects (e.g. a 1-bit converter)
            raise ServiceError(422, f"chip: {err}", "chip") from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
