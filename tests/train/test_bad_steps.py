"""Non-finite losses: the step is skipped (weights and AdamW moments untouched) and logged;
``max_bad_steps`` in a row stop the run with a clear error and a loadable checkpoint."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import make_trainer  # noqa: E402

from buildlm import checkpoint_format  # noqa: E402
from buildlm.train.distributed import optimizer_state_by_name  # noqa: E402
from buildlm.train.trainer import NonFiniteLossError  # noqa: E402


def poison(trainer, bad_steps):
    """A forward hook that turns the logits into NaN while the given (1-based) steps train."""

    def hook(module, args, output):
        if module.training and trainer.step + 1 in bad_steps:
            return output * float("nan")
        return output

    return trainer.model.register_forward_hook(hook)


def snapshot(trainer):
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    return weights, copy.deepcopy(optimizer_state_by_name(trainer.model, trainer.optimizer))


def assert_same(a, b):
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_a_non_finite_step_is_skipped_and_logged(verdict_tokens, small_tokenizer):  # noqa: F811
    lines = []
    trainer = make_trainer(verdict_tokens, small_tokenizer)
    trainer.log = lines.append
    poison(trainer, {3})
    trainer.train_step()
    trainer.train_step()
    weights, moments = snapshot(trainer)
    loss = trainer.train_step()
    assert loss != loss  # NaN
    assert trainer.step == 3 and trainer.bad_steps == 1
    after_weights, after_moments = snapshot(trainer)
    assert_same(weights, after_weights)
    assert_same(moments["state"]["tok_emb.weight"], after_moments["state"]["tok_emb.weight"])
    assert any("step 3" in line and "skipped" in line for line in lines), lines
    assert torch.isfinite(trainer.model.tok_emb.weight).all()
    # The next, healthy step trains again and resets the count.
    trainer.train_step()
    assert trainer.bad_steps == 0
    assert not torch.equal(trainer.model.tok_emb.weight, weights["tok_emb.weight"])


def test_k_bad_steps_in_a_row_stop_with_a_loadable_checkpoint(tmp_path, verdict_tokens, small_tokenizer):  # noqa: F811
    trainer = make_trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path, max_steps=20, max_bad_steps=3,
                           checkpoint_interval=4)  # fmt: skip
    poison(trainer, set(range(4, 21)))
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        trainer.fit()
    assert trainer.step == 6
    # Step 4's checkpoint holds the weights after step 3 (step 4 was skipped); the one written
    # when the run stopped (step 6) holds the same, finite weights, and loads.
    last = checkpoint_format.resolve_checkpoint(tmp_path)
    assert last.name == "step-0000006"
    loaded = checkpoint_format.load_checkpoint(last).model.state_dict()
    at_4 = checkpoint_format.load_checkpoint(tmp_path / "checkpoints" / "step-0000004").model.state_dict()
    assert_same(loaded, at_4)
    assert all(torch.isfinite(t).all() for t in loaded.values())


def test_a_diverging_cli_run_exits_1_with_the_reason(prepared_verdict, tmp_path):
    args = [
        "--data.prepared_dir", str(prepared_verdict), "--train.out_dir", str(tmp_path), "--train.name", "boom",
        "--model.preset", "tiny", "--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2",
        "--train.context_length", "16", "--train.batch_size", "4", "--train.time_budget_s", "null",
        "--train.max_steps", "50", "--train.lr", "1e30", "--train.min_lr", "1e30", "--train.warmup_steps", "1",
        "--train.max_bad_steps", "3", "--train.progress", "false", "--train.tensorboard", "false",
        "--train.device", "cpu", "--train.peak_flops", "1e9", "--train.num_threads", "1",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "buildlm", "train", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "buildlm train: error: 3 steps in a row had a non-finite loss" in done.stderr
    assert "--train.lr" in done.stderr  # the fix is named
    assert "skipped" in done.stdout
    checkpoint_format.load_checkpoint(tmp_path / "boom")  # the last good weights, saved
