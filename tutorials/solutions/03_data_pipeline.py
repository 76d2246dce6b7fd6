"""Worked answers for stage 3. Load one into its cell with `%load -s NAME solutions/03_data_pipeline.py`."""

# %% exercise: sliding_window
import torch
from torch.utils.data import Dataset


class SlidingWindow(Dataset):
    """Windows of ``context_length`` ids every ``stride`` ids, with next-token targets."""

    def __init__(self, tokens: list[int], context_length: int, stride: int) -> None:
        self.tokens = torch.tensor(tokens, dtype=torch.long)
        self.context_length = context_length
        self.stride = stride

    def __len__(self) -> int:
        return (len(self.tokens) - self.context_length - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = i * self.stride
        window = self.tokens[start : start + self.context_length + 1]  # (T + 1,)
        return window[:-1], window[1:]  # (T,), (T,)


# %% exercise: target_counts
def target_counts(n_tokens: int, context_length: int, stride: int) -> list[int]:
    """How many windows use token i as a target, for every i."""
    counts = [0] * n_tokens
    n_windows = (n_tokens - context_length - 1) // stride + 1
    for w in range(n_windows):
        start = w * stride
        for i in range(start + 1, start + context_length + 1):  # targets: start+1 .. start+T
            counts[i] += 1
    return counts


# %% exercise: make_dataloader
import torch
from torch.utils.data import DataLoader


def make_dataloader(
    tokens: list[int],
    batch_size: int,
    context_length: int,
    stride: int,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int | None = None,
) -> DataLoader:
    """Batches of (inputs, targets), each (batch_size, context_length), from SlidingWindow."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        SlidingWindow(tokens, context_length, stride),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
    )


# %% exercise: split_train_val
import re


def split_train_val(text: str, tokenizer, val_fraction: float) -> tuple[list[int], list[int]]:
    """The last ``val_fraction`` of ``text`` for validation, cut before a space between letters."""
    at = round(len(text) * (1 - val_fraction))
    match = re.compile(r"[A-Za-z] [A-Za-z]").search(text, max(at - 1, 0))
    cut = match.start() + 1 if match else len(text)  # the index of the space
    train = tokenizer.encode_ordinary(text[:cut]) + [tokenizer.eot_token]
    val = tokenizer.encode_ordinary(text[cut:]) + [tokenizer.eot_token]
    return train, val
