"""Multiple-choice benchmarks (HellaSwag format): which ending does the model find likeliest?

Each item (`buildlm.eval.choice_items`) is a context and a few candidate endings, one of them
right, from a JSONL file or a bundled set (`buildlm.eval.bundled`). The model does not generate
anything: every ending is scored by its log-likelihood given the context
(`buildlm.eval.scoring`), and the model's answer is the best-scored ending. Two scores:

- ``acc``: the ending with the highest summed log-probability. Long endings have more tokens,
  so more negative terms; this favours short endings.
- ``acc_norm``: the summed log-probability divided by the ending's length in *characters*
  (Python ``len`` of the ending, without the space joining it to the context), exactly as
  lm-evaluation-harness computes ``acc_norm`` (its ``acc_bytes`` divides by UTF-8 bytes
  instead). Dividing by characters rather than tokens keeps the comparison fair across
  tokenizers.

The ending follows the context after a single space (lm-evaluation-harness's
``target_delimiter``), unless the context already ends in whitespace (a newline, in the bundled
Shakespeare set) or is empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from buildlm.eval.bundled import bundled_choice_items, is_bundled_choice
from buildlm.eval.choice_items import ChoiceItem, load_choice_file
from buildlm.eval.scoring import encode_pair, score_continuations


@dataclass
class ChoiceResult:
    """Accuracies over ``n`` items, and every ending's summed log-probability (nats).

    ``chance`` is what guessing scores: the mean over items of 1 / (number of endings), 0.25 on
    four endings each. An accuracy is only worth something above it.
    """

    acc: float
    acc_norm: float
    n: int
    chance: float
    logprobs: list[list[float]] = field(default_factory=list, repr=False)
    predictions: list[int] = field(default_factory=list, repr=False)
    predictions_norm: list[int] = field(default_factory=list, repr=False)


def load_choice_items(data: str | os.PathLike, limit: int | None = None) -> list[ChoiceItem]:
    """Items from a JSONL file or a bundled set's name (``shakespeare-next-line``)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if is_bundled_choice(data):
        return bundled_choice_items(str(data), limit)
    items = load_choice_file(data)
    return items[:limit] if limit is not None else items


def score_choices(
    model: nn.Module,
    tokenizer: Any,
    items: list[ChoiceItem],
    batch_size: int = 16,
    progress: bool = False,
) -> ChoiceResult:
    """Score every ending of every item and report ``acc`` and ``acc_norm``."""
    if tokenizer is None:
        raise ValueError("this model folder has no tokenizer; cannot turn the items into tokens")
    if not items:
        raise ValueError("no items to score")
    pairs = [
        encode_pair(tokenizer, item.context, item.continuation(ending))
        for item in items
        for ending in item.endings
    ]
    scores = []
    chunk = max(batch_size * 8, 1)  # several batches at a time, so the progress bar moves
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc="choice", unit="ending")
    for start in range(0, len(pairs), chunk):
        scores += score_continuations(model, pairs[start : start + chunk], batch_size)
        if bar is not None:
            bar.update(len(pairs[start : start + chunk]))
    if bar is not None:
        bar.close()
    logprobs, predictions, predictions_norm = [], [], []
    position = 0
    for item in items:
        lls = [s.logprob for s in scores[position : position + len(item.endings)]]
        position += len(item.endings)
        normed = [ll / len(ending) for ll, ending in zip(lls, item.endings, strict=True)]
        logprobs.append(lls)
        predictions.append(max(range(len(lls)), key=lls.__getitem__))
        predictions_norm.append(max(range(len(normed)), key=normed.__getitem__))
    n = len(items)
    acc = sum(p == item.label for p, item in zip(predictions, items, strict=True)) / n
    acc_norm = sum(p == item.label for p, item in zip(predictions_norm, items, strict=True)) / n
    chance = sum(1 / len(item.endings) for item in items) / n
    return ChoiceResult(acc, acc_norm, n, chance, logprobs, predictions, predictions_norm)
