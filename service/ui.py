"""Web pages for people: ``GET /ui`` lists the served models, ``GET /ui/{name}`` shows one.

A model page says what the circuit is, how good it is, what a chip would take (latency,
energy), shows its pictures, lists every hardware file with size, SHA-256 and download link,
and has a "try it" form that calls ``POST /sample`` and draws the answer as SVG.

Nothing is computed per request: a page is rendered once per model version and served from
memory. Artifact sizes and hashes come from the bundle the download link serves (built once by
the service, which then also answers the downloads from memory). Pictures are the PNGs stored
with the model (:data:`service.store.FIGURE_FILES`); a model stored without ``samples.png``
gets one drawn once from its own samples and cached beside the model store, in
``$BENTOML_HOME/knet-ui/<name>/<version>/``. Slow work runs in threads or through the model's
batcher, so the event loop that answers ``/sample`` and ``/logprob`` is never blocked.
Errors are pages with the same status and message as the JSON API.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from models.checkpoint import atomic_write
from models.hardware import capacitor_energy_j, chip_timing, device_energy_bound_j
from models.zoo import PUBLISHED_NATS

from .batching import SolveKey
from .errors import ServiceError, solve_error
from .registry import ServedModel
from .store import FIGURE_FILES
from .ui_html import ArtifactRow, Quality, error_page, index_page, model_page

logger = logging.getLogger("knet.service")

FIGURE_CAPTIONS = {
    "samples.png": "samples (and the learned density for 2-D models)",
    "loss.png": "training loss",
    "robustness.png": "robustness to device and constant variation",
    "design_space.png": "design space",
}
RENDERED_SAMPLES = {2: 1024, 64: 32}  # points drawn in a rendered samples picture, by data dim
CACHE_DIR_NAME = "knet-ui"
# the page is self-contained: scripts, styles and pictures come from this server only
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                                               "script-src 'unsafe-inline'; connect-src 'self'",
                    "X-Content-Type-Options": "nosniff"}
HTML = "text/html; charset=utf-8"


# -- facts shown on the pages -------------------------------------------------------------------
def parameter_count(served: ServedModel) -> int:
    return sum(p.numel() for layer in served.model.layers for p in layer.params.values())


def quality(evals: dict) -> Quality | None:
    """The evaluation figure stored with the model (``eval.json``), with the published one."""
    published = PUBLISHED_NATS.get(evals.get("task", ""))
    for key, label in (("nll", "test NLL"), ("elbo", "E[log q + U]")):
        value, se = evals.get(key), evals.get(f"{key}_se")
        if isinstance(value, int | float):  # a failed evaluation stores null
            return Quality(label, value, se if isinstance(se, int | float) else None, published, evals.get("n"))
    return None


def evaluation_extras(evals: dict) -> list[tuple[str, str]]:
    """(label, text) rows of ``eval.json`` beyond the headline figure: log Z, the box score of an
    energy that does not normalise (docs/zoo.md, potential2), the training record."""
    extra = []
    if "log_z" in evals:
        extra.append(("log Z (the bound is −log Z)", f"{evals['log_z']:.3f}"))
    box = evals.get("box") or {}
    if isinstance(box.get("kl"), int | float):
        b = box["half_width"]
        extra.append((f"KL on the box [−{b:g}, {b:g}]²", f"{box['kl']:.3f} ± {box['kl_se']:.3f} nats, "
                      f"{100 * box['mass_outside']:.1f} % of the mass outside"))
    if "iterations" in evals:
        extra.append(("training", f"{evals['iterations']} iterations, {evals.get('train_seconds', 0) / 60:.1f} min"))
    return extra


def _solver_text(solver) -> str:
    if solver.method in ("rk4", "euler", "midpoint"):
        steps = solver.steps_per_layer
        return f"{solver.method}, {', '.join(map(str, steps)) if isinstance(steps, tuple) else steps} steps per layer"
    return f"{solver.method}, rtol {solver.rtol:g}, atol {solver.atol:g}"


def model_facts(served: ServedModel) -> dict:
    """Everything the index and the model page show about ``served``; times in seconds,
    energies in joules, hardware constants in SI units."""
    spec = served.model.spec
    evals = served.metadata.get("eval") or {}
    timing = chip_timing(spec.end_time, spec.hardware)
    cap_j, dev_j = capacitor_energy_j(spec), device_energy_bound_j(spec)
    extra = evaluation_extras(evals)
    return {
        "name": served.name, "version": served.version, "task": evals.get("task", spec.name),
        "data_dim": spec.data_dim, "device": spec.device, "layers": len(spec.layers),
        "nodes": [layer.nodes for layer in spec.layers], "devices": spec.num_edges,
        "parameters": parameter_count(served), "end_time": spec.end_time, "solver": _solver_text(served.solver),
        "checkpoint_sha256": served.metadata.get("checkpoint_sha256", ""),
        "hardware": spec.hardware.model_dump(), "tau_s": timing.tau_s, "settle_s": timing.settle_s,
        "chip_latency_s": served.projected_chip_latency_s,
        "capacitor_energy_j": cap_j, "device_energy_j": dev_j, "energy_j": cap_j + dev_j,
        "quality": quality(evals), "eval_extra": extra, "transistor": served.transistor,
    }


# -- pictures -----------------------------------------------------------------------------------
def cache_dir(served: ServedModel) -> Path:
    """Beside the model store: ``<store>/models/<name>/<version>`` → ``<store>/knet-ui/<name>/<version>``."""
    return served.path.parents[2] / CACHE_DIR_NAME / served.name / served.version


def figure_files(served: ServedModel) -> list[str]:
    """The pictures a page shows: the stored ones, and always a samples picture."""
    stored = [f for f in FIGURE_FILES if (served.path / f).is_file()]
    return stored if "samples.png" in stored else ["samples.png", *stored]


def samples_png(name: str, x) -> bytes:
    """A PNG of samples ``x (n, d)`` (numpy, model units): a scatter of the first two
    coordinates, or a grid of 8×8 images for 64-D models."""
    from matplotlib.figure import Figure  # no pyplot: safe in a worker thread

    if x.shape[1] == 64:
        fig = Figure(figsize=(8, 4.3))
        for ax, img in zip(fig.subplots(4, 8).ravel(), x):
            ax.imshow(img.reshape(8, 8), cmap="gray_r", vmin=-2, vmax=2)
            ax.axis("off")
    else:
        fig = Figure(figsize=(4.2, 4.2))
        ax = fig.subplots()
        ax.scatter(x[:, 0], x[:, 1] if x.shape[1] > 1 else 0 * x[:, 0], s=2, alpha=0.5, color="tab:orange")
        ax.set_aspect("equal")
    fig.suptitle(f"{name}: model samples (seed 0)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


async def render_samples(svc, served: ServedModel) -> bytes:
    """Draw the samples picture of ``served`` (through its batcher, then matplotlib in a thread)."""
    d = served.model.data_dim
    z = torch.randn(RENDERED_SAMPLES.get(d, RENDERED_SAMPLES[2]), d, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    out = await svc.registry.batcher(served).submit(SolveKey("sample", False, served.solver), z)
    if not out.stats.ok:
        raise solve_error(out.stats, served.name)
    return await asyncio.to_thread(samples_png, served.name, out.x.double().cpu().numpy())


# -- caches ---------------------------------------------------------------------------------------
class PageCache:
    """Rendered pages and pictures of one worker, keyed by model version."""

    def __init__(self) -> None:
        self.data: dict[tuple, bytes] = {}
        self.locks: defaultdict[tuple, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def get(self, key: tuple, make: Callable) -> bytes:
        """The cached value of ``key``, made once by ``await make()`` (concurrent askers wait)."""
        if key in self.data:
            return self.data[key]
        async with self.locks[key]:
            if key not in self.data:
                self.data[key] = await make()
        return self.data[key]


async def figure_bytes(svc, served: ServedModel, file: str) -> bytes:
    """A picture of ``served``: stored with the model, cached on disk, or drawn now (samples)."""
    stored = served.path / file
    if stored.is_file():
        return await asyncio.to_thread(stored.read_bytes)
    cached = cache_dir(served) / file
    if cached.is_file():
        return await asyncio.to_thread(cached.read_bytes)
    data = await render_samples(svc, served)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(atomic_write, cached, data)
    except OSError as err:  # a read-only store: keep it in memory only
        logger.warning("could not cache %s: %s", cached, err)
    return data


async def artifact_rows(svc, served: ServedModel) -> list[ArtifactRow]:
    """Every artifact kind with size and SHA-256, bundle first. Sizes and hashes of the files
    inside the bundle are read from its manifest (the same bytes their own links return)."""
    try:
        from export.artifacts import ARTIFACT_KINDS
    except ImportError as err:
        return [ArtifactRow("bundle", "—", "hardware files", reason=f"artifact export is unavailable: {err}")]
    base = f"/models/{served.name}/artifacts/"
    kinds = ["bundle", *(k for k in ARTIFACT_KINDS if k != "bundle")]
    try:
        bundle = await svc.artifact(served, "bundle")
    except ServiceError as err:
        return [ArtifactRow(k, ARTIFACT_KINDS[k].filename(served.model.spec.name), ARTIFACT_KINDS[k].description,
                            reason=err.message) for k in kinds]
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as zf:
        manifest_bytes = zf.read("manifest.json")
    manifest = json.loads(manifest_bytes)
    files = {f["kind"]: f for f in manifest["files"]}
    files["manifest"] = {"name": "manifest.json", "bytes": len(manifest_bytes),
                         "sha256": hashlib.sha256(manifest_bytes).hexdigest()}
    rows = [ArtifactRow("bundle", bundle.filename, ARTIFACT_KINDS["bundle"].description, len(bundle.data),
                        bundle.sha256, base + "bundle")]
    for k in kinds[1:]:
        desc = ARTIFACT_KINDS[k].description
        if k in files:
            f = files[k]
            rows.append(ArtifactRow(k, f["name"], desc, f["bytes"], f["sha256"], base + k))
        else:
            why = manifest.get("omitted", {}).get(k, "not available for this model")
            rows.append(ArtifactRow(k, ARTIFACT_KINDS[k].filename(served.model.spec.name), desc, reason=why))
    return rows


# -- routes ---------------------------------------------------------------------------------------
def _html(body: bytes, status: int = 200, headers: dict | None = None) -> Response:
    cache = {"Cache-Control": "public, max-age=60"} if status == 200 else {}  # a page changes only with a new version
    return Response(body, status_code=status, media_type=HTML, headers={**SECURITY_HEADERS, **cache, **(headers or {})})


def _pages(handler):
    """ServiceError → an error page with the API's status and message; anything else → logged, 500 page."""
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except ServiceError as err:
            return _html(error_page(err.status, err.message), err.status, err.headers)
        except Exception:
            logger.exception("unexpected error on %s", request.url.path)
            return _html(error_page(500, "internal error; see the server log"), 500)
    return route


