"""Checks for stage 3 (the data pipeline): your dataset, loader and split against buildlm's.

Every check calls your code first (an unfinished stub says ``NotImplementedError`` before
anything else), then compares its answer with ``buildlm.data``'s: ``SlidingWindowDataset``,
``create_dataloader`` and ``prepare_shards``, the function behind ``buildlm prepare``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from buildlm.data.dataset import SlidingWindowDataset, create_dataloader
from buildlm.data.shards import load_split, prepare_shards


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def _show(t: object) -> object:
    return t.tolist() if isinstance(t, torch.Tensor) else t


SETTINGS = [(4, 1), (4, 4), (3, 5), (8, 8), (1, 1)]  # (context_length, stride)


def check_sliding_window(cls, ids: list[int]) -> None:
    """``cls(tokens, context_length, stride)`` must hold the windows SlidingWindowDataset holds."""
    stream = list(ids[:60])
    for t, stride in SETTINGS:
        mine = cls(stream, t, stride)
        ref = SlidingWindowDataset(stream, context_length=t, stride=stride)
        where = f"{cls.__name__}(tokens of length {len(stream)}, context_length={t}, stride={stride})"
        if len(mine) != len(ref):
            raise _fail(f"len({where})", len(ref), len(mine),
                        "window i needs ids i*stride .. i*stride + T (T + 1 ids), so "
                        "(N - T - 1) // stride + 1 windows fit")  # fmt: skip
        for i in range(len(ref)):
            x, y = mine[i]
            rx, ry = ref[i]
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                raise _fail(f"type of {where}[{i}]", "(tensor, tensor)",
                            f"({type(x).__name__}, {type(y).__name__})",
                            "return torch.tensor(...) of dtype torch.long")  # fmt: skip
            if x.dtype != torch.long or y.dtype != torch.long:
                raise _fail(f"dtype of {where}[{i}]", torch.long, (x.dtype, y.dtype),
                            "token ids are int64 (torch.long): nn.Embedding and "
                            "cross_entropy expect it")  # fmt: skip
            if not (torch.equal(x, rx) and torch.equal(y, ry)):
                raise _fail(f"{where}[{i}] as (x, y)", (rx.tolist(), ry.tolist()),
                            (_show(x), _show(y)),
                            "x = tokens[s : s + T], y = tokens[s + 1 : s + T + 1], s = i * stride")  # fmt: skip
    print("SlidingWindow: the same windows as buildlm's SlidingWindowDataset. Correct!")


def check_target_counts(fn) -> None:
    """``fn(n_tokens, context_length, stride)`` must count each token's uses as a target."""
    for n, t, stride in [(20, 4, 4), (20, 4, 1), (30, 5, 3), (23, 4, 6), (9, 8, 1)]:
        got = fn(n, t, stride)
        ds = SlidingWindowDataset(list(range(n)), context_length=t, stride=stride)
        expected = [0] * n
        for i in range(len(ds)):
            for token in ds[i][1].tolist():  # the stream is 0..n-1: a target's value is its index
                expected[token] += 1
        if list(got) != expected:
            raise _fail(f"target_counts({n}, {t}, {stride})", expected, got,
                        "window i's targets are the ids at i*stride + 1 .. i*stride + T; "
                        "token 0 is never a target")  # fmt: skip
    print("target_counts: correct!")


def check_dataloader(make_dataloader, ids: list[int]) -> None:
    """Your loader must yield exactly create_dataloader's batches, in the same order."""
    cases = [
        dict(batch_size=4, context_length=8, stride=8, shuffle=False, drop_last=True, seed=None),
        dict(batch_size=4, context_length=8, stride=8, shuffle=True, drop_last=True, seed=1),
        dict(batch_size=5, context_length=6, stride=3, shuffle=True, drop_last=False, seed=7),
    ]
    tokens = list(ids[:400])
    for kwargs in cases:
        mine = list(make_dataloader(tokens, **kwargs))
        ref = list(create_dataloader(tokens, **kwargs))
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        if len(mine) != len(ref):
            raise _fail(f"number of batches with {args}", len(ref), len(mine),
                        "drop_last=True drops a final, smaller batch")  # fmt: skip
        for k, ((x, y), (rx, ry)) in enumerate(zip(mine, ref, strict=True)):
            if not (torch.equal(x, rx) and torch.equal(y, ry)):
                raise _fail(f"batch {k} inputs with {args}", rx[:, :4].tolist(),
                            _show(x[:, :4]) if isinstance(x, torch.Tensor) else x,
                            "pass shuffle, drop_last and generator=torch.Generator()"
                            ".manual_seed(seed) (None when seed is None) to DataLoader")  # fmt: skip
    print("make_dataloader: the same batches as buildlm's create_dataloader. Correct!")


def check_split(split_train_val, text: str, tokenizer) -> None:
    """Your split must give buildlm's ``prepare_shards`` train and val token streams."""
    for fraction in (0.1, 0.3):
        train, val = split_train_val(text, tokenizer, fraction)
        with tempfile.TemporaryDirectory() as folder:
            story, shards = Path(folder) / "story.txt", Path(folder) / "shards"
            story.write_text(text, encoding="utf-8")
            prepare_shards([story], tokenizer, shards, val_fraction=fraction, num_workers=1,
                           progress=False)  # fmt: skip
            ref_train = load_split(shards, "train").tolist()
            ref_val = load_split(shards, "val").tolist()
        for name, got, expected in (("train", train, ref_train), ("val", val, ref_val)):
            got = _show(got)
            if list(got) != expected:
                hint = (
                    "end each split with tokenizer.eot_token"
                    if list(got)[:-1] == expected[:-1] or list(got) == expected[:-1]
                    else "cut at the first space at or after round(len(text) * (1 - val_fraction)) "
                    "that has an ASCII letter on each side; the space starts the val text"
                )
                raise _fail(f"the {name} ids for val_fraction={fraction} ({len(expected)} ids), "
                            "first and last 5", (expected[:5], expected[-5:]),
                            (list(got)[:5], list(got)[-5:]), hint)  # fmt: skip
    print("split_train_val: the same train and val ids as buildlm's prepare_shards. Correct!")
