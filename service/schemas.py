"""Request and response bodies (flat JSON), validated by pydantic with the configured limits.

Limits that depend only on the settings (``n``, row count) are declared here so they appear
in the OpenAPI schema; limits that depend on the model (dimension) are checked per request.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from models.config import ChipConfig

from .config import current

_S = current()

ModelName = Annotated[str, Field(min_length=1, max_length=64, description="a served model, see GET /models",
                                 examples=["twomoon"])]
Version = Annotated[str | None, Field(None, min_length=1, max_length=64,
                                     description="a stored version of the model (GET /models/{name}/versions); "
                                                 "the latest when omitted")]
Timeout = Annotated[float | None, Field(None, ge=1e-3, le=_S.solve_timeout_s,
                                         description="wall-clock budget of this request's solve, seconds "
                                                     f"(default and maximum {_S.solve_timeout_s:g})")]
Tolerance = Annotated[float | None, Field(None, ge=1e-9, le=1e3, allow_inf_nan=False,
                                           description="largest acceptable error of log p, nats: the fewest-step "
                                                       "verified accuracy tier within it answers (default: the "
                                                       "1e-3 tier, else the most accurate, where the model has "
                                                       "tiers); 422 if none")]
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-_S.max_abs_coordinate, le=_S.max_abs_coordinate)]
# validated by the handler against models.config.ChipConfig (400 naming ``chip.<field>`` in the
# service's error shape); the OpenAPI schema shows ChipConfig's fields and bounds
_CHIP_SCHEMA = {**ChipConfig.model_json_schema(), "title": "Chip",
                "description": "an emulated chip instance (models.chip); every effect off = the ideal model"}
ChipObject = Annotated[dict[str, Any] | None, WithJsonSchema({"anyOf": [_CHIP_SCHEMA, {"type": "null"}]})]


class _Request(BaseModel):
    # strict: what the OpenAPI schema says is what is accepted (no true for 1, no "0.5" for 0.5)
    model_config = ConfigDict(extra="forbid", strict=True)


class SampleRequest(_Request):
    """``POST /sample``: draw ``n`` samples; the same seed gives the same samples."""

    model: ModelName = "twomoon"
    version: Version = None
    n: int = Field(4, ge=1, le=_S.max_samples, description="number of samples")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="latent seed; random when omitted")
    with_logprob: bool = Field(True, description="also return log q(x) (bijective models)")
    timeout_s: Timeout = None
    tolerance: Tolerance = None
    chip: ChipObject = Field(None, description="sample from an emulated chip: mismatch, quant_bits, switching_s, "
                             "noise, dac_bits, adc_bits, instance, … (docs/service.md)",
                             examples=[{"mismatch": 0.02, "quant_bits": 8, "instance": 7}])


class LogprobRequest(_Request):
    """``POST /logprob``: exact log-density of points, nats."""

    model: ModelName = "twomoon"
    version: Version = None
    points: list[list[Coordinate]] = Field(min_length=1, max_length=_S.max_points,
                                           description="points, shape (rows, data_dim)",
                                           examples=[[[0.5, 0.25], [-1.0, 0.5]]])
    timeout_s: Timeout = None
    tolerance: Tolerance = None


class _Solved(BaseModel):
    model: str = Field(description="served model name")
    version: str = Field(description="BentoML model store version")
    status: str = Field(description="solver status: success")
    nfe: int = Field(description="vector-field evaluations of the solve(s) that served the request")
    solve_s: float = Field(description="server-side solve wall time, seconds")
    projected_chip_latency_s: float = Field(description="projected analog-chip latency of one pass, seconds")
    accuracy_tier: float | None = Field(None, description="tolerance (nats) of the verified accuracy tier that "
                                        "answered; null when none did: the model has no verified tiers (it "
                                        "answers with its own solver, without a bound; GET /models/{name} "
                                        "warns) or the answer is an emulated chip's")
    error_bound: float | None = Field(None, description="verified max error of the returned log-densities, nats "
                                      "(the accuracy tier's, measured on held-out inputs: empirical); null "
                                      "without a log-density, a tier, or for an emulated chip")
    in_verified_region: bool | None = Field(None, description="every input lies in the region the tier was "
                                            "verified on (points: data box; sample: latent radius); null "
                                            "without a tier")


class SampleResponse(_Solved):
    samples: list[list[float | None]] = Field(description="(n, data_dim) samples")
    logprob: list[float | None] | None = Field(description="(n,) log q(x), nats; null if not requested")
    seed: int = Field(description="the seed used (echoed, or the one drawn)")
    chip: dict[str, Any] | None = Field(None, description="the emulated chip: {effects: [...], config: {...}}; "
                                        "null without chip")


class LogprobResponse(_Solved):
    logprob: list[float | None] = Field(description="(rows,) log-density, nats")


class NoopResponse(BaseModel):
    """``POST /noop/*`` (only with ``KNET_SERVICE_NOOP_ROUTES=true``): nothing was solved. A model,
    not a dict: BentoML builds a JSON schema for every dict it returns, which would slow the
    reference down and flatter the overhead benchmark."""

    status: str = Field("noop", description="always noop")