def ui_routes(get_service: Callable) -> list[Route]:
    """The page routes; ``get_service()`` returns the running service (503 while starting)."""
    cache = PageCache()

    async def index(request: Request) -> Response:
        svc = get_service()
        served = list(svc.registry.models.values())
        key = ("index", *((s.name, s.version) for s in served), *sorted(svc.registry.failed))

        async def make() -> bytes:
            return index_page([model_facts(s) for s in served], svc.registry.failed)
        return _html(await cache.get(key, make))

    async def model(request: Request) -> Response:
        svc = get_service()
        served = svc.served(request.path_params["name"])

        async def make() -> bytes:
            figures = [(f"/ui/{served.name}/figures/{f}?v={served.version}", FIGURE_CAPTIONS[f])
                       for f in figure_files(served)]
            rows = await artifact_rows(svc, served)
            return model_page(model_facts(served), figures, rows, min(svc.registry.settings.max_samples, 4096))
        return _html(await cache.get(("page", served.name, served.version), make))

    async def figure(request: Request) -> Response:
        svc = get_service()
        served = svc.served(request.path_params["name"])
        file = request.path_params["file"]
        if file not in figure_files(served):
            raise ServiceError(404, f"model {served.name!r} has no picture {file!r}; it has: "
                               f"{', '.join(figure_files(served))}", "file")
        data = await cache.get(("figure", served.name, served.version, file),
                               lambda: figure_bytes(svc, served, file))
        return Response(data, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    return [Route("/ui", _pages(index), methods=["GET"]),
            Route("/ui/{name}", _pages(model), methods=["GET"]),
            Route("/ui/{name}/figures/{file}", _pages(figure), methods=["GET"])]
