"""Admission: how many requests the server holds at once, and how long a body may take.

Every request the server has accepted costs memory until it is answered: the body read so far
(up to ``--max-body-bytes``), a task, a socket. A client that opens hundreds of connections and
sends each body slowly, or never finishes it, would make the server hold all of that forever.
So the server bounds it three ways:

1. **In flight.** At most ``max_connections`` requests are read or answered at once
   (`Admission`, an ASGI middleware around the app); the next one gets 429 with a
   ``Retry-After`` header and is not read. ``GET /health`` is always answered.
2. **Queued.** At most ``max_queued`` requests wait for a place in the batch (checked by the
   app when it submits one); past that, 429 as well: a queue that only grows helps nobody.
3. **Body time.** A body must arrive within ``body_timeout_s`` seconds (`read_body`), or the
   request gets 408 and its connection is closed. A connection that has not sent a request
   head within that time either is closed (`head_timeout_protocol`, for ``buildlm serve``).

A client that disconnects while sending its body is no error of the server's: it is logged in
one line, without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from buildlm.serve.errors import APIError, ClientLeft, error_body

log = logging.getLogger("buildlm.serve")

RETRY_AFTER_S = 1  # what a refused client is told to wait: a short generation's time


# On an answer sent before the body was read: without it the connection would stay open,
# waiting for the rest of a body nobody will read.
CLOSE = {"Connection": "close"}


def busy(message: str, close: bool = False) -> APIError:
    """A 429 telling the client to come back in `RETRY_AFTER_S` seconds."""
    headers = {"Retry-After": str(RETRY_AFTER_S), **(CLOSE if close else {})}
    return APIError(429, message, code="server_busy", headers=headers)


class Admission:
    """ASGI middleware: at most ``max_connections`` HTTP requests in the app at once."""

    def __init__(self, app: Any, max_connections: int) -> None:
        self.app = app
        self.max_connections = max_connections
        self.active = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_connections:
            err = busy(f"the server is handling {self.active} requests, its limit "
                       f"(--max-connections); retry in {RETRY_AFTER_S} s", close=True)  # fmt: skip
            response = JSONResponse(error_body(429, err.message, code=err.code), 429,
                                    headers=err.headers)  # fmt: skip
            await response(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes, and
    with 408 if it has not fully arrived after ``timeout_s`` seconds.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a body sent
    without one (chunked) is counted as it arrives and refused once it passes the limit, so a
    client can never make the server hold more than ``limit`` bytes, nor for long.
    """
    declared = request.headers.get("content-length")
    # (No Connection: close here: a client still sending would see a reset instead of the 413;
    # the rest of its body is read and dropped, never kept.)
    too_big = APIError(413, f"the request body is larger than this server's limit of {limit} bytes")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise too_big
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise too_big

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        raise APIError(
            408, f"the request body did not arrive within {timeout_s:g} s (got {len(body)} "
            "bytes); send it faster or raise the server's --body-timeout", headers=CLOSE,
        ) from None  # fmt: skip
    except ClientDisconnect:
        client = request.client
        who = f"{client.host}:{client.port}" if client else "a client"
        raise ClientLeft(f"{who} left after sending {len(body)} bytes of its request body") from None
    return bytes(body)



def head_timeout_protocol(seconds: float) -> type:
    """uvicorn's HTTP/1.1 protocol, closing a connection whose first request head has not
    arrived within ``seconds`` (uvicorn times out idle connections only between requests, so a
    client that connects and sends nothing, or a byte a minute, would hold a socket forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._head_timer = self.loop.call_later(seconds, self._close_if_silent)

        def _close_if_silent(self) -> None:
            if self.cycle is None and not self.transport.is_closing():  # no request began
                log.info("closed a connection that sent no request head within %g s", seconds)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_timer.cancel()
            super().connection_lost(exc)

    return HeadTimeoutH11Protocol
