"""Bad input gets a 4xx in OpenAI's error shape, and the server stays up through all of it."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildlm.serve import ServeLimits


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def assert_error(response: httpx.Response, status: int, fragment: str = "", param=None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and fragment in error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def assert_alive(http: httpx.Client) -> None:
    assert http.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "body", "fragment", "param"),
    [
        ("/v1/chat/completions", b"{not json", "not valid JSON", None),
        ("/v1/chat/completions", b"", "not valid JSON", None),
        ("/v1/completions", b"\xff\xfe\x00", "not valid JSON", None),
        ("/v1/completions", b"[1, 2]", "JSON object", None),
        ("/v1/completions", b'{"prompt": "hi"}', "Field required", "model"),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": 5}',
            "'prompt' must be",
            "prompt",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": "hi", "max_tokens": "9"}',
            "valid integer",
            "max_tokens",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": "hi", "max_tokens": -3}',
            "greater than or equal to 1",
            "max_tokens",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": "hi", "stream": "yes"}',
            "valid boolean",
            "stream",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": "hi", "temperature": 7}',
            "temperature",
            "temperature",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": "hi", "top_p": 0}',
            "greater than 0",
            "top_p",
        ),
        ("/v1/completions", b'{"model": "tiny-verdict", "prompt": "hi", "n": 500}', "n=500", "n"),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": "hi", "max_tokens": 99999}',
            "more than this server allows",
            "max_tokens",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": [5, 100000]}',
            "not in the vocabulary",
            "prompt",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": "", "max_tokens": 2}',
            "empty",
            "prompt",
        ),
        (
            "/v1/completions",
            b'{"model": "tiny-verdict", "prompt": "hi", "stop": ""}',
            "'stop' must be",
            "stop",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "tiny-verdict", "messages": []}',
            "at least 1 item",
            "messages",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "tiny-verdict", "messages": [{"role": "wizard", "content": "hi"}]}',
            "Input should be",
            "messages.0.role",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "tiny-verdict", "messages": [{"role": "user", "content": 3}]}',
            "'messages.0.content' must be",
            "messages.0.content",
        ),
        (
            "/v1/tokenize",
            b'{"text": "a", "messages": [{"role": "user", "content": "b"}]}',
            "exactly one",
            None,
        ),
        ("/v1/attention", b'{"text": "a b c", "layer": 9}', "layer 9", "layer"),
    ],
)
def test_bad_requests_are_400(http, path, body, fragment, param):
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, fragment, param)
    assert_alive(http)


def test_unknown_model_and_route_are_404(http):
    response = http.post("/v1/chat/completions", json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    error = assert_error(response, 404, "gpt-4o", "model")
    assert error["type"] == "not_found_error" and error["code"] == "model_not_found"
    assert_error(http.get("/v1/engines"), 404, "no route")
    assert_error(http.get("/v1/completions"), 405)


def test_a_10_mb_body_is_413_before_parsing(http, server):
    body = b'{"model": "tiny-verdict", "prompt": "' + b"a" * 10_000_000 + b'"}'
    assert_error(http.post("/v1/completions", content=body), 413, "limit of 200000 bytes")

    def chunked():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b"a" * 100_000

    assert_error(http.post("/v1/completions", content=chunked()), 413)
    assert_alive(http)


def test_a_prompt_longer_than_the_context_is_400(http, model_name):
    long_prompt = "I had always thought Jack Gisburn rather a cheap genius. " * 20
    error = assert_error(
        http.post("/v1/completions", json={"model": model_name, "prompt": long_prompt}), 400,
        "more than the 128 allowed", "prompt",
    )  # fmt: skip
    assert error["code"] == "context_length_exceeded"
    messages = [{"role": "user", "content": long_prompt}]
    response = http.post("/v1/chat/completions", json={"model": model_name, "messages": messages})
    assert_error(response, 400, "context length", "messages")


def test_a_client_that_disconnects_mid_stream_is_cancelled(http, server, model_name):
    stats = server.scheduler.stats
    cancelled, generated = stats.requests_cancelled, stats.tokens_generated
    body = {"model": model_name, "prompt": "I had", "max_tokens": 4000, "ignore_eos": True,
            "temperature": 0, "stream": True}  # fmt: skip
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        received = b""
        while received.count(b"data: ") < 3:  # wait until tokens are flowing
            received += sock.recv(65536)
        assert b" 200 OK" in received.split(b"\r\n", 1)[0]
    # The socket is closed: the server must notice and drop the row long before 4000 tokens.
    deadline = time.monotonic() + 20
    while stats.requests_cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats.requests_cancelled == cancelled + 1
    assert stats.tokens_generated - generated < 4000
    assert_alive(http)
    assert http.get("/health").json()["active_rows"] == 0


def test_a_non_streamed_request_whose_client_leaves_is_cancelled(http, server, model_name):
    stats = server.scheduler.stats
    cancelled = stats.requests_cancelled
    body = {"model": model_name, "prompt": "She", "max_tokens": 4000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=body, timeout=0.3)
    deadline = time.monotonic() + 20
    while stats.requests_cancelled == cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats.requests_cancelled == cancelled + 1
    assert_alive(http)


# --- the API key ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(start_server):
    return start_server(ServeLimits(max_tokens=16, max_prompt_tokens=20), api_key="s3cret")


def test_api_key_is_required_when_set(keyed_server, model_name):
    body = {"model": model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    url = keyed_server.url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                    {"Authorization": "Basic s3cret"}):  # fmt: skip
        response = httpx.post(url + "/v1/chat/completions", json=body, headers=headers)
        error = assert_error(response, 401, "API key")
        assert error["type"] == "authentication_error"
        assert_error(httpx.get(url + "/v1/models", headers=headers), 401)
    # /health and the page stay open; the right key works, with the official client too.
    assert httpx.get(url + "/health").json()["auth_required"] is True
    assert httpx.get(url + "/").status_code == 200
    ok = httpx.post(url + "/v1/chat/completions", json=body,
                    headers={"Authorization": "Bearer s3cret"})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 4
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
    models = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0).models.list()
    assert models.data[0].id == model_name


def test_max_prompt_tokens_flag(keyed_server, model_name, engine):
    key = {"Authorization": "Bearer s3cret"}
    body = {"model": model_name, "prompt": list(range(21)), "max_tokens": 2}
    response = httpx.post(keyed_server.url + "/v1/completions", json=body, headers=key)
    assert_error(response, 400, "more than the 20 allowed (--max-prompt-tokens)", "prompt")
    body["prompt"] = list(range(20))
    assert httpx.post(keyed_server.url + "/v1/completions", json=body, headers=key).is_success


def test_a_large_body_without_the_key_is_refused_as_401_not_read(keyed_server):
    response = httpx.post(keyed_server.url + "/v1/completions", content=b"x" * 2_000_000)
    assert_error(response, 401)


# --- fuzzing ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
FIELDS = ["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "min_p", "n",
          "stop", "seed", "stream", "stream_options", "presence_penalty", "frequency_penalty",
          "repetition_penalty", "max_completion_tokens", "ignore_eos", "echo"]  # fmt: skip
SMALL = {
    "model": st.sampled_from(["tiny-verdict", "other"]) | json_values,
    "prompt": st.text(max_size=30) | st.lists(st.integers(-5, 400), max_size=5)
    | st.lists(st.text(max_size=10), max_size=3) | json_values,
    "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "developer", "bot"]),
         "content": st.text(max_size=20) | json_values}), max_size=3) | json_values,
    "max_tokens": st.integers(-3, 6) | json_values,
    "n": st.integers(-1, 3) | json_values,
    "stream": st.booleans() | json_values,
}  # fmt: skip
PLAUSIBLE = {
    "temperature": st.floats(-1, 3), "top_p": st.floats(-0.5, 1.5), "top_k": st.integers(-2, 400),
    "min_p": st.floats(-0.5, 1.5), "seed": st.integers(-(2**64), 2**64),
    "presence_penalty": st.floats(-3, 3), "frequency_penalty": st.floats(-3, 3),
    "repetition_penalty": st.floats(-1, 3), "max_completion_tokens": st.integers(-1, 5),
    "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=3),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "ignore_eos": st.booleans(), "echo": st.booleans(),
    "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "developer"]),
         "content": st.text(max_size=20) | st.lists(st.fixed_dictionaries(
             {"type": st.just("text"), "text": st.text(max_size=8)}), max_size=2)}),
        min_size=1, max_size=3),
    "prompt": st.text(min_size=1, max_size=30) | st.lists(st.integers(0, 299), min_size=1, max_size=5),
}  # fmt: skip
# Random bodies (almost all rejected by validation) and nearly valid ones: a working request with
# a few fields replaced by plausible or random values, so the generation path is fuzzed too.
random_bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8).flatmap(
    lambda base: st.fixed_dictionaries({k: SMALL.get(k, json_values) for k in base})
)
nearly_valid = st.dictionaries(st.sampled_from(FIELDS[2:]), json_values, max_size=4).flatmap(
    lambda base: st.fixed_dictionaries(
        {k: PLAUSIBLE.get(k, SMALL.get(k, json_values)) for k in base}
    ).map(lambda extra: {"model": "tiny-verdict", "prompt": "I had", "max_tokens": 3,
                         "messages": [{"role": "user", "content": "Hi"}], **extra})
)  # fmt: skip
bodies = random_bodies | nearly_valid


@settings(max_examples=60, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(body=bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_fuzzed_bodies_never_get_a_5xx(http, body, path):
    if "max_tokens" not in body:
        body["max_tokens"] = 4  # keep valid requests short
    # json.dumps writes inf as Infinity: not JSON, but what a sloppy client may send.
    response = http.post(
        path, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    elif body.get("stream") is True:
        assert response.text.endswith("data: [DONE]\n\n")
    else:
        assert response.json()["choices"]
