"""Pure ASGI middleware in front of the app: bearer token, body size limit, body read timeout, request
metrics, and a JSON 500 with `Connection: close` for anything that escapes the routes."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

OPEN_PATHS = ("/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json")
CLOSE = [(b"connection", b"close")]
log = logging.getLogger("statefulrnn.server")


async def send_json(send: Callable, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Checks the token and reads the whole body (at most `max_body` bytes, within `body_timeout` seconds)
    before the app sees the request; records every request's route, status and latency."""

    def __init__(
        self, app: Callable, *, token: str | None, max_body: int, body_timeout: float, record: Callable
    ) -> None:
        self.app, self.max_body, self.body_timeout, self.record = app, max_body, body_timeout, record
        self.expected = None if token is None else b"Bearer " + token.encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [0]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_status)
        except Exception as e:
            if status[0]:  # the answer has begun: all the server can do is drop the connection
                raise
            log.exception("%s %s failed", scope["method"], scope["path"])
            await send_json(send_status, 500, {"error": f"internal error: {type(e).__name__}"}, CLOSE)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.record(scope["method"], route, status[0] or 500, time.perf_counter() - start)

    async def _guarded(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"] not in OPEN_PATHS:
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                await send_json(
                    send, 401, {"error": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")]
                )
                return
        too_large = {"error": f"the request body is larger than the limit of {self.max_body} bytes"}
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_body:
            await send_json(send, 413, too_large, CLOSE)
            return
        body = await self._read_body(receive, send, too_large)
        if body is None:
            return
        delivered = [False]

        async def replay() -> dict[str, Any]:
            if not delivered[0]:
                delivered[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Callable, send: Callable, too_large: dict) -> bytes | None:
        """The whole body, or None once an answer (413, 408) was sent or the client left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                error = {"error": f"the request body did not arrive within {self.body_timeout:g} s"}
                await send_json(send, 408, error, CLOSE)
                return None
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await send_json(send, 413, too_large, CLOSE)
                return None
            if not message.get("more_body"):
                return b"".join(chunks)
