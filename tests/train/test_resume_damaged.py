"""A damaged newest checkpoint: `--resume RUN` says which one it skips and why, resumes from the
newest good one, and the damaged files are moved aside (kept), never in the way of a save."""

import os
import subprocess
import sys
import zipfile

import pytest
import torch

from buildlm.train.checkpoint_health import checkpoint_problem

TINY = [
    "--model.preset", "tiny", "--train.context_length", "32", "--model.d_model", "64", "--model.n_layers", "2",
    "--train.batch_size", "4", "--train.eval_batches", "1", "--train.progress", "false",
    "--train.tensorboard", "false", "--train.num_threads", "1", "--train.sample_tokens", "4",
    "--train.time_budget_s", "null", "--tokenizer.vocab_size", "300", "--data.inputs", "[the-verdict]",
]  # fmt: skip


def buildlm(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "buildlm", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def run(tmp_path):
    """A run with checkpoints at steps 2 and 4, the one at step 4 damaged: its weights cut short
    and its config.json gone (the folder still holds files)."""
    buildlm(
        "train", *TINY, "--train.max_steps", "4", "--train.checkpoint_interval", "2", "--train.eval_interval", "2",
        "--train.name", "r", cwd=tmp_path,
    )  # fmt: skip
    checkpoints = tmp_path / "runs" / "r" / "checkpoints"
    newest = checkpoints / "step-0000004"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (newest / "config.json").unlink()
    return checkpoints


def test_resume_skips_a_damaged_newest_checkpoint_and_sets_it_aside(run):
    cut = (run / "step-0000004" / "model.safetensors").read_bytes()
    out = buildlm("train", "--resume", "runs/r", "--train.max_steps", "6", cwd=run.parents[2])
    assert "skipped damaged checkpoint" in out and "step-0000004 (it has no config.json)" in out
    assert "moved it aside to step-0000004.damaged" in out
    assert "resumed from" in out and "step-0000002 at step 2" in out
    # the damaged files are kept for inspection; the run saved step 4 again, then step 6
    assert (run / "step-0000004.damaged" / "model.safetensors").read_bytes() == cut
    assert sorted(p.name for p in run.iterdir()) == ["step-0000004", "step-0000004.damaged", "step-0000006"]
    assert checkpoint_problem(run / "step-0000004") is None


def test_resuming_an_earlier_checkpoint_saves_past_a_damaged_folder(run):
    """The damaged step-4 folder is in the way of the resumed run's own step-4 save."""
    out = buildlm("train", "--resume", "runs/r/checkpoints/step-0000002", "--train.max_steps", "4", cwd=run.parents[2])
    assert "step-0000002 at step 2" in out and "checkpoint:" in out
    assert checkpoint_problem(run / "step-0000004") is None
    assert (run / "step-0000004.damaged" / "model.safetensors").is_file()


def test_checkpoint_problems_name_what_is_wrong(tmp_path):
    from buildlm.model import GPT, ModelConfig
    from buildlm.train.checkpoint import save_checkpoint

    model = GPT(ModelConfig.preset("tiny", vocab_size=300, context_length=16, d_model=32, n_layers=1))
    folder = save_checkpoint(tmp_path, 1, model, {"model": model.config.to_dict()}, trainer_state={"step": 1})
    assert checkpoint_problem(folder) is None
    state = folder / "trainer_state.pt"
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])
    assert "trainer_state.pt is truncated or damaged" in checkpoint_problem(folder)
    assert checkpoint_problem(folder, resumable=False) is None  # the weights alone are fine
    state.write_bytes(whole)
    assert zipfile.is_zipfile(state) and torch.load(state, weights_only=True) == {"step": 1}
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    assert "model.safetensors is cut short" in checkpoint_problem(folder)


def test_pruning_old_checkpoints_keeps_one_holding_a_user_file(tmp_path):
    from buildlm.checkpoint_format import list_checkpoints
    from buildlm.model import GPT, ModelConfig
    from buildlm.train.checkpoint import save_checkpoint

    model = GPT(ModelConfig.preset("tiny", vocab_size=300, context_length=16, d_model=32, n_layers=1))
    config = {"model": model.config.to_dict()}
    first = save_checkpoint(tmp_path, 1, model, config, keep=2)
    (first / "NOTES.md").write_text("the run before I changed the learning rate")
    second = save_checkpoint(tmp_path, 2, model, config, keep=2)
    save_checkpoint(tmp_path, 3, model, config, keep=2)
    save_checkpoint(tmp_path, 4, model, config, keep=2)
    assert (first / "NOTES.md").is_file()  # kept, with the checkpoint it describes
    assert not second.exists()  # buildlm's alone: pruned
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000001", "step-0000003", "step-0000004"]
