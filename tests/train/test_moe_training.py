"""Training a mixture of experts: the router losses reach the gradient (not the reported loss),
the per-expert token shares are logged, and a resumed MoE run equals the uninterrupted one."""

import csv

import pytest
import torch

from buildlm.device import seed_everything
from buildlm.model import GPT, ModelConfig
from buildlm.train.config import TrainConfig
from buildlm.train.trainer import Trainer
from buildlm.train.windows import TrainData


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _trainer(tokens, tokenizer, run_dir=None, **overrides) -> Trainer:
    seed_everything(0)
    config = ModelConfig.preset(
        "moe-small", vocab_size=tokenizer.vocab_size, context_length=32, d_model=48, n_layers=2,
        n_experts=4, moe_d_ff=40, moe_first_dense=0, dropout=0.1,
    )  # fmt: skip
    settings = dict(
        max_steps=8, batch_size=4, grad_accum_steps=2, lr=3e-3, min_lr=3e-4, warmup_steps=2,
        eval_interval=4, eval_batches=2, checkpoint_interval=4, log_interval=2, progress=False,
        tensorboard=False, peak_flops=1e12, device="cpu", seed=11, num_threads=1,
        time_budget_s=None,
    )  # fmt: skip
    train, val = tokens
    data = TrainData(train, val, val_bytes=4 * len(val))
    return Trainer(GPT(config), TrainConfig(**{**settings, **overrides}), data, tokenizer, run_dir=run_dir)


def test_router_losses_reach_the_gradient_not_the_reported_loss(verdict_tokens, small_tokenizer):
    trainers, losses = [], []
    for aux_coef, z_coef in ((0.0, 0.0), (1.0, 0.1)):  # each built and stepped in turn: same RNG
        trainer = _trainer(verdict_tokens, small_tokenizer, moe_aux_loss_coef=aux_coef, moe_z_loss_coef=z_coef)
        losses.append(trainer.accumulate_gradients())
        trainers.append(trainer)
    assert losses[0] == losses[1]  # the reported loss is the cross-entropy only
    router = "blocks.0.mlp.router.weight"
    grads = [dict(t.model.named_parameters())[router].grad for t in trainers]
    aux = trainers[1]
    assert not torch.allclose(grads[0], grads[1])  # the balance and z-losses pull on the router
    row = aux.router_loss.row()
    shares = [row[f"expert_share_{e}"] for e in range(4)]
    assert sum(shares) == pytest.approx(1.0) and row["moe_balance_loss"] >= 1.0 - 1e-6
    assert row["moe_z_loss"] > 0


def test_dense_model_has_no_router_figures(verdict_tokens, small_tokenizer):
    trainer = _trainer(verdict_tokens, small_tokenizer)
    trainer.model = GPT(ModelConfig.preset("tiny", vocab_size=small_tokenizer.vocab_size))
    trainer.router_loss.model = trainer.model
    assert trainer.router_loss(1) == 0.0 and trainer.router_loss.row() == {}


def test_moe_resume_reproduces_the_uninterrupted_run(tmp_path, verdict_tokens, small_tokenizer):
    full = _trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path / "full")
    full_result = full.fit()
    resumed = _trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path / "resumed")
    torch.manual_seed(999)  # disturb the RNG: the checkpoint must put it back
    resumed.load_state(tmp_path / "full" / "checkpoints" / "step-0000004")
    resumed_result = resumed.fit()
    assert resumed_result.losses == full_result.losses[4:]  # bitwise
    assert resumed_result.val_loss == full_result.val_loss
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with open(tmp_path / "full" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["train_loss"]]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    for r in rows:
        assert sum(float(r[f"expert_share_{e}"]) for e in range(4)) == pytest.approx(1.0)
