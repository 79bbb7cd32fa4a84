"""The Open Inference Protocol (KServe v2 / Triton HTTP/REST) beside the native endpoints.

Every served model ``NAME`` is two OIP models (docs/service.md, "Open Inference Protocol"):

* ``NAME``, the log-density: input ``points`` FP64 or FP32 ``[-1, d]`` → output ``logprob``
  FP64 ``[-1]`` (nats), as ``POST /logprob``;
* ``NAME-sample``, the sampler: input ``z`` FP64 or FP32 ``[-1, d]`` (latents chosen by the
  caller; leave it out to draw ``n`` latents from ``seed``) → outputs ``samples`` FP64
  ``[-1, d]`` and ``logprob`` FP64 ``[-1]`` (bijective models), as ``POST /sample``.

A model name that is itself served wins over the ``-sample`` reading. Scalars travel in the
protocol's ``parameters``: the request's ``seed``, ``n``, ``with_logprob``, ``timeout_s``,
``tolerance`` and ``chip`` (an object or its JSON text) are validated by the native request
schemas, then solved by the service's own code (same batcher, limits, metrics and status codes);
the response's carry ``status``, ``nfe``, ``solve_s``, ``projected_chip_latency_s`` (and
``seed``, ``chip``, ``accuracy_tier``, ``error_bound``, ``in_verified_region`` where they are not null).
Tensors travel as JSON ``data`` or in the binary tensor extension. Error bodies are
``{"error": message}``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib import metadata as importlib_metadata

import numpy as np
import torch
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import ServiceError
from .schemas import LogprobRequest, SampleRequest

logger = logging.getLogger("knet.service")

SAMPLER_SUFFIX = "-sample"
PLATFORM = "kirchhoffnet"
INPUT_DTYPES = {"FP64": np.dtype("<f8"), "FP32": np.dtype("<f4")}  # binary tensors are little-endian
OUTPUT_DTYPE = "FP64"
HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary tensor extension's JSON header size
# request parameters of the protocol itself (not passed on to the solve)
PROTOCOL_PARAMETERS = frozenset({"binary_data_output"})
SAMPLER_PARAMETERS = ("n", "seed", "with_logprob", "timeout_s", "tolerance", "chip")
LOGPROB_PARAMETERS = ("timeout_s", "tolerance")


def oip_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def oip_routes(service: Callable) -> list[Route]:
    """The ``/v2`` routes; ``service()`` returns the running KirchhoffNetService (or raises 503)."""
    def guarded(handler):
        async def route(request: Request) -> Response:
            try:
                return await handler(service(), request)
            except ServiceError as err:
                return oip_error(err.status, err.message, err.headers)
            except Exception:
                logger.exception("unexpected error on %s", request.url.path)
                return oip_error(500, "internal error; see the server log")
        return route

    model = "/v2/models/{model}"
    pinned = "/v2/models/{model}/versions/{version}"
    return [
        Route("/v2", guarded(server_metadata), methods=["GET"]),
        Route("/v2/health/live", guarded(live), methods=["GET"]),
        Route("/v2/health/ready", guarded(ready), methods=["GET"]),
        *(Route(base, guarded(model_metadata), methods=["GET"]) for base in (model, pinned)),
        *(Route(base + "/ready", guarded(model_ready), methods=["GET"]) for base in (model, pinned)),
        *(Route(base + "/infer", guarded(infer), methods=["POST"]) for base in (model, pinned)),
    ]


# -- health and metadata ------------------------------------------------------------------------
async def server_metadata(svc, request: Request) -> Response:
    try:
        version = importlib_metadata.version("kirchhoffnet-serve")
    except importlib_metadata.PackageNotFoundError:
        version = "unknown"
    return JSONResponse({"name": "kirchhoffnet", "version": version, "extensions": ["binary_tensor_data"]})


async def live(svc, request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(svc, request: Request) -> Response:
    if not svc.registry.ready:
        return oip_error(503, "no model is loaded")
    return JSONResponse({"ready": True})


def resolve(svc, oip_name: str, version: str | None):
    """``(served model, "logprob" | "sample")`` for an OIP model name; 404 naming the OIP models."""
    name, kind = oip_name, "logprob"
    if oip_name not in svc.registry.versions and oip_name.endswith(SAMPLER_SUFFIX):
        name, kind = oip_name[:-len(SAMPLER_SUFFIX)], "sample"
    try:
        return svc.served(name, version), kind
    except ServiceError as err:
        if err.field != "model":  # an unknown version: its message names the available ones
            raise
        names = [n + s for n in svc.registry.models for s in ("", SAMPLER_SUFFIX)]
        raise ServiceError(404, f"unknown model {oip_name!r}; served: {', '.join(names) or 'none'}") from None


def _tensor_meta(name: str, shape: list[int], datatype: str = OUTPUT_DTYPE) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape}


async def model_metadata(svc, request: Request) -> Response:
    served, kind = resolve(svc, request.path_params["model"], request.path_params.get("version"))
    d = served.model.data_dim
    if kind == "logprob":
        inputs, outputs = [_tensor_meta("points", [-1, d])], [_tensor_meta("logprob", [-1])]
    else:
        inputs = [_tensor_meta("z", [-1, d])]
        outputs = [_tensor_meta("samples", [-1, d])]
        if served.model.spec.bijective:
            outputs.append(_tensor_meta("logprob", [-1]))
    versions = list(reversed(svc.registry.versions[served.name]))
    return JSONResponse({"name": request.path_params["model"], "versions": versions, "platform": PLATFORM,
                         "inputs": inputs, "outputs": outputs})


async def model_ready(svc, request: Request) -> Response:
    resolve(svc, request.path_params["model"], request.path_params.get("version"))
    return JSONResponse({"name": request.path_params["model"], "ready": True})


# -- inference ----------------------------------------------------------------------------------
async def infer(svc, request: Request) -> Response:
    oip_name = request.path_params["model"]
    version = request.path_params.get("version")
    served, kind = resolve(svc, oip_name, version)
    doc, tensors = await read_infer_request(request)
    params = _object(doc, "parameters", "parameters")
    allowed = SAMPLER_PARAMETERS if kind == "sample" else LOGPROB_PARAMETERS
    if not isinstance(params.get("binary_data_output", False), bool):  # checked before any solve
        raise ServiceError(400, "parameters.binary_data_output: expected true or false")
    _check_outputs(doc)  # a malformed request is a 400 even where its solve would time out
    unknown = sorted(set(params) - set(allowed) - PROTOCOL_PARAMETERS)
    if unknown:
        raise ServiceError(400, f"parameters.{unknown[0]}: not a parameter of {oip_name!r} "
                           f"(accepted: {', '.join(allowed)})")
    body = {"model": served.name, "version": served.version, **{k: params[k] for k in allowed if k in params}}
    wanted = {"sample": ("z",), "logprob": ("points",)}[kind]
    extra = sorted(set(tensors) - set(wanted))
    if extra:
        raise ServiceError(400, f"inputs: unknown input {extra[0]!r} of {oip_name!r} (inputs: {', '.join(wanted)})")
    if kind == "logprob":
        if "points" not in tensors:
            raise ServiceError(400, "inputs: the input 'points' is required")
        body["points"] = tensors["points"].astype(np.float64).tolist()
        req = _validated(LogprobRequest, body, "points")
        served, out, accuracy = await svc.solve_logprob(req)
        results, extra_params = {"logprob": out.logp}, {}
    else:
        z = tensors.get("z")
        if z is not None:
            if "n" in params:
                raise ServiceError(400, "parameters.n: give either the input z or the parameter n")
            body["n"] = z.shape[0]  # the schema's row limit applies to z
        if isinstance(body.get("chip"), str):
            body["chip"] = _chip_json(body["chip"])
        req = _validated(SampleRequest, body, "z" if z is not None else None)
        z_t = None if z is None else torch.from_numpy(np.ascontiguousarray(z, dtype=np.float64))
        if z_t is not None and not bool(torch.isfinite(z_t).all()):
            raise ServiceError(400, "z: every latent coordinate must be finite")
        served, out, seed, chip, accuracy = await svc.solve_sample(req, z_t)
        results = {"samples": out.x, "logprob": out.logp}
        extra_params = {"seed": seed}
        if chip is not None:
            from .chip import chip_info
            extra_params["chip"] = json.dumps(chip_info(chip))
    stats = out.stats
    response_params = {"status": stats.status.name.lower(), "nfe": stats.nfe, "solve_s": stats.wall_s,
                       "projected_chip_latency_s": served.projected_chip_latency_s, **extra_params,
                       # the protocol's parameter values are scalars: a null is left out
                       **{k: v for k, v in accuracy.items() if v is not None}}
    return render_infer_response(doc, oip_name, served.version, results, response_params)


def _validated(schema, body: dict, rows_field: str | None) -> dict:
    """``body`` checked by the native request ``schema``; 400 naming the input or parameter."""
    try:
        return schema.model_validate(body).model_dump()
    except ValidationError as err:
        e = err.errors()[0]
        loc = [str(p) for p in e.get("loc", ())]
        head = loc[0] if loc else "body"
        if head in ("points", "z"):
            where = ".".join(loc)
        elif head == "n" and rows_field:
            where = rows_field  # z's row count stands in for n
        else:
            where = "parameters." + ".".join(loc)
        raise ServiceError(400, f"{where}: {e['msg']}") from None


def _chip_json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ServiceError(400, f"parameters.chip: not a JSON object: {err}") from None


async def read_infer_request(request: Request) -> tuple[dict, dict[str, np.ndarray]]:
    """The request's JSON document and its input tensors by name (JSON ``data`` or binary)."""
    raw = await request.body()
    header_len = request.headers.get(HEADER_LENGTH)
    if header_len is not None:
        if not header_len.isdigit() or int(header_len) > len(raw):
            raise ServiceError(400, f"{HEADER_LENGTH}: not a length within the body")
        raw, binary = raw[:int(header_len)], raw[int(header_len):]
    else:
        binary = b""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ServiceError(400, f"body: not JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ServiceError(400, "inputs: expected an object with a list of inputs (which may be empty)")
    if not isinstance(doc.get("id", ""), str):
        raise ServiceError(400, "id: expected a string")
    tensors, offset = {}, 0
    for i, spec in enumerate(doc["inputs"]):
        name, array, offset = _input_tensor(i, spec, binary, offset)
        if name in tensors:
            raise ServiceError(400, f"inputs[{i}]: input {name!r} given twice")
        tensors[name] = array
    if offset != len(binary):
        raise ServiceError(400, f"body: {len(binary) - offset} bytes of binary data belong to no input")
    return doc, tensors


def _input_tensor(i: int, spec, binary: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    """One input: its name, its ``[rows, d]`` array, and the offset past its binary data."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ServiceError(400, f"inputs[{i}]: expected an object with a name")
    name, shape, datatype = spec["name"], spec.get("shape"), spec.get("datatype")
    if not isinstance(datatype, str) or datatype not in INPUT_DTYPES:
        raise ServiceError(400, f"inputs[{i}] ({name}): datatype {datatype!r} not accepted; "
                           f"use {' or '.join(INPUT_DTYPES)}")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise ServiceError(400, f"inputs[{i}] ({name}): shape must be [rows, d] (non-negative integers)")
    dtype = INPUT_DTYPES[datatype]
    size = _object(spec, "parameters", f"inputs[{i}].parameters").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise ServiceError(400, f"inputs[{i}] ({name}): binary_data_size past the end of the body")
        if size % dtype.itemsize:
            raise ServiceError(400, f"inputs[{i}] ({name}): binary_data_size is not a whole number of {datatype}")
        array = np.frombuffer(binary[offset:offset + size], dtype=dtype)
        offset += size
    else:
        try:
            if not isinstance(spec.get("data"), list):
                raise TypeError
            array = np.asarray(spec["data"], dtype=dtype).reshape(-1)
        except (TypeError, ValueError):
            raise ServiceError(400, f"inputs[{i}] ({name}): data must be a list of numbers") from None
    if array.size != shape[0] * shape[1]:
        raise ServiceError(400, f"inputs[{i}] ({name}): {array.size} values do not fill the shape {shape}")
    return name, array.reshape(shape), offset


def _object(container: dict, key: str, where: str) -> dict:
    """``container[key]`` when it is an object, empty when the key is absent; 400 naming ``where``
    otherwise (null included: the protocol's schema says object or leave it out)."""
    if key not in container:
        return {}
    value = container[key]
    if not isinstance(value, dict):
        raise ServiceError(400, f"{where}: expected an object")
    return value


def _check_outputs(doc: dict) -> None:
    """The requested ``outputs`` are absent or a list of objects with a string name, whose
    ``parameters`` are an object with a boolean ``binary_data`` if any (400 otherwise), checked
    before the solve so a malformed request never waits for one."""
    requested = doc.get("outputs", [])
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in requested):
        raise ServiceError(400, "outputs: expected a list of objects with a name (leave it out for every output)")
    for o in requested:
        where = f"outputs ({o['name']}).parameters"
        if not isinstance(_object(o, "parameters", where).get("binary_data", False), bool):
            raise ServiceError(400, f"{where}.binary_data: expected true or false")


def render_infer_response(doc: dict, oip_name: str, version: str, results: dict[str, torch.Tensor | None],
                          parameters: dict) -> Response:
    """The infer answer: the requested outputs (all when none is named) as JSON ``data``, or as
    binary tensors where the request asks for them (``binary_data`` / ``binary_data_output``)."""
    _check_outputs(doc)
    requested = doc.get("outputs")
    all_binary = bool((doc.get("parameters") or {}).get("binary_data_output", False))
    if requested is None:
        requested = [{"name": k} for k, v in results.items() if v is not None]
    outputs, chunks = [], []
    for o in requested:
        name = o.get("name")
        if results.get(name) is None:
            available = [k for k, v in results.items() if v is not None]
            raise ServiceError(400, f"outputs: {name!r} is not an output of {oip_name!r} for this request "
                               f"(outputs: {', '.join(available)})")
        array = results[name].detach().cpu().numpy().astype("<f8")
        entry = _tensor_meta(name, list(array.shape))
        if (o.get("parameters") or {}).get("binary_data", all_binary):  # types checked by _check_outputs
            data = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    answer = {"model_name": oip_name, "model_version": version, "parameters": parameters, "outputs": outputs}
    if "id" in doc:
        answer["id"] = doc["id"]
    header = json.dumps(answer).encode()  # NaN stays NaN (as the protocol's JSON clients read it)
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(header))})
