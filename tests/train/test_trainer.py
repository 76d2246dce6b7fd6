"""The Trainer: gradient accumulation, learning, exact resumption, checkpoints, baselines."""

import math
import os

import numpy as np
import pytest
import torch

from buildlm import checkpoint_format
from buildlm.device import resolve_device, seed_everything
from buildlm.model import GPT, ModelConfig
from buildlm.train import checkpoint as ckpt
from buildlm.train.baselines import bigram_loss, unigram_loss
from buildlm.train.config import TrainConfig
from buildlm.train.metrics import bits_per_byte
from buildlm.train.trainer import Trainer
from buildlm.train.windows import TrainData


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast, and immune to oversubscribed CPUs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_trainer(tokens, tokenizer, run_dir=None, dropout=0.0, **overrides):
    seed_everything(0)
    config = ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size, context_length=32, dropout=dropout)
    model = GPT(config)
    defaults = dict(
        max_steps=8, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_interval=4, eval_batches=2,
        checkpoint_interval=4, progress=False, tensorboard=False, peak_flops=1e12, device="cpu", seed=11,
        num_threads=1, time_budget_s=None,
    )
    train_config = TrainConfig(**{**defaults, **overrides})
    train, val = tokens
    return Trainer(model, train_config, TrainData(train, val, val_bytes=4 * len(val)), tokenizer, run_dir=run_dir)


class FixedBatches:
    """Feeds given (x, y) micro-batches in order, in place of the random-window stream."""

    def __init__(self, batches):
        self.batches = list(batches)

    def __next__(self):
        return self.batches.pop(0)


def test_gradient_accumulation_equals_one_big_batch(verdict_tokens, small_tokenizer):
    train, _ = verdict_tokens
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(train) - 33, size=8)
    windows = torch.from_numpy(np.stack([train[s : s + 33] for s in starts]).astype(np.int64))
    x, y = windows[:, :-1], windows[:, 1:]  # (8, 32)

    big = make_trainer(verdict_tokens, small_tokenizer, batch_size=8, grad_accum_steps=1)
    big.train_batches = FixedBatches([(x, y)])
    loss_big = big.accumulate_gradients()

    small = make_trainer(verdict_tokens, small_tokenizer, batch_size=2, grad_accum_steps=4)
    small.train_batches = FixedBatches([(x[i : i + 2], y[i : i + 2]) for i in range(0, 8, 2)])
    loss_small = small.accumulate_gradients()

    assert loss_small == pytest.approx(loss_big, rel=1e-6)
    for (name, a), b in zip(big.model.named_parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_training_reduces_val_loss(verdict_tokens, small_tokenizer):
    trainer = make_trainer(verdict_tokens, small_tokenizer, max_steps=40, batch_size=8, eval_interval=40)
    before = trainer.evaluate()["val_loss"]
    assert before == pytest.approx(math.log(small_tokenizer.vocab_size), abs=0.3)  # random init ~ uniform
    result = trainer.fit()
    assert result.step == 40 and len(result.losses) == 40
    assert result.val_loss < before - 1.0
    assert np.mean(result.losses[-5:]) < result.losses[0] - 1.0  # the training loss fell too


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, verdict_tokens, small_tokenizer, optimizer):
    # dropout > 0 so the RNG state must be restored too, and accumulation for the data position;
    # Muon: its momentum buffers and the AdamW moments of the other groups come back too
    common = dict(dropout=0.1, grad_accum_steps=2, optimizer=optimizer)
    full = make_trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path / "full", **common)
    full_result = full.fit()
    assert [p.name for p in checkpoint_format.list_checkpoints(tmp_path / "full")] == ["step-0000004", "step-0000008"]

    resumed = make_trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path / "resumed", **common)
    torch.manual_seed(999)  # disturb the RNG: the checkpoint must put it back
    resumed.load_state(tmp_path / "full" / "checkpoints" / "step-0000004")
    assert resumed.step == 4
    resumed_result = resumed.fit()
    assert resumed_result.losses == full_result.losses[4:]  # bitwise
    assert resumed_result.val_loss == full_result.val_loss
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_round_trip(tmp_path, verdict_tokens, small_tokenizer):
    trainer = make_trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path, max_steps=2, checkpoint_interval=0)
    trainer.fit()
    loaded = checkpoint_format.load_checkpoint(tmp_path)  # the run folder resolves to its newest checkpoint
    assert loaded.path.name == "step-0000002"
    files = sorted(p for p in os.listdir(loaded.path) if p != ".buildlm-outputs.json")  # + the list of them
    assert files == ["config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"]
    assert loaded.config["model"] == trainer.model.config.to_dict()
    assert loaded.config["train"]["max_steps"] == 2 and loaded.config["step"] == 2
    for (name, a), b in zip(trainer.model.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    x = torch.from_numpy(verdict_tokens[0][:32].astype(np.int64))[None]  # (1, 32)
    torch.testing.assert_close(loaded.model(x), trainer.model.eval()(x), rtol=0, atol=0)
    assert loaded.tokenizer.encode("Hello there") == small_tokenizer.encode("Hello there")
    state = ckpt.load_trainer_state(loaded.path)  # weights_only=True inside
    assert state["step"] == 2 and state["data"] == {"seed": 11, "step": 2}
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "loss.png").stat().st_size > 1000


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, verdict_tokens, small_tokenizer, monkeypatch):
    trainer = make_trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path, max_steps=1)
    trainer.fit()
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step()

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half")  # leave a half-written file behind, then die
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="simulated"):
        trainer.save()
    monkeypatch.undo()
    assert [p.name for p in checkpoint_format.list_checkpoints(tmp_path)] == ["step-0000001"]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step-0000001"]  # no temporary folder left
    loaded = checkpoint_format.load_checkpoint(tmp_path)
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert ckpt.load_trainer_state(loaded.path)["step"] == 1


