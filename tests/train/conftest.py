"""Fixtures for the train tests: a small BPE tokenizer trained on The Verdict, and for the
fine-tuning tests a tiny GPT pretrained for two seconds on two plays."""

import numpy as np
import pytest

from buildlm.data.corpora import load_corpus
from buildlm.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def verdict() -> str:
    return load_corpus("the-verdict")


@pytest.fixture(scope="session")
def small_tokenizer(verdict) -> Tokenizer:
    return Tokenizer.train(verdict, 300, pattern="gpt2", progress=False)


# --- fine-tuning fixtures: a tiny GPT pretrained for two seconds on two plays ---------------


@pytest.fixture(scope="session")
def plays_tokenizer() -> Tokenizer:
    from buildlm.data.corpora import corpus_documents

    docs = corpus_documents("shakespeare")
    return Tokenizer.train(docs["hamlet"] + docs["julius_caesar"], 512, pattern="gpt2", progress=False)


def finetune_train_config(**overrides):
    """Fast, quiet, single-thread TrainConfig for fine-tuning tests."""
    from buildlm.train.config import TrainConfig

    settings = dict(
        max_steps=20, time_budget_s=None, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=5,
        weight_decay=0.0, eval_interval=1000, log_interval=10, progress=False, tensorboard=False,
        peak_flops=1e12, device="cpu", num_threads=1, checkpoint_interval=0, sample_interval=0,
        keep_checkpoints=1, seed=0,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, plays_tokenizer):
    """A run folder: a 2-layer d_model=64 GPT (context 128) pretrained for 60 steps."""
    import numpy as np
    import torch

    from buildlm.data.corpora import corpus_documents
    from buildlm.device import seed_everything
    from buildlm.model import GPT, ModelConfig
    from buildlm.train import TrainData, Trainer

    threads = torch.get_num_threads()
    docs = corpus_documents("shakespeare")
    ids = np.asarray(plays_tokenizer.encode_ordinary(docs["hamlet"] + docs["julius_caesar"]), dtype=np.uint16)
    cut = int(len(ids) * 0.95)
    seed_everything(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=plays_tokenizer.vocab_size, context_length=128, d_model=64, n_layers=2, n_heads=4
    )
    run_dir = tmp_path_factory.mktemp("tiny-base")
    train = finetune_train_config(max_steps=60, context_length=64, eval_batches=2)
    Trainer(GPT(config), train, TrainData(ids[:cut], ids[cut:]), plays_tokenizer, run_dir=run_dir, log=lambda m: None).fit()
    torch.set_num_threads(threads)
    return run_dir


@pytest.fixture
def ft_train():
    """The factory of fast fine-tuning TrainConfigs; restores the thread count afterwards."""
    import torch

    threads = torch.get_num_threads()
    yield finetune_train_config
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def prepared_verdict(tmp_path_factory, small_tokenizer):
    """The Verdict tokenized into shards (a `buildlm prepare` folder) with the small tokenizer."""
    from buildlm.data.shards import prepare_shards

    folder = tmp_path_factory.mktemp("verdict-shards")
    prepare_shards(["the-verdict"], small_tokenizer, folder, num_workers=1, progress=False)
    return folder


@pytest.fixture(scope="module")
def verdict_tokens(small_tokenizer, verdict):
    """The Verdict as ids: (train, val), split 90/10."""
    ids = np.asarray(small_tokenizer.encode_ordinary(verdict), dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:]


# --- a fake clock: budgeted runs whose step times the test sets, immune to a busy machine ----


class FakeClock:
    """``time.perf_counter`` for a trainer whose steps cost what the test says, not what the
    machine gives: a step's cost is charged when its batch is drawn (`charge`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def charge(self, batches, cost):
        """Wrap a batch stream: drawing batch i advances the clock by ``cost(i)`` seconds."""
        return _Charged(batches, self, cost)


class _Charged:
    def __init__(self, batches, clock: FakeClock, cost) -> None:
        self.batches, self.clock, self.cost, self.drawn = batches, clock, cost, 0

    def __next__(self):
        self.clock.now += self.cost(self.drawn)
        self.drawn += 1
        return next(self.batches)

    def __getattr__(self, name):  # state_dict / load_state_dict of the real stream
        return getattr(self.batches, name)


@pytest.fixture
def fake_clock(monkeypatch) -> FakeClock:
    """Replace ``time.perf_counter`` with a `FakeClock` for this test."""
    import time

    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    return clock
