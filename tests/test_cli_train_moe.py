"""`buildlm train --model.preset moe-small` end to end: trains, logs each expert's token share,
checkpoints, and resumes where it stopped (in subprocesses)."""

import csv
import json
import sys
from pathlib import Path

import pytest

from buildlm.data.corpora import load_corpus
from buildlm.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from cli_run import buildlm  # noqa: E402

SMALL = [
    "--model.preset", "moe-small", "--train.context_length", "32", "--model.d_model", "64",
    "--model.n_layers", "2", "--train.batch_size", "4", "--train.eval_batches", "2",
    "--train.progress", "false", "--train.tensorboard", "false", "--train.peak_flops", "1e12",
    "--train.num_threads", "1", "--train.sample_tokens", "8", "--train.time_budget_s", "null",
    "--train.log_interval", "1",
]  # fmt: skip


def test_moe_small_trains_checkpoints_and_resumes(tmp_path):
    Tokenizer.train(load_corpus("the-verdict"), 300, progress=False).save(tmp_path / "tok.json")
    buildlm("prepare", "--input", "the-verdict", "--tokenizer", "tok.json", "--out", "data", "--quiet", cwd=tmp_path)
    out = buildlm(
        "train", *SMALL, "--data.prepared_dir", "data", "--train.max_steps", "4",
        "--train.eval_interval", "2", "--train.checkpoint_interval", "2", "--train.name", "run",
        cwd=tmp_path,
    ).stdout  # fmt: skip
    assert "step 4: expert token shares" in out and "final val loss" in out
    run = tmp_path / "runs" / "run"
    config = json.loads((run / "checkpoints" / "step-0000004" / "config.json").read_text())
    assert config["model"]["n_experts"] == 8 and config["model"]["n_active_experts"] == 2

    out = buildlm("train", "--resume", "runs/run", "--train.max_steps", "6", cwd=tmp_path).stdout
    assert "resumed from" in out and (run / "checkpoints" / "step-0000006").is_dir()
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["train_loss"]]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        shares = [float(r[f"expert_share_{e}"]) for e in range(8)]
        assert sum(shares) == pytest.approx(1.0) and float(r["moe_balance_loss"]) > 0
