"""Slow, stalled and abandoned uploads cannot pile up: a body must arrive in time, requests in
flight and in the queue are capped (429 with Retry-After), and a client that leaves mid-body
is one quiet log line, not a traceback."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from buildlm.serve import ServeLimits


def http_request(port: int, body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(length).encode()
            + b"\r\n\r\n" + body)  # fmt: skip


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


@pytest.fixture(scope="module")
def tight(start_server):
    """A server with small admission limits, so the tests reach them with few sockets."""
    return start_server(ServeLimits(max_tokens=1_000_000, body_timeout_s=1.0, max_connections=6,
                                    max_queued=2, max_batch_size=2, max_n=2))  # fmt: skip


def test_a_body_that_stalls_gets_408_and_the_connection_is_closed(tight):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", tight.port)) as sock:
        sock.sendall(http_request(tight.port, b'{"model": "tiny-verdict", "pro', declared=900))
        answer = read_all(sock, timeout=15)  # returns when the server closes the socket
    assert time.monotonic() - start < 10
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert "did not arrive within 1 s" in json.loads(body)["error"]["message"]


def test_requests_past_the_cap_get_429_with_retry_after(tight, model_name):
    # Six stalled uploads fill the server's six places; the seventh request is refused.
    socks = [socket.create_connection(("127.0.0.1", tight.port)) for _ in range(6)]
    try:
        for sock in socks:
            sock.sendall(http_request(tight.port, b'{"model"', declared=500))
        time.sleep(0.3)
        with httpx.Client(base_url=tight.url, timeout=30) as http:
            refused = http.post("/v1/completions", json={"model": model_name, "prompt": "I"})
            assert http.get("/health").is_success  # health is always answered
        # Refused before its body is read, an upload's connection is closed, not kept waiting.
        with socket.create_connection(("127.0.0.1", tight.port)) as sock:
            sock.sendall(http_request(tight.port, b'{"model"', declared=500))
            start = time.monotonic()
            answer = read_all(sock, timeout=10)
            assert answer.startswith(b"HTTP/1.1 429") and time.monotonic() - start < 5
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and "--max-connections" in error["message"]
    finally:
        for sock in socks:
            sock.close()
    # Once the uploads are gone (timed out or closed), requests are served again.
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=tight.url, timeout=30) as http:
        body = {"model": model_name, "prompt": "I", "max_tokens": 2}
        while (r := http.post("/v1/completions", json=body)).status_code == 429:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert r.is_success


def test_a_full_queue_gets_429(tight, model_name):
    """Two long requests fill the batch (two rows), two more wait; the fifth is refused."""
    # the streams outlast the test however slow the machine (closing them cancels them)
    long = {"model": model_name, "prompt": "I had", "max_tokens": 1_000_000, "ignore_eos": True,
            "stream": True}  # fmt: skip
    clients = [httpx.Client(base_url=tight.url, timeout=60) for _ in range(2)]
    streams = []
    try:
        for client in clients:
            deadline = time.monotonic() + 10
            while True:  # the last test's uploads may still hold places for a moment
                streams.append(client.stream("POST", "/v1/completions", json=long))
                if streams[-1].__enter__().status_code == 200:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
        queued = [socket.create_connection(("127.0.0.1", tight.port)) for _ in range(2)]
        # the waiting ones are short: once the streams close they run and end by themselves
        payload = json.dumps({**long, "stream": False, "max_tokens": 4000}).encode()
        for sock in queued:
            sock.sendall(http_request(tight.port, payload))
        deadline = time.monotonic() + 60  # a busy machine: the two streams decode flat out
        while tight.scheduler.queued < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Four requests are in flight (the cap is six): the queue's limit refuses the fifth.
        refused = httpx.post(tight.url + "/v1/completions", timeout=30,
                             json={"model": model_name, "prompt": "I", "max_tokens": 2})
        assert refused.status_code == 429, refused.text
        assert "--max-queued" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "1"
        for sock in queued:
            sock.close()
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()


def test_a_client_that_leaves_mid_body_is_one_quiet_line(tight, caplog):
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", tight.port)) as sock:
            sock.sendall(http_request(tight.port, b'{"model": "tiny', declared=400))
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not any("left after sending" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    line = next(r.getMessage() for r in caplog.records if "left after sending" in r.getMessage())
    assert "15 bytes" in line and "\n" not in line


def test_a_connection_that_sends_no_request_is_closed(checkpoint, tmp_path):
    """``buildlm serve``: a socket that connects and sends nothing, or half a request head,
    is closed after --body-timeout (uvicorn alone keeps it open for ever)."""
    out_path = tmp_path / "serve.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "buildlm", "serve", "--model", str(checkpoint), "--port", "0",
             "--threads", "1", "--body-timeout", "1", "--log-level", "warning"],
            stdout=out, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"127\.0\.0\.1:(\d+)", out_path.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        port = int(match.group(1))
        silent = socket.create_connection(("127.0.0.1", port))
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: unfinished
        start = time.monotonic()
        for sock in (silent, half):
            sock.settimeout(15)
            assert sock.recv(100) == b""  # closed by the server
            sock.close()
        assert time.monotonic() - start < 8
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).is_success
    finally:
        proc.terminate()
        proc.wait(20)
