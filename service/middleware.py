"""ASGI middleware in front of every route: body size (413), concurrency (429), form bodies (415), and a
catch-all that turns any escaped exception into a JSON 500 without a traceback.

BentoML itself has no request-size limit and its own concurrency limit sends no
``Retry-After``, hence this. Probes and ``/metrics`` are never limited, so they answer
under overload.
"""
from __future__ import annotations

import json
import logging

logger = logging.getLogger("knet.service")

UNLIMITED_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready"})


async def _send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class LimitsMiddleware:
    """Reject oversized bodies (Content-Length or counted chunks) with 413 and requests past
    ``max_concurrency`` in flight with 429 + ``Retry-After``; the body is read here and
    replayed to the app, so the app never sees more than ``max_body_bytes``."""

    def __init__(self, app, max_body_bytes: int, max_concurrency: int, retry_after_s: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_concurrency = max_concurrency
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_concurrency:
            return await _send_json(send, 429, {"error": f"too many requests in flight (limit "
                                                f"{self.max_concurrency}, KNET_SERVICE_MAX_CONCURRENCY); retry later",
                                                "field": None}, {"Retry-After": str(self.retry_after_s)})
        self.in_flight += 1
        try:
            await self._limited(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _limited(self, scope, receive, send):
        too_big = {"error": f"request body larger than {self.max_body_bytes} bytes "
                            "(KNET_SERVICE_MAX_BODY_BYTES)", "field": None}
        headers = dict(scope.get("headers") or [])
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/"):
            # every endpoint takes JSON; BentoML would try (and fail) to parse form data
            return await _send_json(send, 415, {"error": "send the body as application/json", "field": None})
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await _send_json(send, 413, too_big)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await _send_json(send, 413, too_big)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, replay, tracking_send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, 500, {"error": "internal error; see the server log", "field": None})
