"""A soak test: ``buildlm serve`` (a real subprocess on loopback) under 64 clients at once.

For about half a minute the clients mix every kind of traffic a public server sees: streamed
and whole completions and chats, streams the client abandons, uploads that dribble in, stall
or are cut off, and bad requests (broken JSON, other sites' pages, oversized bodies). Then:
no answer was a 5xx, the log holds no traceback, ``/health`` is fine and idle, the memory is
within 1.2x of what it was after warm-up, and a reference request gives the same tokens as on
the idle server before the storm.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

CLIENTS = 64
WARM_S, SOAK_S = 8.0, 25.0
BODY_TIMEOUT_S = 2.0
REFERENCE = {"model": "soak", "prompt": "I had always thought", "max_tokens": 40,
             "temperature": 0, "ignore_eos": True}  # fmt: skip


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def raw_post(port: int, pieces: list[bytes], declared: int, pause: float, close_early: bool,
             timeout: float = 60) -> int | None:  # fmt: skip
    """POST /v1/completions over a bare socket, the body in ``pieces`` sent ``pause`` apart;
    the answer's status, or None when the client hangs up first (``close_early``)."""
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            b"application/json\r\nContent-Length: " + str(declared).encode() + b"\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for piece in pieces:
            time.sleep(pause)
            sock.sendall(piece)
        if close_early:
            return None
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


