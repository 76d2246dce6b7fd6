"""Errors in OpenAI's shape, so every OpenAI client understands why a request failed.

OpenAI answers a bad request with a 4xx status and a body like::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
               "code": null}}

The ``openai`` Python client turns that into ``BadRequestError``, ``AuthenticationError``,
``NotFoundError`` ... with the message attached. A server that answered bad input with a 500 (or
a stack trace) would tell the client nothing and look like a crash, so here every error a client
can cause becomes an `APIError`, and only real bugs reach the catch-all 500 handler.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("buildlm.serve")

# HTTP status -> OpenAI's error "type".
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    408: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error to send back as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers  # extra response headers (Retry-After for a 429)


class ClientLeft(Exception):
    """The client closed its connection before its request was read: nothing to answer, and
    nothing wrong with the server (logged in one line, no traceback)."""


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict:
    """OpenAI's error object."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else err.headers
    return JSONResponse(
        error_body(err.status, err.message, err.param, err.code), err.status, headers=headers
    )


# What a field that accepts several shapes should be, for a readable message when it is none.
SHAPES = {
    "prompt": "a string, a list of strings, a list of token ids, or a list of token-id lists",
    "stop": "a non-empty string or a list of at most 16 non-empty strings",
    "content": "a string or a list of {'type': 'text', 'text': ...} parts",
    "messages": "a non-empty list of {'role': ..., 'content': ...} messages",
}
# Pydantic names the member of a union it tried (``str``, ``list[int]``, ``TextPart``) in the
# error's location; those are not field names, so they are cut off.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|.*\[.*\]|[a-z]+-.*|[A-Z]\w*)$")


def validation_error(err: ValidationError | RequestValidationError) -> APIError:
    """Pydantic's list of problems -> one 400 naming the first bad field and what is wrong."""
    problems = err.errors()
    if not problems:
        return APIError(400, "the request body is not valid")
    first = problems[0]
    kind = first.get("type", "")
    loc: list[str] = []
    for part in first.get("loc", ()):
        if part == "body":
            continue
        if isinstance(part, str) and _UNION_MEMBER.match(part):
            break
        loc.append(str(part))
    param = ".".join(loc) or None
    if kind == "json_invalid":
        return APIError(400, f"the request body is not valid JSON ({first.get('msg')})", code=kind)
    if not loc:
        return APIError(400, "the request body must be a JSON object", code=kind or None)
    leaf = next((p for p in reversed(loc) if not p.isdigit()), "")
    same_field = [p for p in problems if p is not first and _starts_with(p.get("loc", ()), loc)]
    if same_field and leaf in SHAPES:  # several union members failed: say what fits
        return APIError(400, f"'{param}' must be {SHAPES[leaf]}", param=param, code="invalid_type")
    return APIError(400, f"'{param}': {first.get('msg')}", param=param, code=kind or None)


def _starts_with(loc: tuple, prefix: list[str]) -> bool:
    parts = [str(p) for p in loc if p != "body"]
    return parts[: len(prefix)] == prefix


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception a request can raise to an OpenAI-shaped JSON answer."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(ClientLeft)
    async def _client_left(request: Request, err: ClientLeft) -> Response:
        log.info("%s", err)
        return Response(status_code=400)  # nobody reads it: the connection is closed

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(err))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, err: ValidationError) -> JSONResponse:
        return error_response(validation_error(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = str(err.detail)
        if err.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see GET /v1/models"
        elif err.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(APIError(err.status_code, message))

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error while serving %s %s", request.method, request.url.path)
        return error_response(APIError(500, f"internal server error ({type(err).__name__})"))
