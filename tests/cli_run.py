"""Running ``buildlm`` as a user does, in a subprocess, and checking its one-line errors.

Shared by the tests that drive whole commands (``sys.path`` gets this folder, as
``tests/train`` does for its distributed helpers).
"""

from __future__ import annotations

import os
import subprocess
import sys


def buildlm(*args, cwd=None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m buildlm args`` in ``cwd`` on one thread; with ``check``, a failure raises
    an ``AssertionError`` holding the command's output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "buildlm", *map(str, args)], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"buildlm {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` but the one that says which device a command runs on
    (``device: cpu (auto: ...)``, printed before the model loads, so before most errors)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("device: ")]


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 1, no traceback, exactly one line on stderr holding every fragment (besides
    the device line, see `error_lines`)."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
