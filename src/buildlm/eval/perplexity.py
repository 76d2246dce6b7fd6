"""Perplexity and bits per byte of a long text, with a sliding window.

A model sees at most ``context_length`` tokens, but a test text is far longer. The simplest
evaluation cuts the text into disjoint chunks; then the first tokens of every chunk are predicted
from almost nothing, and the loss comes out worse than the model really is. The sliding window
(Hugging Face's "perplexity of fixed-length models") fixes that:

- windows of ``context`` tokens start every ``stride`` tokens;
- in each window only the tokens that no earlier window scored count (the others are there as
  context only; their targets are masked out, ``-100`` in Hugging Face's recipe);
- so, for ``stride < context``, every token after the first is scored exactly once, each with
  at least ``context - stride`` tokens of context (except in the first window).

``stride == context`` is the disjoint-chunk evaluation: as in Hugging Face's recipe, the first
token of each chunk has nothing before it in its window and is not scored. A smaller stride
gives each token more context at the cost of about ``context / stride`` times more computation.
The windows are independent, so several run as one batch.

Three numbers come out (``buildlm.train.metrics`` defines the last two):

- *loss*: mean cross-entropy in nats per scored token;
- *perplexity* ``exp(loss)``;
- *bits per byte*: total nats / ln 2 / UTF-8 bytes of the scored tokens. Unlike loss and
  perplexity this compares models with different tokenizers, since it charges the cost to the
  text, not to the tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.eval.metrics import bits_per_byte, perplexity
from buildlm.eval.scoring import context_length_of, encode_text, hidden_and_head


@dataclass(frozen=True)
class PerplexityResult:
    """Loss (nats per token), perplexity, bits per byte, scored tokens and their bytes.

    ``bpb`` is NaN and ``bytes`` 0 when the byte count is unknown (token ids given without a
    tokenizer).
    """

    loss: float
    ppl: float
    bpb: float
    tokens: int
    bytes: int

    @property
    def nats(self) -> float:
        """Total negative log-likelihood of the scored tokens, in nats."""
        return self.loss * self.tokens


@dataclass(frozen=True)
class Window:
    """Tokens ``[begin, end)`` go in; the predictions of tokens ``[first_target, end)`` count."""

    begin: int
    end: int
    first_target: int


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """The windows of the sliding-window evaluation of ``n_tokens`` tokens (see the module)."""
    if context < 2:
        raise ValueError(f"context must be at least 2 tokens, got {context}")
    if not 1 <= stride <= context:
        raise ValueError(
            f"stride must lie in [1, context={context}], got {stride}; a larger stride "
            "would skip tokens"
        )
    if n_tokens < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {n_tokens}")
    windows = []
    scored_until = 1  # token 0 has nothing before it and is never predicted
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        windows.append(Window(begin, end, max(scored_until, begin + 1)))
        scored_until = end
        if end == n_tokens:
            break
    return windows


@torch.inference_mode()
def window_nats(
    model: nn.Module,
    ids: Sequence[int] | torch.Tensor,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> tuple[float, int]:
    """``(total nats, tokens scored)`` of ``ids`` under ``model`` with the sliding window.

    ``context`` defaults to the model's context length, ``stride`` to half of ``context``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limit = context_length_of(model)
    context = limit if context is None else context
    if context > limit:
        raise ValueError(f"context={context} exceeds the model's context_length={limit}")
    stride = max(1, context // 2) if stride is None else stride
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    vocab = int(model.config.vocab_size)
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(
            f"token ids must lie in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}"
        )
    windows = sliding_windows(len(ids), context, stride)
    device = next(model.parameters()).device
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(windows), desc="perplexity", unit="window")
    nats = 0.0
    scored = 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        width = max(w.end - w.begin for w in batch)
        idx = torch.zeros(len(batch), width, dtype=torch.long)  # right-padded; pads never read
        labels = torch.full((len(batch), width), -100, dtype=torch.long)  # -100: not scored
        for b, w in enumerate(batch):
            idx[b, : w.end - w.begin] = ids[w.begin : w.end]
            # Position t predicts token t + 1, so target token j sits at position j - 1 - begin.
            lo, hi = w.first_target - 1 - w.begin, w.end - 1 - w.begin
            labels[b, lo:hi] = ids[w.first_target : w.end]
        hidden, head = hidden_and_head(model, idx.to(device))  # (B, T, d_model)
        labels = labels.to(device)
        keep = labels != -100  # (B, T); the head runs only where a target is scored
        logits = head(hidden[keep]).float()  # (N, vocab)
        nats += float(F.cross_entropy(logits, labels[keep], reduction="sum"))
        scored += int(keep.sum())
        if bar is not None:
            bar.update(len(batch))
            bar.set_postfix(loss=f"{nats / scored:.4f}")
    if bar is not None:
        bar.close()
    return nats, scored


def result_from_nats(nats: float, tokens: int, n_bytes: int | None) -> PerplexityResult:
    """Package a total negative log-likelihood as a `PerplexityResult`."""
    loss = nats / tokens
    bpb = bits_per_byte(loss, tokens, n_bytes) if n_bytes else math.nan
    return PerplexityResult(loss, perplexity(loss), bpb, tokens, n_bytes or 0)


def perplexity_of_ids(
    model: nn.Module,
    ids: Sequence[int] | torch.Tensor,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    n_bytes: int | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """Sliding-window perplexity of token ids; pass ``n_bytes`` (bytes of tokens 1..) for bpb."""
    nats, tokens = window_nats(model, ids, context, stride, batch_size, progress)
    return result_from_nats(nats, tokens, n_bytes)


def evaluate_perplexity(
    model: nn.Module,
    tokenizer: Any,
    text: str,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    max_tokens: int | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """Sliding-window loss, perplexity and bits per byte of ``text``.

    ``max_tokens`` evaluates only the text's first tokens (a quick look at a large corpus: only
    a prefix of the text is tokenized). The byte count is that of the scored tokens (all but
    the first), so bits per byte charges exactly the bytes that were predicted.
    """
    if tokenizer is None:
        raise ValueError("this model folder has no tokenizer; cannot turn the text into tokens")
    if max_tokens is not None:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
        # A token is rarely longer than 32 characters: tokenize a prefix, not a 5 MB corpus.
        text = text[: max_tokens * 32]
    ids = encode_text(tokenizer, text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"the text has {len(ids)} token(s); perplexity needs at least 2")
    n_bytes = len(tokenizer.decode_bytes(ids[1:]))
    return perplexity_of_ids(model, ids, context, stride, batch_size, n_bytes, progress)
