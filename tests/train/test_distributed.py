"""DDP and FSDP with real processes: torchrun, gloo on the CPU, two ranks.

Two ranks with batch b must train exactly like one process with batch 2b (the same windows,
gradients averaged), with gradient accumulation syncing once per step, and FSDP's checkpoint
must load into a plain single-process model with the logits the sharded model had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from distributed_setup import ACCUM, PROBE, STEPS, tiny_setup  # noqa: E402

from buildlm.checkpoint_format import load_checkpoint, read_config  # noqa: E402
from buildlm.train.trainer import Trainer  # noqa: E402

HERE = Path(__file__).parent


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Two processes on this machine, each with one thread (2 cores)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process, batch 8 (= 2 ranks x 4), the same steps."""
    model, config, data = tiny_setup(batch_size=8)
    trainer = Trainer(model, config, data, log=lambda *a: None)
    result = trainer.fit()
    with torch.no_grad():
        logits = trainer.model.eval()(PROBE)
    return {"losses": result.losses, "val_loss": result.val_loss, "logits": logits}


@pytest.mark.parametrize(
    "strategy, flags",
    [("ddp", []), ("fsdp", []), ("fsdp", ["--compile", "--ac"])],
    ids=["ddp", "fsdp", "fsdp-compile-activation-checkpointing"],
)
def test_two_ranks_train_like_one_process_with_the_global_batch(one_process, tmp_path, strategy, flags):
    torchrun(str(HERE / "distributed_run.py"), str(tmp_path), strategy, *flags)
    got = torch.load(tmp_path / "result.pt", weights_only=True)
    assert len(got["losses"]) == STEPS
    torch.testing.assert_close(
        torch.tensor(got["losses"]), torch.tensor(one_process["losses"]), rtol=1e-5, atol=0
    )
    assert got["val_loss"] == pytest.approx(one_process["val_loss"], rel=1e-5)
    # The losses went down: a run that trained nothing would "match" too.
    assert got["losses"][-1] < got["losses"][0] - 0.05
    if strategy == "ddp":
        # Gradient accumulation: ACCUM backward passes per step, one all-reduce (the tiny model
        # fits DDP's first gradient bucket), not one per micro-batch.
        assert got["all_reduces"] == STEPS, f"{got['all_reduces']} all-reduces for {STEPS} steps x {ACCUM}"
    # The checkpoint rank 0 wrote holds the full model: it loads into one plain process and
    # gives exactly the logits the distributed model gives.
    loaded = load_checkpoint(tmp_path / "run")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(PROBE), got["logits"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["logits"], one_process["logits"], rtol=1e-4, atol=1e-4)


TRAIN_ARGS = [
    "--model.preset", "tiny", "--model.d_model", "32", "--model.n_layers", "2", "--model.n_heads", "2",
    "--model.dropout", "0.1", "--train.context_length", "16", "--train.time_budget_s", "null",
    "--train.max_steps", "8", "--train.checkpoint_interval", "4", "--train.keep_checkpoints", "3",
    "--train.eval_interval", "4", "--train.eval_batches", "2", "--train.log_interval", "1",
    "--train.sample_interval", "0", "--train.sample_tokens", "4", "--train.num_threads", "1",
    "--train.progress", "false", "--train.tensorboard", "false", "--train.device", "cpu",
    "--train.peak_flops", "1e9", "--train.warmup_steps", "2",
]  # fmt: skip


def buildlm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "buildlm", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def losses(run: Path) -> list[str]:
    """The train_loss column of a run's metrics.csv, as written (exact comparison)."""
    import csv

    with (run / "metrics.csv").open() as f:
        return [row["train_loss"] for row in csv.DictReader(f) if row["train_loss"]]


def test_nproc_launches_fsdp_and_a_killed_run_resumes_exactly(prepared_verdict, tmp_path):
    """``buildlm train --nproc 2``; resuming FSDP from a mid-run checkpoint repeats the rest."""
    args = [*TRAIN_ARGS, "--data.prepared_dir", str(prepared_verdict), "--train.out_dir", str(tmp_path)]
    done = buildlm("train", "--nproc", "2", *args, "--train.distributed", "fsdp", "--train.batch_size", "4",
                   "--train.optimizer", "adamw", "--train.name", "whole")  # fmt: skip
    assert "FSDP over 2 processes" in done.stdout
    assert done.stdout.count("final val loss") == 1  # only rank 0 prints
    whole = tmp_path / "whole"
    config = read_config(whole / "checkpoints" / "step-0000008")
    assert config["train"]["distributed"] == "fsdp"
    # Continue a copy from step 4, as after a crash there.
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "step-0000008")
    buildlm("train", "--nproc", "2", "--resume", str(cut / "checkpoints" / "step-0000004"))
    assert len(losses(whole)) == 8
    assert losses(cut) == losses(whole)


def test_two_ranks_log_the_expert_shares_of_the_whole_batch(tmp_path):
    """Each rank routes its own tokens; the logged expert shares (and z-loss) must be those of
    the global batch, as one process with the whole batch logs them, not rank 0's half."""
    import csv

    model, config, data = tiny_setup(batch_size=8, moe=True)
    Trainer(model, config, data, run_dir=tmp_path / "one", log=lambda *a: None).fit()
    torchrun(str(HERE / "distributed_run.py"), str(tmp_path), "ddp", "--moe")

    def router_columns(run: Path) -> list[list[float]]:
        with (run / "metrics.csv").open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("expert_share_0")]
        keys = [f"expert_share_{e}" for e in range(4)] + ["moe_z_loss"]
        return [[float(r[k]) for k in keys] for r in rows]

    one, two = router_columns(tmp_path / "one"), router_columns(tmp_path / "run")
    assert len(one) == len(two) >= 4
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-6)
    assert all(abs(sum(r[:4]) - 1) < 1e-5 for r in two)
