"""The OpenAPI schema served at ``/docs.json`` (and so the Swagger page at ``/``): BentoML's
schema of the POST endpoints, completed so that it tells the truth.

BentoML documents only the ``@bentoml.api`` endpoints, declares 400/404/500 bodies that are not
ours, and cannot know the shape rules that depend on the served models. Here, once the models are
loaded, the schema gains: every GET route (models, versions, artifacts, web pages) and the Open
Inference Protocol routes; every status each route answers, with its body (the error bodies of
service/errors.py; 413/415/429 from the limits middleware; 422 and 504 of the solve); the served
model names and versions; and, per model, the exact row length of ``points`` (its ``data_dim``).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from http import HTTPStatus

from .oip import SAMPLER_SUFFIX
from .schemas import LogprobRequest, LogprobResponse, NoopResponse, SampleRequest, SampleResponse
from .store import FIGURE_FILES

REF = "#/components/schemas/{}"
ERROR = {"type": "object", "title": "Error", "required": ["error"],
         "description": "an error: the message, the request field at fault (or null); BentoML's own validation "
                        "answers add the pydantic error list as detail",
         "properties": {"error": {"type": "string"}, "field": {"type": "string", "nullable": True},
                        "detail": {"type": "array", "items": {"type": "object"}}}}
# BentoML answers a body it cannot parse (malformed JSON) with a one-element list of the error object
ERROR_LIST = {"type": "array", "title": "ErrorList", "minItems": 1, "maxItems": 1,
              "items": {"$ref": REF.format("Error")}}
OIP_ERROR = {"type": "object", "title": "OIPError", "required": ["error"], "properties": {"error": {"type": "string"}}}
MODEL_INFO = {"type": "object", "title": "ModelInfo", "required": ["name", "version", "data_dim"],
              "description": "a served model version's metadata (service/store.py checkpoint_metadata)",
              "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                             "created": {"type": "string", "nullable": True}, "data_dim": {"type": "integer"},
                             "layers": {"type": "integer"}, "bijective": {"type": "boolean"},
                             "projected_chip_latency_s": {"type": "number"}, "torch_device": {"type": "string"},
                             "transistor_level": {
                                 "type": "object", "nullable": True,
                                 "description": "the chip simulated at transistor level (transistor.json), beside "
                                                "the behavioural projection; null when not simulated"}}}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
WHY = {400: "a field is invalid (named in the body)", 404: "unknown model, version, artifact or route",
       413: "body over KNET_SERVICE_MAX_BODY_BYTES", 415: "form bodies: send JSON",
       422: "the solve failed or is undefined for this model (e.g. non-finite values)",
       429: "too many requests in flight (KNET_SERVICE_MAX_CONCURRENCY); retry after Retry-After",
       500: "unexpected; logged server-side", 503: "the service is starting",
       504: "the solve ran past its step or wall-clock budget (named in the body)"}
SOLVE_ERRORS = (400, 404, 413, 415, 422, 429, 500, 504)
NOOP_ERRORS = (400, 413, 415, 429, 500)  # the request is validated, nothing is looked up or solved
GET_ERRORS = (404, 429, 500, 503)


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _responses(ok: dict, errors, error_schema: str = "Error", ok_text: str = "OK") -> dict:
    out = {"200": {"description": ok_text, "content": ok}}
    for code in errors:
        schema = {"$ref": REF.format(error_schema)}
        if code == 400 and error_schema == "Error":
            schema = {"anyOf": [schema, {"$ref": REF.format("ErrorList")}]}
        out[str(code)] = {"description": f"{HTTPStatus(code).phrase}: {WHY[code]}", "content": _json(schema)}
        if code == 404:  # a path no route matches (e.g. a name with '/' or a newline): the router's text
            out[str(code)]["content"]["text/plain"] = {"schema": {"type": "string"}}
        if code == 429:
            out[str(code)]["headers"] = RETRY_AFTER
    return out


def _param(name: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _get(summary: str, ok: dict, params=(), errors=GET_ERRORS, tag: str = "Models") -> dict:
    return {"get": {"summary": summary, "tags": [tag], "parameters": list(params), "responses": _responses(ok, errors)}}


def artifact_types() -> dict[str, str]:
    """Artifact kind → content type, for every kind ``GET /models/{name}/artifacts/{kind}`` serves."""
    try:
        from export.artifacts import ARTIFACT_KINDS, CHECKPOINT_FILE_KINDS
    except ImportError:  # the route answers 503 then
        return {}
    return {**{k: a.content_type for k, a in ARTIFACT_KINDS.items()},
            **{k: a.content_type for k, (_, a) in CHECKPOINT_FILE_KINDS.items()}}


def complete(spec: dict, registry, artifact_types: dict[str, str]) -> dict:
    """``spec`` (BentoML's, as a dict) completed with the routes, statuses, bodies and shape rules
    of the service serving ``registry``; ``artifact_types`` maps artifact kind → content type."""
    spec = json.loads(json.dumps(spec))  # a deep copy, with keys as JSON has them (status codes as strings)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(Error=ERROR, ErrorList=ERROR_LIST, OIPError=OIP_ERROR, ModelInfo=MODEL_INFO)
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):  # BentoML's bodies, not ours
        schemas.pop(name, None)
    for path, request, response, errors in (("/sample", SampleRequest, SampleResponse, SOLVE_ERRORS),
                                            ("/logprob", LogprobRequest, LogprobResponse, SOLVE_ERRORS),
                                            ("/noop/sample", SampleRequest, NoopResponse, NOOP_ERRORS),
                                            ("/noop/logprob", LogprobRequest, NoopResponse, NOOP_ERRORS)):
        if path not in spec["paths"]:  # the no-op routes exist only with KNET_SERVICE_NOOP_ROUTES=true
            continue
        # the bodies from the pydantic models themselves: BentoML's copies drop which fields may be null
        op = spec["paths"][path]["post"]
        body = request.model_json_schema()
        # every field of a sample request has a default, so no body at all means {} (and is served)
        op["requestBody"] = {"required": bool(body.get("required")), "content": _json(_nullable(body))}
        op["responses"] = {"200": {"description": "OK", "content": _json(_nullable(response.model_json_schema()))},
                           **_responses({}, errors)}
    _state_served_models(spec, registry)
    spec["paths"].update(_model_routes(registry, artifact_types))
    spec["paths"].update(_oip_routes(registry))
    return _nullable(spec)


def _nullable(node):
    """pydantic's JSON Schema nulls (``anyOf: [X, {type: null}]``) as OpenAPI 3.0 says them
    (``nullable: true``), so that null is valid where pydantic accepts it."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            node = {**rest[0], **node}
        else:
            node["anyOf" if len(rest) > 1 else "allOf"] = rest
        node["nullable"] = True
    return node


def _state_served_models(spec: dict, registry) -> None:
    """Model names and versions as enums; ``points`` rows exactly the model's dimension."""
    names = sorted(registry.models)
    if not names:
        return
    versions = {n: [*reversed(registry.versions[n]), "latest"] for n in names}
    sample = spec["paths"]["/sample"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    sample["properties"]["model"]["enum"] = names
    sample["properties"]["version"] = {**_version_schema(sample), "enum": [None, *sorted({v for vs in versions.values()
                                                                                          for v in vs})]}
    if sample["properties"]["model"].get("default") not in names:
        sample["properties"]["model"].pop("default", None)
        sample.setdefault("required", []).append("model")
    body = spec["paths"]["/logprob"]["post"]["requestBody"]["content"]["application/json"]
    base = body["schema"]
    variants = []
    for name in names:
        served = registry.models[name]
        v = copy.deepcopy(base)
        v["title"] = f"LogprobRequest[{name}]"
        v["properties"]["model"] = {**v["properties"]["model"], "enum": [name]}
        v["properties"]["version"] = {**_version_schema(v), "enum": [None, *versions[name]]}
        d = served.model.data_dim
        v["properties"]["points"]["items"].update(minItems=d, maxItems=d)
        v["properties"]["points"]["description"] = f"points, shape (rows, {d}) for model {name!r}"
        if v["properties"]["model"].get("default") != name:
            v["properties"]["model"].pop("default", None)
            v["required"] = [*v.get("required", []), "model"]
        v["additionalProperties"] = False
        variants.append(v)
    if variants:
        body["schema"] = {"oneOf": variants}


def _version_schema(body_schema: dict) -> dict:
    s = {k: v for k, v in body_schema["properties"]["version"].items() if k not in ("anyOf", "default")}
    return {**s, "type": "string", "nullable": True}


def _model_routes(registry, artifact_types: dict[str, str]) -> dict:
    name = _param("name", {"type": "string", "enum": sorted(registry.models)} if registry.models else None)
    info = {"allOf": [{"$ref": REF.format("ModelInfo")}]}
    binary = {"type": "string", "format": "binary"}
    html = {"text/html": {"schema": {"type": "string"}}}
    page_errors = {str(c): {"description": f"{HTTPStatus(c).phrase}: {WHY[c]} (an HTML page)", "content": {**html}}
                   for c in (404, 500, 503)}
    page_errors["404"]["content"]["text/plain"] = {"schema": {"type": "string"}}  # a path no route matches
    page_errors["429"] = _responses({}, (429,))["429"]
    return {
        "/models": _get("every served model (latest versions) and the unloadable ones",
                        _json({"type": "object", "required": ["models", "unavailable"],
                               "properties": {"models": {"type": "array", "items": {"$ref": REF.format("ModelInfo")}},
                                              "unavailable": {"type": "object",
                                                              "additionalProperties": {"type": "string"}}}}),
                        errors=(429, 500, 503)),
        "/models/{name}": _get("a model's metadata, artifact links and robustness summary (latest version)",
                               _json(info), [name]),
        "/models/{name}/versions": _get(
            "every served version of a model, newest first",
            _json({"type": "object", "required": ["name", "latest", "versions"],
                   "properties": {"name": {"type": "string"}, "latest": {"type": "string"},
                                  "versions": {"type": "array", "items": {"$ref": REF.format("ModelInfo")}}}}),
            [name]),
        "/models/{name}/artifacts/{kind}": _get(
            "a hardware artifact of the model's latest version (as `knet export` writes it)",
            {t: {"schema": {"type": "object"} if t == "application/json" else binary}
             for t in sorted(set(artifact_types.values()))},
            [name, _param("kind", {"type": "string", "enum": sorted(artifact_types)})],
            errors=(404, 422, 429, 500, 503)),
        "/ui": {"get": {"summary": "web page: every served model", "tags": ["Web pages"],
                        "responses": {"200": {"description": "OK", "content": html}, **page_errors}}},
        "/ui/{name}": {"get": {"summary": "web page of one model", "tags": ["Web pages"], "parameters": [name],
                               "responses": {"200": {"description": "OK", "content": html}, **page_errors}}},
        "/ui/{name}/figures/{file}": {"get": {
            "summary": "a picture stored with the model", "tags": ["Web pages"],
            "parameters": [name, _param("file", {"type": "string", "enum": list(FIGURE_FILES)})],
            "responses": {"200": {"description": "OK", "content": {"image/png": {"schema": binary}}}, **page_errors}}},
    }


_SAMPLE_FIELDS = _nullable(SampleRequest.model_json_schema())["properties"]
INFER_REQUEST = {
    "type": "object", "title": "InferRequest", "required": ["inputs"],
    "description": "Open Inference Protocol request: log-density models take `points` [rows, d] and the parameters "
                   "timeout_s and tolerance; samplers `z` [rows, d] or none (then the parameters n, seed) and the "
                   "same two; `data` holds rows × d numbers (docs/service.md)",
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "additionalProperties": False, "properties": {
            **{k: _SAMPLE_FIELDS[k] for k in ("n", "seed", "with_logprob", "timeout_s", "tolerance")},
            "chip": {"anyOf": [_SAMPLE_FIELDS["chip"], {"type": "string", "description": "the chip as JSON text"}]},
            "binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string", "enum": ["points", "z"]},
                           "shape": {"type": "array", "items": {"type": "integer", "minimum": 0},
                                     "minItems": 2, "maxItems": 2},
                           "datatype": {"type": "string", "enum": ["FP64", "FP32"]},
                           "data": {"type": "array", "items": {"type": "number"}},
                           "parameters": {"type": "object"}}}},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                               "properties": {"name": {"type": "string"},
                                                              "parameters": {"type": "object"}}}},
    },
}
TENSOR = {"type": "object", "required": ["name", "datatype", "shape"],
          "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                         "shape": {"type": "array", "items": {"type": "integer"}},
                         "data": {"type": "array", "items": {"type": "number"}}, "parameters": {"type": "object"}}}


