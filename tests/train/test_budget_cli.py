"""`buildlm train` with a time budget, as a user runs it: the whole run ends in time, its last
line places the model against every baseline, and a finished run is extended without the
learning rate jumping back up."""

import csv
import os
import shlex
import subprocess
import sys
import time

from buildlm.data.corpora import load_corpus

QUIET = [
    "--config", "verdict-tiny", "--train.max_steps", "100000",
    "--train.tensorboard", "false", "--train.progress", "false", "--train.num_threads", "1",
    "--train.name", "run",
]  # fmt: skip


def run_timed(args, cwd):
    """Run ``buildlm train args``; its output lines and the seconds from launch at which each
    arrived (the interpreter's exit after the last line is not part of the run)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildlm", "train", *map(str, args)], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    lines, times = [], []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        times.append(time.perf_counter() - t0)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, "\n".join(lines) + err
    return lines, times


def within_budget(lines, times, budget):
    """Did the run end within its budget (plus one slow step or evaluation of slack)?

    On a machine so busy that start-up and data preparation alone use the budget, the run
    trains one step and ends: then it may end that step, evaluation and sample after it.
    """
    timed = list(zip(lines, times, strict=True))
    ready = next((t for line, t in timed if line.startswith("time budget:")), None)
    if ready is None:  # a run that does not say when training starts: when it opens its folder
        ready = next(t for line, t in timed if line.startswith("writing to"))
    return times[-1] <= max(budget, ready + 3.0) + 1.5


def lrs(run):
    with (run / "metrics.csv").open() as f:
        return {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f) if r["lr"]}


def test_budget_holds_for_the_whole_run_and_a_finished_run_is_extended(tmp_path):
    budget = 15
    lines, times = run_timed([*QUIET, "--train.time_budget_s", budget], tmp_path)
    # From launch to the last line: start-up, tokenizer training, tokenizing, baselines, training,
    # the final evaluation, checkpoint and sample.
    assert within_budget(lines, times, budget), "\n".join(f"{t:5.1f} {line}" for line, t in zip(lines, times, strict=True))

    last = lines[-1]
    assert last.startswith("final val loss "), last
    for name in ("uniform", "unigram", "bigram"):  # each one, beaten or not
        assert f"{name} (" in last, last
    hint = next(line for line in lines if line.startswith("checkpoint: "))
    prompt = shlex.split(hint.split("(try: ", 1)[1].rstrip(")"))[-1]
    assert prompt and prompt in load_corpus("the-verdict"), hint

    # Resuming the finished run with the same settings: nothing to do, said before any data is
    # read (the prepared data is gone and is not rebuilt), with the command that trains further.
    run = tmp_path / "runs" / "run"
    for item in (tmp_path / "runs" / "data-cache").iterdir():
        for f in item.iterdir():
            f.unlink()
        item.rmdir()
    lines, _ = run_timed(["--resume", "runs/run"], tmp_path)
    assert "is finished" in lines[-1] and "--resume runs/run --train.time_budget_s 30" in lines[-1], lines
    assert not any((tmp_path / "runs" / "data-cache").iterdir())
    before = lrs(run)
    end = max(before)

    # Extending it: a larger budget. The rate goes on at its floor, never back up.
    lines, times = run_timed(["--resume", "runs/run", "--train.time_budget_s", budget + 8], tmp_path)
    after = lrs(run)
    assert max(after) > end, lines
    assert all(after[s] <= before[end] * (1 + 1e-9) for s in after if s > end), after
    # The budget counts every session: the first one's seconds, then this one's from its start.
    assert times[-1] <= budget + 8 + 1.5
