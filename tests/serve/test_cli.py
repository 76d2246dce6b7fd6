"""``buildlm serve`` as a user runs it: a subprocess on loopback, flags for the key and limits."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

import httpx
import pytest


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "buildlm", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def wait_for_url(proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                return match.group()
        if proc.poll() is not None:
            raise AssertionError(f"buildlm serve exited: {proc.stderr.read()}")
    raise AssertionError("buildlm serve did not print its address")


def test_serve_command_binds_loopback_and_applies_flags(checkpoint):
    proc = start("--model", str(checkpoint), "--port", "0", "--api-key", "k3y", "--max-tokens",
                 "8", "--name", "verdict", "--threads", "1", "--log-level", "warning")  # fmt: skip
    try:
        url = wait_for_url(proc)
        key = {"Authorization": "Bearer k3y"}
        assert httpx.get(url + "/health").json()["model"] == "verdict"
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers=key).json()["data"][0]["id"] == "verdict"
        body = {"model": "verdict", "messages": [{"role": "user", "content": "Hi"}]}
        ok = httpx.post(url + "/v1/chat/completions", json=body, headers=key, timeout=30)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 8
        too_many = httpx.post(url + "/v1/chat/completions", json={**body, "max_tokens": 9},
                              headers=key)  # fmt: skip
        assert too_many.status_code == 400 and "(8)" in too_many.json()["error"]["message"]
        assert "<canvas" in httpx.get(url + "/").text
        assert httpx.get(url + "/static/app.js").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, proc.stderr.read()


def test_serve_errors_are_one_line(tmp_path):
    proc = start("--model", str(tmp_path / "missing"), "--port", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in err and "not found" in err
    assert len([line for line in err.strip().splitlines() if not line.startswith("device: ")]) == 1


def test_a_host_that_is_not_this_machine_is_named_as_such():
    """``--host 999.1.1.1`` is no address at all: the fix is the host, not another --port."""
    from buildlm.serve.cli import bind

    for host in ("999.1.1.1", "192.0.2.1"):  # not an address; an address of another machine
        with pytest.raises(ValueError) as err:
            bind(host, 0)
        assert "--host" in str(err.value) and "--port" not in str(err.value), str(err.value)
