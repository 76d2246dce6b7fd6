"""``buildlm finetune TASK --resume RUN`` with real processes: a run killed with SIGKILL after a
checkpoint, then resumed, ends with bitwise the weights of a run never interrupted.

Why bitwise: on the CPU with one thread every operation is deterministic, and the resumed run
gets back everything the next steps depend on (weights and LoRA adapters, AdamW moments, the
position in the shuffled examples, the RNG for dropout, the step and the learning rate); a
rounding difference anywhere would show in the last bit of some weight.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from buildlm import checkpoint_format
from buildlm.cli import main as buildlm

ROOT = Path(__file__).resolve().parents[2]
STEPS = 24
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
COMMON = [
    "--train.max_steps", str(STEPS), "--train.batch_size", "8", "--train.warmup_steps", "4",
    "--train.checkpoint_interval", "3", "--train.keep_checkpoints", "2", "--train.eval_interval", "1000",
    "--train.log_interval", "1", "--train.num_threads", "1", "--train.progress", "false",
    "--train.tensorboard", "false", "--train.peak_flops", "1e12", "--train.device", "cpu",
    "--val_data", "{dir}/val.jsonl", "--test_data", "{dir}/test.jsonl", "--data", "{dir}/train.jsonl",
]  # fmt: skip
# Per task: its bundled data (a few examples of it), and LoRA or not: instruct and classify train
# LoRA adapters (with dropout, so the RNG matters), DPO every weight against a frozen reference
# (which a resumed run must rebuild from the starting model, not from the checkpoint).
SHORT = "{instruction} {input} ="  # the Alpaca template is longer than the tiny model's context
TASKS = {
    "instruct": ("instruct-tasks:add", ["--lora.rank", "2", "--lora.dropout", "0.1", "--instruct.template", SHORT,
                                        "--instruct.eval_before", "false", "--instruct.max_eval_examples", "2",
                                        "--instruct.max_new_tokens", "4"]),
    "dpo": ("instruct-prefs:add", ["--dpo.template", SHORT]),
    "classify": ("shakespeare-plays:julius_caesar,romeo_and_juliet", ["--lora.rank", "2", "--lora.dropout", "0.1"]),
}  # fmt: skip


def write_data(name: str, folder: Path) -> Path:
    """A few examples of the bundled dataset ``name`` as train/val/test JSONL files."""
    from buildlm.data.bundled_tasks import load_bundled
    from buildlm.data.records import write_jsonl

    splits = load_bundled(name)
    for split, n in (("train", 64), ("val", 4), ("test", 4)):
        write_jsonl(splits[split][:n], folder / f"{split}.jsonl")
    return folder


def start(task: str, *args: str, show: bool = False) -> subprocess.Popen:
    """``buildlm finetune task args`` in a new process (its stdout kept when ``show``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "buildlm", "finetune", task, *args],
        stdout=subprocess.PIPE if show else subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
    )  # fmt: skip