def test_damaged_files_are_named(tmp_path, verdict_tokens, small_tokenizer):
    trainer = make_trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path, max_steps=1)
    trainer.fit()
    folder = checkpoint_format.resolve_checkpoint(tmp_path)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated"):
        checkpoint_format.load_checkpoint(folder)
    state = folder / "trainer_state.pt"
    with open(state, "r+b") as f:
        f.truncate(state.stat().st_size // 3)
    with pytest.raises(ValueError, match=r"trainer_state\.pt.*truncated"):
        ckpt.load_trainer_state(folder)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint_format.resolve_checkpoint(tmp_path / "checkpoints")


def test_keep_last_k(tmp_path, verdict_tokens, small_tokenizer):
    trainer = make_trainer(
        verdict_tokens, small_tokenizer, run_dir=tmp_path, max_steps=5, checkpoint_interval=1, keep_checkpoints=3
    )
    trainer.fit()
    assert [p.name for p in checkpoint_format.list_checkpoints(tmp_path)] == ["step-0000003", "step-0000004", "step-0000005"]


def test_time_budget_state_is_kept_for_resumption(tmp_path, verdict_tokens, small_tokenizer, fake_clock):
    trainer = make_trainer(
        verdict_tokens, small_tokenizer, run_dir=tmp_path, max_steps=100_000, time_budget_s=3.0, eval_interval=50,
        checkpoint_interval=0,
    )
    trainer.train_batches = fake_clock.charge(trainer.train_batches, lambda i: 0.1)  # 0.1 s a step
    result = trainer.fit()
    assert 10 < result.step <= 30  # 3 s of 0.1 s steps, less the reserve for the end of the run
    state = ckpt.load_trainer_state(checkpoint_format.resolve_checkpoint(tmp_path))
    assert state["finished"] and state["plan"]["time_budget_s"] == 3.0 and 0 < state["budget_spent"] <= 3.0
    assert state["plan"]["from_step"] == trainer.config.warmup_steps  # the cosine began after warm-up
    again = make_trainer(verdict_tokens, small_tokenizer, run_dir=tmp_path, max_steps=100_000, time_budget_s=3.0)
    again.load_state(tmp_path)
    assert again.fit().step == result.step  # its budget is spent: nothing to train


def test_split_shorter_than_a_window_is_a_clear_error(verdict_tokens, small_tokenizer):
    train, val = verdict_tokens
    with pytest.raises(ValueError, match="val split holds 20 tokens.*context_length=32"):
        make_trainer((train, val[:20]), small_tokenizer)


def test_absent_device_is_a_clear_error():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda'.*(no CUDA|CPU-only)"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(verdict_tokens, small_tokenizer, precision):
    trainer = make_trainer(verdict_tokens, small_tokenizer, max_steps=3, precision=precision, eval_interval=3)
    assert trainer.scaler.is_enabled() == (precision == "fp16")  # only fp16 needs loss scaling
    result = trainer.fit()
    assert all(math.isfinite(v) for v in result.losses)
    assert result.losses[-1] < math.log(small_tokenizer.vocab_size)
    assert trainer.model.tok_emb.weight.dtype == torch.float32  # weights stay fp32 under autocast


def direct_bigram(train, val, vocab):
    """The interpolated (Witten-Bell) bigram, computed with dense count tables and loops."""
    uni = np.ones(vocab)
    for t in train:
        uni[t] += 1
    uni /= uni.sum()
    pair = np.zeros((vocab, vocab))
    for a, b in zip(train[:-1], train[1:], strict=True):
        pair[a, b] += 1
    total = 0.0
    for a, b in zip(val[:-1], val[1:], strict=True):
        c_a, u_a = pair[a].sum(), (pair[a] > 0).sum()
        lam = c_a / (c_a + u_a) if c_a + u_a else 0.0
        p_bi = pair[a, b] / c_a if c_a else 0.0
        total -= math.log(lam * p_bi + (1 - lam) * uni[b])
    return total / (len(val) - 1), -np.log(uni[val]).mean()


def test_baselines_match_a_direct_computation():
    rng = np.random.default_rng(0)
    vocab = 23
    train = rng.integers(0, vocab, size=2000) % rng.integers(1, vocab, size=2000)  # skewed, some ids unseen
    val = rng.integers(0, vocab, size=300)
    bigram, unigram = direct_bigram(train, val, vocab)
    assert bigram_loss(train, val, vocab) == pytest.approx(bigram, rel=1e-10)
    assert unigram_loss(train, val, vocab) == pytest.approx(unigram, rel=1e-10)
    assert bits_per_byte(math.log(2), 10, 10) == pytest.approx(1.0)
