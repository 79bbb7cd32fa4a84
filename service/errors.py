"""Errors as JSON answers, and the one table that maps solver statuses to HTTP codes.

Every error body is ``{"error": message, "field": name | null}``; no answer carries a
traceback (unexpected exceptions are logged and answered with a short 500).
"""
from __future__ import annotations

import functools
import logging
from http import HTTPStatus

from starlette.responses import JSONResponse

from models.solvers import SolveStats, Status

logger = logging.getLogger("knet.service")

# Solver outcome → HTTP status. Budgets are the server's limits, so an exhausted one is a
# gateway timeout; a non-finite or failed solve comes from the input (or the model's range).
STATUS_HTTP: dict[Status, HTTPStatus] = {
    Status.SUCCESS: HTTPStatus.OK,
    Status.MAX_STEPS: HTTPStatus.GATEWAY_TIMEOUT,
    Status.TIMEOUT: HTTPStatus.GATEWAY_TIMEOUT,
    Status.NONFINITE: HTTPStatus.UNPROCESSABLE_ENTITY,
    Status.SOLVER_ERROR: HTTPStatus.UNPROCESSABLE_ENTITY,
}


class ServiceError(Exception):
    """An expected failure with its HTTP status; ``field`` names the request field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.field = field
        self.headers = headers or {}


def solve_error(stats: SolveStats, model: str) -> ServiceError:
    """The answer to a failed solve: 504 naming the exhausted budget, or 422."""
    status = STATUS_HTTP[stats.status]
    what = stats.message or stats.status.name.lower()
    if status == HTTPStatus.GATEWAY_TIMEOUT:
        limit = ("timeout_s / KNET_SERVICE_SOLVE_TIMEOUT_S" if stats.status == Status.TIMEOUT
                 else "KNET_SERVICE_MAX_SOLVER_STEPS")
        return ServiceError(status, f"model {model!r}: solve stopped: {what} (limit: {limit})")
    return ServiceError(status, f"model {model!r}: solve failed: {what}; "
                        "the input is probably outside the range the model can integrate")


def error_response(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def json_errors(handler):
    """Wrap an async API handler: :class:`ServiceError` → its JSON answer; anything else →
    logged with its traceback, answered with a 500 JSON body without one."""
    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        try:
            return await handler(*args, **kwargs)
        except ServiceError as err:
            return error_response(err.status, err.message, err.field, err.headers)
        except Exception:
            logger.exception("unexpected error in %s", handler.__name__)
            return error_response(500, "internal error; see the server log")
    return wrapper
