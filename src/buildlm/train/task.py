"""What a fine-tuning task gives the `Trainer`: batches, a loss and an evaluation.

Pretraining and every kind of fine-tuning share one training loop (learning-rate schedule,
gradient accumulation, clipping, mixed precision, checkpoints, metrics). What differs is only

- the **batches**: random token windows for pretraining; padded labelled texts for
  classification; prompt + response with a loss mask for instruction tuning; chosen/rejected
  pairs for DPO;
- the **loss** computed from a batch;
- the **evaluation** figures (accuracy, reward margin, ...).

A `Task` bundles those three, and ``Trainer(model, config, task=task)`` trains with it. The
batch streams are `buildlm.data.stream.SeededBatchStream`s: batch ``k`` depends only on
``(seed, k)``, so ``state_dict()`` is tiny and resuming replays exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from buildlm.data.batching import train_and_val_batches


@runtime_checkable
class BatchStream(Protocol):
    """An endless, seeded, resumable stream of batches."""

    def __next__(self) -> Any: ...

    def batch_at(self, step: int) -> Any: ...

    def state_dict(self) -> dict[str, int]: ...

    def load_state_dict(self, state: dict[str, int]) -> None: ...


class Task(Protocol):
    """A fine-tuning objective the `Trainer` can run."""

    train_batches: BatchStream
    val_batches: BatchStream | None

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The scalar loss of one batch (gradients flow through ``model``)."""
        ...

    def batch_tokens(self, batch: Any) -> int:
        """How many tokens the model reads for this batch (for tokens/s)."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation figures, at least ``val_loss``; called under ``torch.no_grad``."""
        ...

    def describe(self, metrics: dict[str, float]) -> str:
        """One line for the progress log."""
        ...

    # Optional: ``step_metrics() -> dict[str, float]``, the last step's own figures (GRPO's
    # reward, accuracy, KL, ...): the Trainer adds them to metrics.csv at each logged step.


class PaddedExamplesTask:
    """Base of the fine-tuning tasks whose batches are lists of encoded examples, right-padded.

    A subclass names ``collate(examples, pad_id)`` (a staticmethod) and, when an example's
    length is not ``len(example.ids)``, ``length(example)``; this constructor builds the
    shuffled, length-bucketed training stream and the fixed-order validation stream
    (`buildlm.data.batching.train_and_val_batches`).
    """

    @staticmethod
    def collate(examples: list[Any], pad_id: int) -> Any:
        raise NotImplementedError

    @staticmethod
    def length(example: Any) -> int:
        return len(example.ids)

    def __init__(
        self,
        train: Sequence[Any],
        val: Sequence[Any] | None,
        batch_size: int,
        eval_batch_size: int = 64,
        seed: int = 0,
        device: str | torch.device = "cpu",
        pad_id: int = 0,
    ) -> None:
        def collate(examples: list[Any]) -> Any:
            return self.collate(examples, pad_id)

        self.train_batches, self.val_batches = train_and_val_batches(
            train, val, collate, self.length, batch_size, eval_batch_size, seed, device
        )
