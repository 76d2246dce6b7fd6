"""Who may reach the server through a web browser: the Host, Origin and Content-Type checks.

A server on 127.0.0.1 without ``--api-key`` trusts everyone who can connect to it. Programs on
the machine can, and that is the point; but every web page the user opens can too, through the
browser, in two ways:

- **Cross-origin requests.** Any page may POST a ``text/plain`` (or form) body to any address
  without asking first (a "simple" request). The browser hides the answer from the page, but
  the server has already generated: the page spends the user's machine.
- **DNS rebinding.** ``evil.example`` first resolves to the attacker's server, which sends a
  page; then it resolves to 127.0.0.1. The page's requests to ``evil.example`` now reach this
  server *as the same origin*, so the page reads the answers too. Only the ``Host`` header
  (``evil.example:8000``) gives it away.

So before any route runs, `WebGuard` checks every request:

1. **Host** must be a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``), the address the
   server is bound to, or a name given with ``--allowed-hosts`` (``*`` turns the check off).
   Bound to ``0.0.0.0``, any IP address is accepted (rebinding needs a *name*). Else 400.
2. **Origin**, which browsers send with cross-origin requests and with every ``fetch`` POST,
   must be the server itself (its own chat page) or an origin named with ``--cors-origin``.
   Programs (curl, the ``openai`` client) send none and are not affected. Else 403.
3. **Content-Type** of a POST must be ``application/json`` when given (a browser can only send
   the other types without asking first). Else 415.
4. For a ``--cors-origin`` origin, the browser's preflight (``OPTIONS``) is answered, and
   answers carry ``Access-Control-Allow-Origin`` naming that origin (never ``*``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from buildlm.serve.errors import error_body

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def host_name(host: str) -> str:
    """``Host`` header -> the bare name: no port, no IPv6 brackets, lowercase, no final dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


@dataclass(frozen=True)
class WebPolicy:
    """Which hosts and web origins the server answers (``buildlm serve`` flags)."""

    allowed_hosts: Sequence[str] = ()
    """Host names (or addresses) accepted besides the loopback ones: the bound address and
    ``--allowed-hosts``. ``"*"`` accepts any Host (only behind a proxy that checks it)."""
    cors_origins: Sequence[str] = ()
    """Web origins (``https://app.example``) whose pages may call the API (``--cors-origin``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", tuple(host_name(h) for h in self.allowed_hosts))
        origins = tuple(o.strip().rstrip("/").lower() for o in self.cors_origins)
        for origin in origins:
            if origin == "*" or "://" not in origin:
                raise ValueError(
                    f"--cors-origin {origin!r} is not an origin; name one like "
                    "'https://app.example' or 'http://localhost:3000' ('*' is not allowed)"
                )
        object.__setattr__(self, "cors_origins", origins)

    def host_allowed(self, host: str) -> bool:
        """Whether a request with this ``Host`` header is meant for this server."""
        name = host_name(host)
        if "*" in self.allowed_hosts or name in LOOPBACK_NAMES or name in self.allowed_hosts:
            return True
        if name.endswith(".localhost"):  # browsers resolve these to loopback themselves
            return True
        ip = _ip(name)
        if ip is None:
            return False
        return ip.is_loopback or any(h in WILDCARD_ADDRESSES for h in self.allowed_hosts)


class WebGuard:
    """ASGI middleware applying a `WebPolicy` to every HTTP request before the app sees it."""

    def __init__(self, app: Any, policy: WebPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        if host is not None and not self.policy.host_allowed(host):
            shown = host_name(host)
            await self._refuse(scope, receive, send, 400, f"Host {shown!r} is not served here "
                               f"(a DNS rebinding attack looks like this); if you reach this "
                               f"server by that name, start it with --allowed-hosts {shown}")  # fmt: skip
            return
        origin = headers.get("origin")
        cors = origin is not None and origin.rstrip("/").lower() in self.policy.cors_origins
        if origin is not None and not cors and not _same_origin(origin, host):
            await self._refuse(scope, receive, send, 403, f"cross-origin request from {origin!r} "
                               f"refused; start the server with --cors-origin {origin} to allow "
                               "that web page to use it")  # fmt: skip
            return
        method = scope["method"]
        if cors and method == "OPTIONS" and "access-control-request-method" in headers:
            await Response(status_code=204, headers=_cors_headers(origin, preflight=True))(
                scope, receive, send
            )
            return
        kind = headers.get("content-type")
        if method == "POST" and kind is not None and _media_type(kind) != "application/json":
            await self._refuse(scope, receive, send, 415, f"Content-Type {kind!r} is not "
                               "accepted; send the body as JSON with 'Content-Type: "
                               "application/json'")  # fmt: skip
            return
        if not cors:
            await self.app(scope, receive, send)
            return
        extra = [(k.encode(), v.encode()) for k, v in _cors_headers(origin).items()]

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _refuse(self, scope, receive, send, status: int, message: str) -> None:
        await JSONResponse(error_body(status, message), status_code=status)(scope, receive, send)


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` is this server itself (its chat page), as the client reached it."""
    if host is None:
        return False
    origin = origin.rstrip("/").lower()
    return origin in (f"http://{host.lower()}", f"https://{host.lower()}")


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _cors_headers(origin: str, preflight: bool = False) -> dict[str, str]:
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        }
    return headers
