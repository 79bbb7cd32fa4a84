"""The BentoML service (new SDK): a thin class over the registry and the micro-batchers.

``POST /sample`` and ``POST /logprob`` take flat JSON bodies (``service.schemas``);
``GET /models``, ``GET /models/{name}`` and ``GET /models/{name}/artifacts/{kind}`` live in a
small Starlette app mounted beside them. Start it with ``knet serve`` or
``bentoml serve service.service:KirchhoffNetService --host 127.0.0.1``.
"""
from __future__ import annotations

import asyncio
import logging
import math
import secrets
import sys

import bentoml
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.accuracy import answer_accuracy, choose_tier, tier_solver
from models.config import ChipConfig

from .batching import SolveKey
from .chip import ChipSolver, chip_info, parse_chip
from .config import current
from .errors import ServiceError, error_response, json_errors, solve_error
from .metrics import PROJECTED_CHIP_LATENCY, count_request, observe_solve
from .middleware import LimitsMiddleware
from .oip import oip_routes
from .openapi_doc import OpenAPIMiddleware
from .registry import Registry, ServedModel, stored_versions
from .schemas import LogprobRequest, LogprobResponse, NoopResponse, SampleRequest, SampleResponse
from .ui import ui_routes

logger = logging.getLogger("knet.service")
if not logger.handlers:  # BentoML configures only its own loggers
    _h = logging.StreamHandler(sys.stderr)
    _h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s knet.service: %(message)s"))
    logger.addHandler(_h)
    logger.setLevel(logging.INFO)
    logger.propagate = False

SETTINGS = current()
STORED = stored_versions()  # every version, resolved at import, so `bentoml build` packs them all
_instance: KirchhoffNetService | None = None
# measured with the 9 zoo models after a 4096-row /sample each: 365 MiB per worker, 267 MiB for
# BentoML's supervisor (docs/service.md, "Kubernetes"); 1 GiB leaves room for both
MEMORY_PER_WORKER_GIB = 1


def replica_resources(settings) -> dict[str, str]:
    """What one replica asks of its platform (BentoCloud here; deploy/deployment.yaml asks
    Kubernetes the same): a core per torch thread of each worker, and the memory per worker."""
    return {"cpu": str(settings.workers * settings.threads), "memory": f"{settings.workers * MEMORY_PER_WORKER_GIB}Gi"}


