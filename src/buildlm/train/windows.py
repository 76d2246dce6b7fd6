"""Pretraining's batches: random windows of the train and val token arrays.

Fine-tuning brings its own batches (a `task.Task`). Pretraining cuts windows of
``context_length + 1`` tokens at random positions of the token arrays
(`buildlm.data.dataset.RandomWindowBatches`: batch ``k`` depends only on ``(seed, k)``, so a run
resumes from one integer). Under DDP/FSDP every rank draws the same global batch and keeps its
own ``batch_size`` windows of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from buildlm.data.dataset import RandomWindowBatches


@dataclass
class TrainData:
    """The token arrays to train on; ``val_bytes`` (UTF-8 bytes of the val text) enables bits per byte."""

    train: np.ndarray
    val: np.ndarray | None = None
    val_bytes: int | None = None


def window_batches(
    data: TrainData,
    batch_size: int,
    context_length: int,
    vocab_size: int,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[RandomWindowBatches, RandomWindowBatches | None]:
    """The train and val batch streams (val None without val tokens) for a model of
    ``vocab_size`` ids; a split shorter than one window, or an id the model has no embedding
    for, is a one-line error naming the setting to change."""
    for split, tokens in (("train", data.train), ("val", data.val)):
        if tokens is not None and 0 < len(tokens) <= context_length:
            raise ValueError(
                f"the {split} split holds {len(tokens)} tokens, fewer than one window of "
                f"context_length={context_length} + 1; use more text, a larger "
                "--data.val_fraction, or a smaller --train.context_length"
            )
    _check_vocab(data.train, "train", vocab_size)
    train = RandomWindowBatches(
        data.train, batch_size, context_length, seed=seed, device=device, rank=rank, world_size=world_size
    )
    if data.val is None or len(data.val) == 0:
        return train, None
    _check_vocab(data.val, "val", vocab_size)
    val = RandomWindowBatches(
        data.val, batch_size, context_length, seed=seed + 1, device=device, rank=rank, world_size=world_size
    )
    return train, val


def _check_vocab(tokens: np.ndarray, split: str, vocab_size: int) -> None:
    if len(tokens) == 0:
        return
    top = int(np.max(tokens[: 1 << 24]))
    if top >= vocab_size:
        raise ValueError(
            f"the {split} tokens use id {top} but the model's vocab_size is "
            f"{vocab_size}; set --model.vocab_size to the tokenizer's vocab_size"
        )