class Traffic:
    """The clients' actions, chosen round-robin by client and iteration (deterministic)."""

    def __init__(self, url: str, port: int) -> None:
        self.url, self.port = url, port
        self.statuses: Counter[int] = Counter()
        self.stream_errors: list[str] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def record(self, status: int | None) -> None:
        if status is not None:
            with self.lock:
                self.statuses[status] += 1

    def run(self, client: int, until: float) -> None:
        actions = [self.stream, self.abandon_stream, self.chat, self.slow_upload,
                   self.stalled_upload, self.cut_upload, self.bad_request, self.choices]  # fmt: skip
        with httpx.Client(base_url=self.url, timeout=60) as http:
            k = 0
            while time.monotonic() < until:
                action = actions[(client + k) % len(actions)]
                try:
                    action(http, client * 1000 + k)
                except Exception as err:  # a hung or broken answer: the test fails below
                    self.failures.append(f"{action.__name__}: {type(err).__name__}: {err}")
                k += 1

    def stream(self, http: httpx.Client, i: int) -> None:
        body = {"model": "soak", "prompt": "Jack Gisburn", "max_tokens": 12 + i % 24,
                "temperature": 0.8, "seed": i, "stream": True}  # fmt: skip
        with http.stream("POST", "/v1/completions", json=body) as response:
            self.record(response.status_code)
            text = response.read().decode()
        if '"error"' in text or not text.endswith("data: [DONE]\n\n"):
            self.stream_errors.append(text[-300:])

    def abandon_stream(self, http: httpx.Client, i: int) -> None:
        body = {"model": "soak", "prompt": "She", "max_tokens": 400, "ignore_eos": True,
                "stream": True}  # fmt: skip
        with http.stream("POST", "/v1/completions", json=body) as response:
            self.record(response.status_code)
            for n, _ in enumerate(response.iter_lines()):
                if n >= 4:
                    break  # the client walks away mid-stream

    def chat(self, http: httpx.Client, i: int) -> None:
        body = {"model": "soak", "max_tokens": 10, "temperature": 0,
                "messages": [{"role": "user", "content": f"Hello <|endoftext|> {i}"}]}  # fmt: skip
        self.record(http.post("/v1/chat/completions", json=body).status_code)

    def choices(self, http: httpx.Client, i: int) -> None:
        body = {"model": "soak", "prompt": ["The Riviera", "his pictures"], "n": 2,
                "max_tokens": 8, "temperature": 0.7, "seed": i}  # fmt: skip
        self.record(http.post("/v1/completions", json=body).status_code)

    def slow_upload(self, http: httpx.Client, i: int) -> None:
        payload = json.dumps({"model": "soak", "prompt": "It was", "max_tokens": 6}).encode()
        pieces = [payload[j : j + 12] for j in range(0, len(payload), 12)]
        self.record(raw_post(self.port, pieces, len(payload), 0.05, close_early=False))

    def stalled_upload(self, http: httpx.Client, i: int) -> None:
        self.record(raw_post(self.port, [b'{"model": "soak", "pro'], 5000, 0.0, False))

    def cut_upload(self, http: httpx.Client, i: int) -> None:
        raw_post(self.port, [b'{"model": "so', b"a" * 20_000], 90_000, 0.05, close_early=True)

    def bad_request(self, http: httpx.Client, i: int) -> None:
        kind = i % 3
        if kind == 0:
            response = http.post("/v1/completions", content=b'{"model": "soak", "prompt": ',
                                 headers={"Content-Type": "application/json"})  # fmt: skip
        elif kind == 1:
            response = http.post("/v1/completions", content=json.dumps(REFERENCE),
                                 headers={"Origin": "http://evil.example",
                                          "Content-Type": "text/plain"})  # fmt: skip
        else:
            response = http.post("/v1/completions", content=b"x" * 300_000)
        self.record(response.status_code)

    def storm(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        threads = [threading.Thread(target=self.run, args=(c, until)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a client hung"


def wait_idle(http: httpx.Client) -> dict:
    deadline = time.monotonic() + 30
    while True:
        health = http.get("/health").json()
        if health["active_rows"] == 0 and health["queued"] == 0:
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.1)


@pytest.mark.slow
def test_64_clients_of_mixed_and_hostile_traffic(checkpoint, tmp_path):
    log_path, out_path = tmp_path / "serve.log", tmp_path / "serve.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log, open(out_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "buildlm", "serve", "--model", str(checkpoint), "--port", "0",
             "--name", "soak", "--threads", "1", "--body-timeout", str(BODY_TIMEOUT_S),
             "--max-body-bytes", "100000", "--log-level", "info"],
            stdout=out, stderr=log, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"http://127\.0\.0\.1:(\d+)", out_path.read_text())):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "buildlm serve did not start"
            time.sleep(0.1)
        url, port = match.group(), int(match.group(1))
        traffic = Traffic(url, port)
        with httpx.Client(base_url=url, timeout=60) as http:
            reference = http.post("/v1/completions", json=REFERENCE).json()["choices"][0]["text"]
            traffic.storm(WARM_S)
            wait_idle(http)
            warm_rss = rss_kb(proc.pid)
            traffic.storm(SOAK_S)
            health = wait_idle(http)
            soaked_rss = rss_kb(proc.pid)
            after = http.post("/v1/completions", json=REFERENCE).json()["choices"][0]["text"]
        statuses = traffic.statuses
        assert not [s for s in statuses if s >= 500], statuses
        assert not traffic.stream_errors, traffic.stream_errors[:2]
        assert not traffic.failures, traffic.failures[:5]
        # Every kind of answer happened: served, refused bad input, timed-out uploads.
        assert {200, 400, 403, 408, 413} <= set(statuses), statuses
        assert health["status"] == "ok" and health["stats"]["requests_failed"] == 0
        assert health["stats"]["requests_cancelled"] > 0
        assert soaked_rss <= 1.2 * warm_rss, (warm_rss, soaked_rss)
        assert after == reference
    finally:
        proc.terminate()
        proc.wait(20)
    log = log_path.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert re.search(r"INFO: +127\.0\.0\.1:\d+ left after sending \d+ bytes", log)  # one line each
    assert not re.search(r'HTTP/1\.1" 5\d\d', log), re.findall(r'.*HTTP/1\.1" 5\d\d.*', log)[:5]
    print(f"soak: {sum(statuses.values())} answers {dict(statuses)}; RSS {warm_rss} -> "
          f"{soaked_rss} kB")

