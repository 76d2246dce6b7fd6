"""Batches of whole examples (not windows): shuffled per epoch, length-bucketed, resumable.

Fine-tuning data is a list of examples of different lengths. Padding every batch to its longest
example wastes compute on pad tokens, and a batch that mixes a 10-token and a 120-token example
is mostly padding. *Length bucketing* fixes that while keeping the order random:

1. each epoch, shuffle the examples (a generator seeded by ``(seed, epoch)``);
2. cut the shuffled list into chunks of ``batch_size * bucket_batches`` examples and sort each
   chunk by length, so neighbours have similar lengths;
3. cut the chunks into batches, then shuffle the order of the batches.

Batch ``k`` depends only on ``(seed, k)``, as in `buildlm.data.dataset.RandomWindowBatches`,
so the stream's whole state is one integer and a resumed run sees exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from buildlm.data.stream import SeededBatchStream

T = TypeVar("T")


def move_batch(batch: Any, device: torch.device) -> Any:
    """A batch (tensor, tuple/list/dict of tensors or a dataclass of them) on ``device``."""
    if device.type == "cpu":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_batch(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move_batch(v, device) for k, v in batch.items()}
    return batch


class ExampleBatches(SeededBatchStream, Generic[T]):
    """An endless stream of batches drawn from ``examples`` and turned into tensors by ``collate``.

    ``lengths`` (one per example) turns on length bucketing; ``shuffle=False`` gives the
    examples in order, sorted by length when lengths are given (for evaluation: the batches
    ``0 .. num_batches - 1`` cover every example exactly once).
    """

    def __init__(
        self,
        examples: Sequence[T],
        collate: Callable[[list[T]], Any],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        lengths: Sequence[int] | None = None,
        bucket_batches: int = 16,
        device: str | torch.device = "cpu",
    ) -> None:
        if not examples:
            raise ValueError("no examples to batch: the dataset is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if lengths is not None and len(lengths) != len(examples):
            raise ValueError(f"{len(lengths)} lengths for {len(examples)} examples")
        self.examples = examples
        self.collate = collate
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.bucket_batches = max(1, bucket_batches)
        self.device = torch.device(device)
        self.num_batches = -(-len(examples) // batch_size)  # ceil
        self.step = 0
        self._plan_epoch: int | None = None
        self._plan: list[np.ndarray] = []

    def _make_plan(self, epoch: int) -> list[np.ndarray]:
        """The batches (lists of example indices) of one epoch."""
        n = len(self.examples)
        if not self.shuffle:
            order = np.arange(n) if self.lengths is None else np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        if self.lengths is not None:
            chunk = self.batch_size * self.bucket_batches
            parts = [order[i : i + chunk] for i in range(0, n, chunk)]
            order = np.concatenate([p[np.argsort(self.lengths[p], kind="stable")] for p in parts])
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def indices_at(self, step: int) -> np.ndarray:
        """The example indices of batch number ``step``."""
        epoch, i = divmod(step, self.num_batches)
        if epoch != self._plan_epoch:
            self._plan, self._plan_epoch = self._make_plan(epoch), epoch
        return self._plan[i]

    def batch_at(self, step: int) -> Any:
        """Batch number ``step`` (does not move the stream)."""
        batch = self.collate([self.examples[int(j)] for j in self.indices_at(step)])
        return move_batch(batch, self.device)


    def epoch_batches(self) -> list[Any]:
        """Every batch of one pass (batches ``0 .. num_batches - 1``)."""
        return [self.batch_at(k) for k in range(self.num_batches)]


def train_and_val_batches(
    train: Sequence[T],
    val: Sequence[T] | None,
    collate: Callable[[list[T]], Any],
    length: Callable[[T], int],
    batch_size: int,
    eval_batch_size: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[ExampleBatches, ExampleBatches | None]:
    """The two streams every fine-tuning task needs: shuffled, length-bucketed training batches
    and fixed-order validation batches (``None`` without a validation split)."""
    train_batches = ExampleBatches(
        train, collate, batch_size, seed=seed, lengths=[length(e) for e in train], device=device
    )
    val_batches = None
    if val:
        val_batches = ExampleBatches(
            val, collate, eval_batch_size, shuffle=False, lengths=[length(e) for e in val],
            device=device,
        )  # fmt: skip
    return train_batches, val_batches
