"""The models a worker serves: loaded from the BentoML store, warmed up, one batcher each.

Every stored version of a model is served (:func:`stored_versions`); a request may pin one,
and the latest (by creation time) answers otherwise. A version whose stored checkpoint does
not load is logged with the reason; a model whose latest version does not load is listed as
unavailable; the others are served regardless.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import torch

from models.accuracy import choose_tier, tier_solver, tiers_summary
from models.checkpoint import load_model
from models.config import SolverConfig
from models.flow import KirchhoffNet
from models.hardware import projected_latency_s

from .batching import MicroBatcher, SolveKey, solve
from .config import ServiceSettings
from .errors import ServiceError
from .metrics import observe_solve
from .store import KIND_LABEL, robustness_summary, transistor_summary

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
    transistor: dict[str, Any] | None = None  # the chip measured at transistor level (service.store)
    created: str | None = None  # when this version was stored (ISO 8601, UTC)
    runtime: Any = None  # export.ort_runtime.OrtRuntime where onnxruntime answers some sizes

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "created": self.created, **self.metadata,
                "torch_device": str(self.model.device), "accuracy": tiers_summary(self.model.spec),
                "transistor_level": self.transistor}


def stored_versions() -> list[bentoml.Model]:
    """Every stored version of every KirchhoffNet model, by name, oldest first."""
    found = [m for m in bentoml.models.list() if m.info.labels.get("kind") == KIND_LABEL["kind"]]
    return sorted(found, key=lambda m: (m.tag.name, m.info.creation_time))


def serving_solver(model: KirchhoffNet, settings: ServiceSettings) -> SolverConfig:
    """The solver of requests that name no tolerance: the model's default accuracy tier where it
    has one (models/accuracy.py), else its own serving solver; bounded by the service's budgets."""
    s = model.spec.solver
    tier = choose_tier(model.spec.accuracy_tiers, None)
    if tier is not None:
        s = tier_solver(s, tier)
    return s.model_copy(update={"max_steps": min(s.max_steps, settings.max_solver_steps),
                                "max_wall_s": min(s.max_wall_s, settings.solve_timeout_s)})


class Registry:
    """Loaded models: the latest version by name (``models``), every loaded version by name and
    version (``versions``, oldest first), and the reasons the unloadable ones failed."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.versions: dict[str, dict[str, ServedModel]] = {}
        self.failed: dict[str, str] = {}  # model name -> why its latest version is not served
        self.ready = False

    def load(self, stored: list[bentoml.Model]) -> None:
        """Load ``stored`` (all versions, each name's oldest first, as :func:`stored_versions`)."""
        device = self.settings.torch_device()
        for m in stored:
            name = m.tag.name
            self.failed.pop(name, None)  # a later version decides whether the name is available
            self.models.pop(name, None)
            try:
                model = load_model(m.path, torch.float32, device)
            except Exception as err:  # any failure of one model must not take down the others
                self.failed[name] = str(err)
                logger.error("model %s (%s) not served: %s", name, m.tag, err)
                continue
            served = ServedModel(name, m.tag.version, Path(m.path), model, dict(m.info.metadata),
                                 serving_solver(model, self.settings), projected_latency_s(model.spec),
                                 robustness=robustness_summary(Path(m.path)),
                                 transistor=transistor_summary(Path(m.path)),
                                 created=m.info.creation_time.isoformat())
            self.versions.setdefault(name, {})[m.tag.version] = served
            self.models[name] = served
            logger.info("serving model %s (%s) on %s", name, m.tag, device)
            warning = tiers_summary(model.spec)["warning"]  # the one rule for when to warn
            if warning:
                logger.warning("model %s (%s): %s", name, m.tag, warning)
        if self.settings.warmup:
            self.warm_up()
        if self.settings.runtime == "auto" and device == "cpu":
            self.measure_runtimes()
        self.ready = bool(self.models)
        if not self.models:
            logger.error("no KirchhoffNet model could be loaded from the BentoML store; run `knet store`")

    def served(self, name: str, version: str | None = None) -> ServedModel:
        """Model ``name`` at ``version`` (None or ``latest``: the latest); ServiceError 404
        naming the served models, or the model's served versions."""
        latest = version in (None, "latest")
        found = self.models.get(name) if latest else self.versions.get(name, {}).get(version)
        if found is not None:
            return found
        if latest or name not in self.versions:
            why = f" (not loadable: {self.failed[name]})" if name in self.failed else ""
            raise ServiceError(404, f"unknown model {name!r}{why}; served: "
                               f"{', '.join(self.models) or 'none'}", "model")
        raise ServiceError(404, f"unknown version {version!r} of model {name!r}; available: "
                           f"{', '.join(reversed(self.versions[name]))} (newest first)", "version")

    def warm_up(self) -> None:
        """One small solve per model version and endpoint, so the first request pays no start-up cost."""
        for served in [s for versions in self.versions.values() for s in versions.values()]:
            z = torch.zeros(2, served.model.data_dim, dtype=torch.float64)
            res = solve(served.model, SolveKey("sample", served.model.spec.bijective, served.solver), z)
            if served.model.spec.bijective:
                solve(served.model, SolveKey("logprob", True, served.solver), res.x.double().cpu())
            if not res.stats.ok:
                logger.warning("warm-up of %s: %s", served.name, res.stats.message)

    def measure_runtimes(self) -> None:
        """Time onnxruntime against the engine for every served version (export/ort_runtime.py),
        keeping it where it wins; any failure leaves that model on the engine, logged."""
        from export.ort_runtime import OrtRuntime
        for served in [s for versions in self.versions.values() for s in versions.values()]:
            t = time.perf_counter()
            try:
                served.runtime = OrtRuntime.measure(served.model, served.solver)
            except Exception as err:
                logger.warning("onnxruntime not used for %s: %s", served.name, err)
                continue
            if served.runtime is not None:
                wins = [f"{m.direction}@{m.batch}" for m in served.runtime.table if m.use_ort]
                logger.info("runtimes of %s measured in %.1f s; onnxruntime answers: %s", served.name,
                            time.perf_counter() - t, ", ".join(wins) or "nothing (the engine is faster)")

    def batcher(self, served: ServedModel) -> MicroBatcher:
        """The model's batcher (recording every solve in the metrics), created on first use
        inside the event loop."""
        if served.batcher is None:
            def on_solve(key: SolveKey, rows: int, stats) -> None:
                observe_solve(served.name, key.endpoint, rows, stats)
            served.batcher = MicroBatcher(served.model, self.settings.max_batch_rows, self.settings.slice_rows,
                                          on_solve, enabled=self.settings.batching,
                                          solver_threads=self.settings.solver_threads, runtime=served.runtime)
        return served.batcher

    def close(self) -> None:
        for served in [s for versions in self.versions.values() for s in versions.values()]:
            if served.batcher is not None:
                served.batcher.close()
