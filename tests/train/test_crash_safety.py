"""Crash safety with real processes: ``kill -9`` at random moments, during saves included.

A training run is killed again and again, each time resumed from its newest checkpoint; that
checkpoint must always load, and the finished run must have exactly the losses of a run that
was never interrupted (same batches, dropout masks, learning rates, AdamW moments).
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from buildlm import checkpoint_format
from buildlm.train import checkpoint as ckpt

STEPS = 75
ARGS = [
    "--model.preset", "tiny", "--model.d_model", "64", "--model.n_layers", "2", "--model.n_heads", "2",
    "--model.dropout", "0.1", "--train.context_length", "32", "--train.batch_size", "16",
    "--train.time_budget_s", "null", "--train.max_steps", str(STEPS), "--train.checkpoint_interval", "3",
    "--train.keep_checkpoints", "2", "--train.eval_interval", "20", "--train.eval_batches", "2",
    "--train.log_interval", "1", "--train.sample_interval", "0", "--train.sample_tokens", "4",
    "--train.num_threads", "1", "--train.progress", "false", "--train.tensorboard", "false",
    "--train.device", "cpu", "--train.peak_flops", "1e9",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "buildlm", "train", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
    )  # fmt: skip


def losses(run: Path) -> list[tuple[str, str]]:
    """(step, train_loss) rows of metrics.csv as written: compared exactly."""
    with (run / "metrics.csv").open() as f:
        return [(r["step"], r["train_loss"]) for r in csv.DictReader(f) if r["train_loss"]]


def saved_steps(run: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in checkpoint_format.list_checkpoints(run)]


def temporaries(run: Path) -> list[str]:
    folder = run / checkpoint_format.CHECKPOINTS
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")] if folder.is_dir() else []


def logged_step(run: Path) -> int:
    """The last step metrics.csv records (it is written every step)."""
    path = run / "metrics.csv"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    try:
        return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0
    except ValueError:  # a line being written
        return 0


def kill_soon(proc: subprocess.Popen, run: Path, rng: random.Random, during_save: bool) -> bool:
    """SIGKILL ``proc`` once it has saved a new checkpoint: either a random 0-2 steps and a random
    fraction of a step later, or as soon as the next checkpoint is being written. Returns whether
    a save was in progress at the kill."""
    before = max(saved_steps(run), default=0)
    deadline = time.monotonic() + 120
    while max(saved_steps(run), default=0) <= before:  # wait for progress past the last kill
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    if during_save:
        while not temporaries(run) and proc.poll() is None and time.monotonic() < deadline:
            pass  # busy-wait: a save of this small model takes milliseconds
    else:
        target = max(saved_steps(run)) + rng.randint(0, 2)
        while logged_step(run) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.02))  # somewhere inside the next step
    proc.send_signal(signal.SIGKILL)
    caught = bool(temporaries(run))
    proc.wait()
    return caught


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_losses(prepared_verdict, tmp_path):
    common = [*ARGS, "--data.prepared_dir", str(prepared_verdict), "--train.out_dir", str(tmp_path)]
    reference = start(*common, "--train.name", "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-2000:]
    expected = losses(tmp_path / "reference")
    assert len(expected) == STEPS

    run = tmp_path / "killed"
    rng = random.Random(1234)
    proc = start(*common, "--train.name", "killed")
    kills = mid_save = 0
    while kills < 10:
        if proc.poll() is not None:  # it finished before we got to kill it: the run is too short
            break
        mid_save += kill_soon(proc, run, rng, during_save=kills % 2 == 1)
        kills += 1
        newest = checkpoint_format.resolve_checkpoint(run)  # the newest complete checkpoint always loads
        checkpoint_format.load_checkpoint(newest)
        ckpt.load_trainer_state(newest)
        if saved_steps(run)[-1] >= STEPS:
            break
        proc = start("--resume", str(run))
    assert kills == 10, f"only {kills} kills before the run ended; make it longer"
    assert mid_save >= 2, f"only {mid_save} of the kills hit a checkpoint being written"
    if proc.poll() is None or saved_steps(run)[-1] < STEPS:
        proc.wait(timeout=300)
        if saved_steps(run)[-1] < STEPS:
            finish = start("--resume", str(run))
            assert finish.wait(timeout=300) == 0, finish.stderr.read().decode()[-2000:]
    assert losses(run) == expected
    assert not temporaries(run), "stale temporary folders were left behind"
