"""Stage 3: turning a long stream of token ids into (input, target) training pairs.

A language model learns to predict the next token. Cut a window of ``context_length + 1`` ids
out of the stream: the first ``context_length`` are the input, the same window shifted one place
to the left is the target, so target ``t`` is the token that follows input position ``t``.

Two ways to cut windows are here:

- :class:`SlidingWindowDataset` slides a window along the stream by ``stride`` ids (the book's
  ``GPTDatasetV1``). With ``stride == context_length`` the windows do not overlap. It is an
  ordinary map-style ``torch.utils.data.Dataset``, so a ``DataLoader`` shuffles and batches it.
- :class:`RandomWindowBatches` draws windows at random positions of a (possibly huge,
  memory-mapped) token array, the way nanoGPT samples OpenWebText. Batch ``k`` depends only on
  ``(seed, k)``, so the whole "data position" of a run is one integer: saving it and restoring it
  resumes training on exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from buildlm.data.stream import SeededBatchStream


def _as_token_array(tokens: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    """A 1-D integer numpy view of ``tokens`` (no copy for numpy arrays and memmaps)."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of token ids, got shape {tuple(array.shape)}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {array.dtype}")
    return array


def _check_long_enough(n_tokens: int, context_length: int) -> None:
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    if n_tokens < context_length + 1:
        raise ValueError(
            f"the text is {n_tokens} tokens long, too short for one training window of "
            f"context_length={context_length} (+1 for the shifted target); use a longer corpus "
            f"or a context_length of at most {max(n_tokens - 1, 1)}"
        )


class SlidingWindowDataset(Dataset):
    """Windows of ``context_length`` ids taken every ``stride`` ids, with next-token targets.

    Item ``i`` is ``(tokens[s : s + T], tokens[s + 1 : s + T + 1])`` with ``s = i * stride`` and
    ``T = context_length``; windows that would run past the end are dropped.
    """

    def __init__(
        self,
        tokens: Sequence[int] | np.ndarray | torch.Tensor,
        context_length: int,
        stride: int | None = None,
    ) -> None:
        stride = context_length if stride is None else stride
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.tokens = torch.as_tensor(_as_token_array(tokens).astype(np.int64, copy=False))
        _check_long_enough(len(self.tokens), context_length)
        self.context_length = context_length
        self.stride = stride
        # Window s needs ids s .. s+T inclusive, so the last start is len - T - 1.
        self._n = (len(self.tokens) - context_length - 1) // stride + 1

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self._n <= index < self._n:
            raise IndexError(f"window {index} out of range for {self._n} windows")
        start = (index % self._n) * self.stride
        window = self.tokens[start : start + self.context_length + 1]  # (T + 1,)
        return window[:-1], window[1:]  # (T,), (T,)


def create_dataloader(
    text_or_tokens: str | Sequence[int] | np.ndarray | torch.Tensor,
    tokenizer: Any = None,
    batch_size: int = 4,
    context_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
) -> DataLoader:
    """A ``DataLoader`` of ``(inputs, targets)`` batches, each ``(batch_size, context_length)``.

    ``text_or_tokens`` is raw text (encoded with ``tokenizer``, GPT-2's by default, with
    ``<|endoftext|>`` allowed as the document separator) or already-encoded ids. ``seed`` fixes
    the shuffling order so two runs see the same batches.
    """
    if isinstance(text_or_tokens, str):
        if tokenizer is None:
            from buildlm.tokenizer import Tokenizer

            tokenizer = Tokenizer.pretrained("gpt2")
        tokens = tokenizer.encode(text_or_tokens, allowed_special={"<|endoftext|>"})
    else:
        tokens = text_or_tokens
    dataset = SlidingWindowDataset(tokens, context_length, stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"only {len(dataset)} windows of context_length={context_length} (stride {stride}) fit "
            f"in the text, fewer than batch_size={batch_size}, and drop_last=True would yield no "
            "batch; use a smaller batch_size, stride or context_length, or drop_last=False"
        )
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )


class RandomWindowBatches(SeededBatchStream):
    """An endless, seeded, resumable stream of random-window batches from a token array.

    ``tokens`` may be a ``numpy.memmap`` of a shard far larger than memory: each batch touches
    only ``batch_size`` windows of it. Batch number ``k`` is drawn with a generator seeded by
    ``(seed, k)``, so ``state_dict()`` is just ``{"seed", "step"}`` and a restored stream
    continues with exactly the batches an uninterrupted one would have produced.

    ``rank`` and ``world_size`` give each data-parallel worker its own share of every global
    batch (``batch_size`` is per worker).
    """

    def __init__(
        self,
        tokens: np.ndarray | Sequence[int],
        batch_size: int,
        context_length: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.tokens = _as_token_array(tokens)
        _check_long_enough(len(self.tokens), context_length)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.context_length = context_length
        self.seed = seed
        self.device = torch.device(device)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.rank = rank
        self.world_size = world_size
        self.step = 0

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``step`` (does not move the stream)."""
        # One global batch of batch_size * world_size windows per step, drawn the same way on
        # every rank; rank r takes its r-th share. So N ranks of batch b see exactly the windows
        # one process of batch N*b sees, and their averaged gradients are that process's.
        rng = np.random.default_rng([self.seed, step, 0, 1])
        n_starts = len(self.tokens) - self.context_length  # starts 0 .. len - T - 1
        starts = rng.integers(0, n_starts, size=self.batch_size * self.world_size)
        starts = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        width = self.context_length + 1
        windows = np.stack([self.tokens[s : s + width] for s in starts]).astype(np.int64)
        batch = torch.from_numpy(windows)  # (B, T + 1)
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()  # (B, T), (B, T)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            x, y = x.to(self.device), y.to(self.device)
        return x, y

