"""Web pages the user visits cannot use the server: cross-origin requests, non-JSON POSTs and
unknown Host names (DNS rebinding) are refused before any generation; a named origin works."""

from __future__ import annotations

import json

import httpx
import pytest

from buildlm.serve import ServeLimits
from buildlm.serve.web_guard import WebPolicy

EVIL = "http://evil.example"


def body(model_name: str) -> dict:
    return {"model": model_name, "prompt": "I had", "max_tokens": 2}


def assert_refused(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert "access-control-allow-origin" not in response.headers


def test_other_sites_and_rebound_names_cannot_generate(server, model_name):
    stats = server.scheduler.stats
    submitted = stats.requests_submitted
    raw = json.dumps(body(model_name))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # A page on another site POSTs a "simple" text/plain request (no preflight needed).
        simple = {"Origin": EVIL, "Content-Type": "text/plain;charset=UTF-8"}
        assert_refused(http.post("/v1/completions", content=raw, headers=simple), 403,
                       "--cors-origin http://evil.example")  # fmt: skip
        # Even as JSON, and for reads: another site's page gets nothing.
        assert_refused(http.post("/v1/completions", json=body(model_name),
                                 headers={"Origin": EVIL}), 403, "cross-origin")  # fmt: skip
        assert_refused(http.get("/v1/models", headers={"Origin": EVIL}), 403, "cross-origin")
        # A form or text body without an Origin (a browser never omits it, but be strict).
        assert_refused(http.post("/v1/completions", content=raw,
                                 headers={"Content-Type": "text/plain"}), 415,
                       "application/json")  # fmt: skip
        # DNS rebinding: evil.example now resolves to 127.0.0.1, so the page is "same-origin";
        # only the Host header tells, and it is refused, for reads too.
        rebound = {"Host": f"evil.example:{server.port}",
                   "Origin": f"http://evil.example:{server.port}"}  # fmt: skip
        assert_refused(http.post("/v1/completions", json=body(model_name), headers=rebound),
                       400, "--allowed-hosts evil.example")  # fmt: skip
        assert_refused(http.get("/health", headers={"Host": "evil.example"}), 400, "Host")
        assert_refused(http.get("/", headers={"Host": "evil.example"}), 400, "Host")
        assert stats.requests_submitted == submitted  # nothing was generated
        # The server's own chat page (same origin), and programs without an Origin, still work.
        own = {"Origin": server.url}
        assert http.post("/v1/completions", json=body(model_name), headers=own).is_success
        assert http.post("/v1/completions", json=body(model_name)).is_success
        for host in ("localhost", f"localhost:{server.port}", f"[::1]:{server.port}"):
            assert http.get("/health", headers={"Host": host}).is_success, host


def test_a_named_origin_and_host_are_allowed(start_server, model_name):
    app_origin = "http://app.example:3000"
    live = start_server(ServeLimits(max_tokens=8), web=WebPolicy(
        allowed_hosts=["mybox.lan"], cors_origins=[app_origin]))  # fmt: skip
    with httpx.Client(base_url=live.url, timeout=30) as http:
        preflight = http.options("/v1/chat/completions", headers={
            "Origin": app_origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})  # fmt: skip
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == app_origin
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "Content-Type" in preflight.headers["access-control-allow-headers"]
        reply = http.post("/v1/completions", json=body(model_name), headers={"Origin": app_origin})
        assert reply.is_success and reply.headers["access-control-allow-origin"] == app_origin
        assert reply.headers["vary"] == "Origin"
        assert_refused(http.post("/v1/completions", json=body(model_name),
                                 headers={"Origin": EVIL}), 403, "cross-origin")  # fmt: skip
        assert http.get("/health", headers={"Host": "mybox.lan:8000"}).is_success
        assert_refused(http.get("/health", headers={"Host": "other.lan"}), 400, "other.lan")
    live.stop()


def test_policy_checks_hosts_and_origins():
    loopback = WebPolicy(allowed_hosts=["127.0.0.1"])
    assert loopback.host_allowed("127.0.0.1:8000") and loopback.host_allowed("[::1]:80")
    assert loopback.host_allowed("LOCALHOST.") and loopback.host_allowed("app.localhost")
    assert not loopback.host_allowed("192.168.1.5:8000")
    assert not loopback.host_allowed("127.0.0.1.evil.example")
    everywhere = WebPolicy(allowed_hosts=["0.0.0.0"])  # any address; names still refused
    assert everywhere.host_allowed("192.168.1.5:8000") and not everywhere.host_allowed("a.b")
    assert WebPolicy(allowed_hosts=["*"]).host_allowed("anything.example")
    with pytest.raises(ValueError, match="not an origin"):
        WebPolicy(cors_origins=["*"])
