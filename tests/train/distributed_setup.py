"""The small training job that the distributed tests run with one and with two processes."""

from __future__ import annotations

import numpy as np
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.train.config import TrainConfig
from buildlm.train.windows import TrainData

STEPS = 20
ACCUM = 2
VOCAB = 96
PROBE = torch.arange(24).reshape(2, 12) % VOCAB  # a fixed input to compare logits on


def learnable_tokens(n: int, seed: int) -> np.ndarray:
    """Mostly ``next = 5 * previous + 3 (mod VOCAB)``, 10% random: a pattern worth learning."""
    rng = np.random.default_rng(seed)
    tokens = np.empty(n, dtype=np.int64)
    tokens[0] = 0
    for i in range(1, n):
        tokens[i] = rng.integers(VOCAB) if rng.random() < 0.1 else (5 * tokens[i - 1] + 3) % VOCAB
    return tokens


# A mixture of experts for the router-log test; its router losses are off so that two ranks
# still train exactly like one process (the balance loss of half a batch is not half of the
# whole batch's), and only the logged figures differ if a rank logs its own tokens' shares.
MOE = dict(n_experts=4, n_active_experts=2, moe_d_ff=32)


def tiny_setup(
    batch_size: int, compile: bool = False, activation_checkpointing: bool = False, moe: bool = False
):
    """A seeded model, its train config and random token data (the same in every process)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = GPT(
        ModelConfig.preset("tiny", vocab_size=VOCAB, context_length=16, d_model=32, n_layers=2,
                           n_heads=2, dropout=0.0, **(MOE if moe else {}))
    )  # fmt: skip
    data = TrainData(learnable_tokens(4000, seed=0), learnable_tokens(800, seed=1))
    config = TrainConfig(
        max_steps=STEPS, time_budget_s=None, batch_size=batch_size, grad_accum_steps=ACCUM,
        context_length=16, lr=3e-3, min_lr=3e-4, warmup_steps=3, device="cpu", seed=7,
        eval_interval=10, eval_batches=2, log_interval=5, sample_interval=0, checkpoint_interval=0,
        progress=False, tensorboard=False, peak_flops=1e9, compile=compile,
        activation_checkpointing=activation_checkpointing, moe_aux_loss_coef=0.0, moe_z_loss_coef=0.0,
    )  # fmt: skip
    return model, config, data
