"""The models a worker serves: loaded from the BentoML store, warmed up, one batcher each.

A model whose stored checkpoint does not load is logged with the reason and listed as
unavailable; the others are served regardless.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import torch

from models.checkpoint import load_model
from models.config import SolverConfig
from models.flow import KirchhoffNet
from models.hardware import projected_latency_s

from .batching import MicroBatcher, SolveKey, solve
from .config import ServiceSettings
from .metrics import observe_solve
from .store import robustness_summary

logger = logging.getLogger("knet.service")


@dataclass(eq=False)
class ServedModel:
    """One loaded model and what the endpoints need to answer for it."""

    name: str
    version: str
    path: Path  # the store directory (checkpoint files)
    model: KirchhoffNet
    metadata: dict[str, Any]
    solver: SolverConfig  # serving solver with the service's budgets applied
    projected_chip_latency_s: float
    batcher: MicroBatcher | None = field(default=None, repr=False)
    robustness: dict[str, Any] | None = None  # summary of the stored robustness.json (service.store)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, **self.metadata,
                "torch_device": str(self.model.device)}


def serving_solver(model: KirchhoffNet, settings: ServiceSettings) -> SolverConfig:
    """The model's own serving solver, bounded by the service's step and time budgets."""
    s = model.spec.solver
    return s.model_copy(update={"max_steps": min(s.max_steps, settings.max_solver_steps),
                                "max_wall_s": min(s.max_wall_s, settings.solve_timeout_s)})


class Registry:
    """Loaded models by name, plus the reasons the unloadable ones failed."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.failed: dict[str, str] = {}
        self.ready = False

    def load(self, stored: list[bentoml.Model]) -> None:
        device = self.settings.torch_device()
        for m in stored:
            name = m.tag.name
            try:
                model = load_model(m.path, torch.float32, device)
            except Exception as err:  # any failure of one model must not take down the others
                self.failed[name] = str(err)
                logger.error("model %s (%s) not served: %s", name, m.tag, err)
                continue
            meta = dict(m.info.metadata)
            self.models[name] = ServedModel(name, m.tag.version, Path(m.path), model, meta,
                                            serving_solver(model, self.settings),
                                            projected_latency_s(model.spec),
                                            robustness=robustness_summary(Path(m.path)))
            logger.info("serving model %s (%s) on %s", name, m.tag, device)
        if self.settings.warmup:
            self.warm_up()
        self.ready = bool(self.models)
        if not self.models:
            logger.error("no KirchhoffNet model could be loaded from the BentoML store; run `knet store`")

    def warm_up(self) -> None:
        """One small solve per model and endpoint, so the first request pays no start-up cost."""
        for served in list(self.models.values()):
            z = torch.zeros(2, served.model.data_dim, dtype=torch.float64)
            res = solve(served.model, SolveKey("sample", served.model.spec.bijective, served.solver), z)
            if served.model.spec.bijective:
                solve(served.model, SolveKey("logprob", True, served.solver), res.x.double().cpu())
            if not res.stats.ok:
                logger.warning("warm-up of %s: %s", served.name, res.stats.message)

    def batcher(self, served: ServedModel) -> MicroBatcher:
        """The model's batcher (recording every solve in the metrics), created on first use
        inside the event loop."""
        if served.batcher is None:
            def on_solve(key: SolveKey, rows: int, stats) -> None:
                observe_solve(served.name, key.endpoint, rows, stats)
            served.batcher = MicroBatcher(served.model, self.settings.max_batch_rows, self.settings.slice_rows,
                                          on_solve, enabled=self.settings.batching,
                                          solver_threads=self.settings.solver_threads)
        return served.batcher

    def close(self) -> None:
        for served in self.models.values():
            if served.batcher is not None:
                served.batcher.close()