def finish(proc: subprocess.Popen) -> str:
    """Wait for ``proc`` to succeed; returns what it printed."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    return (out or b"").decode()


def logged_step(run: Path) -> int:
    path = run / "metrics.csv"
    lines = path.read_text().splitlines() if path.is_file() else []
    try:
        return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0
    except ValueError:  # a line being written
        return 0


def kill_after_checkpoint(proc: subprocess.Popen, run: Path) -> int:
    """SIGKILL ``proc`` once it has saved its first checkpoint and logged a step past it (so the
    resumed run redoes a step metrics.csv already holds); returns the step killed at."""
    deadline = time.monotonic() + 240
    while not checkpoint_format.list_checkpoints(run) or logged_step(run) < 4:
        assert proc.poll() is None, "the run ended before it was killed: " + proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return logged_step(run)


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r.get("train_loss")]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint_format.resolve_checkpoint(run) / checkpoint_format.WEIGHTS)


@pytest.mark.parametrize("task", list(TASKS))
def test_killed_run_resumes_to_the_uninterrupted_weights(task, tiny_base, tmp_path):
    name, extra = TASKS[task]
    data = write_data(name, tmp_path)
    args = [a.format(dir=data) for a in COMMON] + ["--model", str(tiny_base), *extra]
    whole, part = tmp_path / "whole", tmp_path / "part"
    reference = start(task, *args, "--out", str(whole))
    killed = start(task, *args, "--out", str(part))
    at = kill_after_checkpoint(killed, part)
    finish(reference)
    assert 4 <= at < STEPS, at
    assert checkpoint_format.list_checkpoints(part)[-1].name != f"step-{STEPS:07d}"
    # A newer checkpoint that a disk error damaged: passed over and moved aside, as by `buildlm train`.
    damaged = part / checkpoint_format.CHECKPOINTS / "step-0000006"
    shutil.copytree(checkpoint_format.list_checkpoints(part)[-1], damaged)
    state = damaged / checkpoint_format.TRAINER_STATE
    state.write_bytes(state.read_bytes()[:100])
    log = finish(start(task, "--resume", str(part), show=True))
    assert "skipped damaged checkpoint" in log and "moved it aside to step-0000006.damaged" in log, log
    assert re.search(r"resumed from \S+step-0000003 at step 3\n", log), log  # continued, not started again

    a, b = final_weights(whole), final_weights(part)
    assert checkpoint_format.resolve_checkpoint(part).name == f"step-{STEPS:07d}"
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [r["step"] for r in rows(part)]
    assert steps == [str(s) for s in range(1, STEPS + 1)]  # no row twice, none missing
    for key in ("train_loss", "lr"):
        assert [r[key] for r in rows(whole)] == [r[key] for r in rows(part)], key
    scores = [json.loads((run / "eval.json").read_text()) for run in (whole, part)]
    for m in scores:
        m.pop("train_seconds")
    assert scores[0] == scores[1]  # the final test figures, computed from the final weights
    if "--lora.rank" in extra:
        x, y = load_file(whole / "adapter.safetensors"), load_file(part / "adapter.safetensors")
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_resume_errors_are_one_line_and_name_the_fix(tiny_base, tmp_path, capsys, ft_train):
    """A missing folder, a folder without a checkpoint, a run of another task or of pretraining;
    and a new run without --model."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text("step,train_loss\n")
    data = write_data(TASKS["dpo"][0], tmp_path)
    dpo_run = tmp_path / "dpo"
    args = [a.format(dir=data) for a in COMMON] + ["--train.max_steps", "1", *TASKS["dpo"][1]]
    buildlm(["finetune", "dpo", "--model", str(tiny_base), "--out", str(dpo_run), *args])
    cases = [
        ("instruct", tmp_path / "nowhere", r"no such run folder; pass the folder of a `buildlm finetune instruct` run"),
        ("dpo", empty, r"holds no checkpoint .*; start the run again without --resume"),
        ("classify", tiny_base, r"is a pretraining run, not a finetune classify one; resume it with `buildlm train --resume"),
        ("instruct", dpo_run, r"is a finetune dpo run, not a finetune instruct one; resume it with `buildlm finetune dpo --resume"),
    ]  # fmt: skip
    capsys.readouterr()
    for task, target, message in cases:
        with pytest.raises(SystemExit) as exit_:
            buildlm(["finetune", task, "--resume", str(target)])
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and err.count("\n") == 1, err
        assert err.startswith("buildlm finetune: error: --resume ") and re.search(message, err), err
    assert not (tmp_path / "nowhere").exists() and os.listdir(empty) == ["metrics.csv"]  # nothing written
    # --model is optional now (a resumed run has its own), but a new run still needs one
    with pytest.raises(SystemExit):
        buildlm(["finetune", "dpo", "--out", str(tmp_path / "new"), *args])
    assert "error: no starting model given; pass --model" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