# traffic: BentoML's whole-request timeout, and the concurrency an autoscaler should aim at (half
# the in-flight limit, so replicas are added before requests get 429); the limit itself is
# LimitsMiddleware's, which answers 429 with Retry-After (BentoML's max_concurrency would not)
@bentoml.service(name="kirchhoffnet", workers=SETTINGS.workers, resources=replica_resources(SETTINGS),
                 traffic={"timeout": SETTINGS.request_timeout_s,
                          "concurrency": max(1, SETTINGS.max_concurrency * SETTINGS.workers // 2)},
                 metrics={"enabled": True})
class KirchhoffNetService:
    """Sampling and exact log-density of analog-circuit flows, with their hardware artifacts."""

    def __init__(self) -> None:
        global _instance
        torch.set_num_threads(SETTINGS.threads)
        self.registry = Registry(SETTINGS)
        self.registry.load(STORED)
        for served in self.registry.models.values():
            PROJECTED_CHIP_LATENCY.labels(served.name).set(served.projected_chip_latency_s)
        self._artifacts: dict[tuple[str, str, str], object] = {}
        self._artifact_lock = asyncio.Lock()
        self.chips = ChipSolver(SETTINGS.solver_threads)  # emulated chips: own cache and threads
        _instance = self

    def __is_ready__(self) -> bool:
        return self.registry.ready

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.registry.close()
        self.chips.close()

    # -- endpoints -----------------------------------------------------------------------
    @bentoml.api(input_spec=SampleRequest, route="/sample")
    @json_errors
    async def sample(self, **req) -> SampleResponse:
        """Draw ``n`` samples (and log q(x)); the same seed gives the same samples."""
        served, out, seed, chip, accuracy = await self.solve_sample(req)
        return SampleResponse(samples=_floats(out.x), logprob=None if out.logp is None else _floats(out.logp),
                              seed=seed, chip=None if chip is None else chip_info(chip),
                              **self._bookkeeping(served, out.stats), **accuracy)

    @bentoml.api(input_spec=LogprobRequest, route="/logprob")
    @json_errors
    async def logprob(self, **req) -> LogprobResponse:
        """Exact log-density (nats) of each point under the model."""
        served, out, accuracy = await self.solve_logprob(req)
        return LogprobResponse(logprob=_floats(out.logp), **self._bookkeeping(served, out.stats), **accuracy)

    if SETTINGS.noop_routes:
        # the overhead benchmark's reference (benchmarks/overhead.py): BentoML parses and validates
        # the same request schema, then nothing is solved; off unless KNET_SERVICE_NOOP_ROUTES=true
        @bentoml.api(input_spec=SampleRequest, route="/noop/sample")
        @json_errors
        async def noop_sample(self, **req) -> NoopResponse:
            """No solve: the same request schema as /sample (benchmark reference)."""
            if req.get("chip") is not None:  # the part of the schema the handler checks
                parse_chip(req["chip"])
            return NoopResponse()

        @bentoml.api(input_spec=LogprobRequest, route="/noop/logprob")
        async def noop_logprob(self, **req) -> NoopResponse:
            """No solve: the same request schema as /logprob (benchmark reference)."""
            return NoopResponse()

    # -- the solves behind the endpoints (native and Open Inference Protocol, service/oip.py) --
    async def solve_sample(self, req: dict, z: torch.Tensor | None = None):
        """Samples for a validated :class:`SampleRequest` body ``req``, from the latents ``z
        (n, d)`` when given, else from ``n`` latents drawn with ``seed``. Returns ``(served,
        outcome, seed, chip or None, accuracy)`` (accuracy: ``error_bound`` and
        ``in_verified_region`` of the answer); raises :class:`ServiceError`."""
        served = self.served(req["model"], req.get("version"))
        tier, solver = _tier(served, req.get("tolerance"))
        seed = req["seed"] if req["seed"] is not None else secrets.randbits(63)
        if z is None:
            z = torch.randn(req["n"], served.model.data_dim, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
        elif z.shape[1] != served.model.data_dim:
            raise ServiceError(400, f"z: expected {served.model.data_dim} coordinates per row for model "
                               f"{served.name!r}, got {z.shape[1]}", "z")
        want_logp = bool(req["with_logprob"]) and served.model.spec.bijective
        chip = None if req.get("chip") is None else parse_chip(req["chip"])
        ideal = chip is None or chip.is_ideal
        if ideal:  # the ideal chip is the model: same batched path, same answer
            out = await self._solve(served, "sample", want_logp, z, req["timeout_s"], solver)
        else:
            out = await self._solve_chip(served, chip, want_logp, z, req["timeout_s"], seed, solver)
        # the tier's bound is the ideal model's: an emulated chip's answer has none
        accuracy = answer_accuracy(tier if ideal else None, out.logp is not None, latents=z)
        return served, out, seed, chip, accuracy

    async def solve_logprob(self, req: dict):
        """Log-densities for a validated :class:`LogprobRequest` body ``req``: ``(served, outcome,
        accuracy)``; raises :class:`ServiceError`."""
        served = self.served(req["model"], req.get("version"))
        tier, solver = _tier(served, req.get("tolerance"))
        if not served.model.spec.bijective:
            raise ServiceError(422, f"model {served.name!r} changes node counts between layers; "
                               "its log-density is not defined", "model")
        d = served.model.data_dim
        for i, p in enumerate(req["points"]):
            if len(p) != d:
                raise ServiceError(400, f"points[{i}]: expected {d} coordinates for model "
                                   f"{served.name!r}, got {len(p)}", f"points[{i}]")
        x = torch.tensor(req["points"], dtype=torch.float64)
        out = await self._solve(served, "logprob", True, x, req["timeout_s"], solver)
        return served, out, answer_accuracy(tier, True, points=x)

    # -- helpers -------------------------------------------------------------------------
    def served(self, name: str, version: str | None = None) -> ServedModel:
        """Model ``name`` at ``version`` (default the latest); 404 naming what is served otherwise."""
        return self.registry.served(name, version)

    async def _solve(self, served: ServedModel, endpoint: str, want_logp: bool, x: torch.Tensor,
                     timeout_s: float | None, solver):
        solver = _request_solver(solver, timeout_s)
        count_request(served.name, endpoint, x.shape[0])
        out = await self.registry.batcher(served).submit(SolveKey(endpoint, want_logp, solver), x)
        if not out.stats.ok:
            raise solve_error(out.stats, served.name)
        return out

    async def _solve_chip(self, served: ServedModel, chip: ChipConfig, want_logp: bool, z: torch.Tensor,
                          timeout_s: float | None, seed: int, solver):
        """An emulated chip's solve (service/chip.py), bounded like :meth:`_solve` and off the batcher."""
        solver = _request_solver(solver, timeout_s)
        count_request(served.name, "sample", z.shape[0])
        out = await self.chips.sample(served, chip, z, want_logp, solver, seed)
        observe_solve(served.name, "sample", z.shape[0], out.stats)
        if not out.stats.ok:
            raise solve_error(out.stats, served.name)
        return out

    @staticmethod
    def _bookkeeping(served: ServedModel, stats) -> dict:
        return {"model": served.name, "version": served.version, "status": stats.status.name.lower(),
                "nfe": stats.nfe, "solve_s": stats.wall_s,
                "projected_chip_latency_s": served.projected_chip_latency_s}

    async def artifact(self, served: ServedModel, kind: str):
        """The artifact ``kind`` of a served model, built once (the bytes are deterministic)."""
        kinds = [*_artifact_kinds(), *_stored_file_kinds(served)]
        if kind not in kinds:
            raise ServiceError(404, f"unknown artifact {kind!r}; available: {', '.join(kinds)}", "kind")
        from export.artifacts import build_artifact
        key = (served.name, served.version, kind)
        async with self._artifact_lock:
            if key not in self._artifacts:
                # built from the stored checkpoint files, exactly as `knet export` builds them
                try:
                    self._artifacts[key] = await asyncio.to_thread(build_artifact, served.model, kind, served.path)
                except ValueError as err:  # not available for this model, or fails the circuit checks
                    raise ServiceError(422, str(err), "kind") from None
        return self._artifacts[key]


def _tier(served: ServedModel, tolerance: float | None):
    """The accuracy tier answering a request with ``tolerance`` (nats; None: the default tier) and
    its solver with the service's budgets: ``(tier or None, solver)``; 422 naming the best tier."""
    try:
        tier = choose_tier(served.model.spec.accuracy_tiers, tolerance)
    except ValueError as err:
        raise ServiceError(422, f"model {served.name!r}: {err}", "tolerance") from None
    if tier is None or tolerance is None:  # no tiers, or the default tier: served.solver already is it
        return tier, served.solver
    return tier, tier_solver(served.solver, tier)


def _request_solver(solver, timeout_s: float | None):
    """``solver`` with its wall-clock budget lowered to the request's ``timeout_s``."""
    if timeout_s is not None and timeout_s < solver.max_wall_s:
        solver = solver.model_copy(update={"max_wall_s": timeout_s})
    return solver


def _floats(t: torch.Tensor) -> list:
    """Tensor → nested lists of floats; NaN/Inf → None so the JSON stays valid."""
    def clean(v):
        if isinstance(v, list):
            return [clean(u) for u in v]
        return v if math.isfinite(v) else None
    return clean(t.tolist())


# -- GET routes: model listing and artifact downloads ------------------------------------------
def _service() -> KirchhoffNetService:
    if _instance is None:
        raise ServiceError(503, "service is starting")
    return _instance


def _get(handler):
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except ServiceError as err:
            return error_response(err.status, err.message, err.field)
        except Exception:
            logger.exception("unexpected error on %s", request.url.path)
            return error_response(500, "internal error; see the server log")
    return route


async def list_models(request: Request) -> Response:
    svc = _service()
    return JSONResponse({"models": [s.info() for s in svc.registry.models.values()],
                         "unavailable": svc.registry.failed})


async def model_info(request: Request) -> Response:
    served = _service().served(request.path_params["name"])
    base = f"/models/{served.name}/artifacts/"
    try:
        links = {k: base + k for k in [*_artifact_kinds(), *_stored_file_kinds(served)]}
    except ServiceError:
        links = {}
    runtimes = None if served.runtime is None else served.runtime.describe()
    return JSONResponse({**served.info(), "robustness": served.robustness, "runtimes": runtimes, "artifacts": links})


async def model_versions(request: Request) -> Response:
    """Every served version of a model, newest first, with its metadata; ``latest`` is the default."""
    svc = _service()
    latest = svc.served(request.path_params["name"])
    versions = reversed(svc.registry.versions[latest.name].values())
    return JSONResponse({"name": latest.name, "latest": latest.version,
                         "versions": [{**s.info(), "robustness": s.robustness} for s in versions]})


def _artifact_kinds() -> dict:
    try:
        from export.artifacts import ARTIFACT_KINDS
    except ImportError as err:
        raise ServiceError(503, f"artifact export is unavailable: {err}") from None
    return ARTIFACT_KINDS


def _stored_file_kinds(served: ServedModel) -> list[str]:
    """Analysis files stored with the model (robustness tables and plot), downloadable verbatim."""
    from export.artifacts import checkpoint_file_kinds
    return checkpoint_file_kinds(served.path)


async def download(request: Request) -> Response:
    svc = _service()
    served = svc.served(request.path_params["name"])
    art = await svc.artifact(served, request.path_params["kind"])
    return Response(art.data, media_type=art.content_type,
                    headers={"Content-Disposition": f'attachment; filename="{art.filename}"'})


routes_app = Starlette(routes=[
    Route("/models", _get(list_models), methods=["GET"]),
    Route("/models/{name}", _get(model_info), methods=["GET"]),
    Route("/models/{name}/versions", _get(model_versions), methods=["GET"]),
    Route("/models/{name}/artifacts/{kind}", _get(download), methods=["GET"]),
    *ui_routes(_service),  # web pages: /ui, /ui/{name} (service/ui.py)
    *oip_routes(_service),  # Open Inference Protocol: /v2/... (service/oip.py)
])
KirchhoffNetService.mount_asgi_app(routes_app, path="/", name="knet-models")
KirchhoffNetService.add_asgi_middleware(LimitsMiddleware, max_body_bytes=SETTINGS.max_body_bytes,
                                        max_concurrency=SETTINGS.max_concurrency,
                                        retry_after_s=SETTINGS.retry_after_s)
# /docs.json (and the Swagger page): every route, status and body, and the served models' shapes
KirchhoffNetService.add_asgi_middleware(OpenAPIMiddleware,
                                        bentoml_spec=lambda: KirchhoffNetService.openapi_spec.asdict(),
                                        registry=lambda: None if _instance is None else _instance.registry)
KirchhoffNetService.models.extend(bentoml.models.BentoModel(m.tag) for m in STORED)