def _oip_routes(registry) -> dict:
    def get(summary, ok, params=(), errors=(404, 429, 500, 503)):
        return {"get": {"summary": summary, "tags": ["Open Inference Protocol"], "parameters": list(params),
                        "responses": _responses(ok, errors, "OIPError")}}
    names = sorted(n + suffix for n in registry.models for suffix in ("", SAMPLER_SUFFIX))
    versions = sorted({v for vs in registry.versions.values() for v in vs})
    model = _param("model", {"type": "string", "enum": names} if names else None)
    version = _param("version", {"type": "string", "enum": versions} if versions else None)
    metadata = _json({"type": "object", "required": ["name", "platform", "inputs", "outputs"],
                      "properties": {"name": {"type": "string"},
                                     "versions": {"type": "array", "items": {"type": "string"}},
                                     "platform": {"type": "string"}, "inputs": {"type": "array", "items": TENSOR},
                                     "outputs": {"type": "array", "items": TENSOR}}})
    ready = _json({"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}})
    answer = {"type": "object", "required": ["model_name", "outputs"],
              "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                             "id": {"type": "string"}, "parameters": {"type": "object"},
                             "outputs": {"type": "array", "items": TENSOR}}}
    infer_ok = {**_json(answer), "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    paths = {
        "/v2": get("server metadata", _json({"type": "object", "required": ["name", "version", "extensions"]}),
                   errors=(429, 500, 503)),
        "/v2/health/live": get("liveness", _json({"type": "object"}), errors=(429, 500, 503)),
        "/v2/health/ready": get("readiness (503 until a model is loaded)", _json({"type": "object"}),
                                errors=(429, 500, 503)),
    }
    for base, params in (("/v2/models/{model}", [model]), ("/v2/models/{model}/versions/{version}", [model, version])):
        paths[base] = get("model metadata: inputs, outputs, datatypes, shapes, versions", metadata, params)
        paths[base + "/ready"] = get("model readiness", ready, params)
        paths[base + "/infer"] = {"post": {
            "summary": "inference (JSON tensors, or the binary tensor extension)", "tags": ["Open Inference Protocol"],
            "parameters": params, "requestBody": {"required": True, "content": _json(INFER_REQUEST)},
            "responses": _responses(infer_ok, SOLVE_ERRORS, "OIPError")}}
    return paths


class OpenAPIMiddleware:
    """Answers ``GET /docs.json`` with :func:`complete` of BentoML's schema once the models are
    loaded (``registry()`` not None), computed once; BentoML's own answer before that."""

    def __init__(self, app, bentoml_spec: Callable[[], dict], registry: Callable):
        self.app = app
        self.bentoml_spec = bentoml_spec
        self.registry = registry
        self._body: bytes | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/docs.json" or scope["method"] not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        registry = self.registry()
        if registry is None or not registry.ready:
            return await self.app(scope, receive, send)
        if self._body is None:
            self._body = json.dumps(complete(self.bentoml_spec(), registry, artifact_types())).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else self._body})
