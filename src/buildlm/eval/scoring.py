"""Log-likelihood of a continuation given a context: the one number most evaluations need.

A causal language model gives, at every position, a distribution over the next token. The
log-probability that it writes ``continuation`` after ``context`` is the sum, over the
continuation's tokens, of the log-probability of each token given everything before it:

    log p(cont | ctx) = sum_i log p(cont_i | ctx, cont_<i)

One forward pass over ``ctx + cont`` (minus its last token) yields all those terms at once.
Multiple-choice benchmarks compare this number across the candidate endings; lm-evaluation-harness
calls it ``loglikelihood`` and also asks whether the continuation is what greedy decoding would
produce (``is_greedy``: every continuation token is the argmax at its position).

Batching: the sequences of a batch differ in length, so they are *right*-padded. In a causal
model a position never attends to later positions, so the pad tokens after a sequence cannot
change its logits; they are simply never read. (Left padding, as `buildlm.infer.Engine` uses for
generation, would need a padding mask and shifted positions instead.)

Tokenization follows lm-evaluation-harness (`encode_pair`): the context's trailing whitespace is
moved to the continuation (BPE vocabularies attach a space to the word after it), then
``context + continuation`` is encoded as a whole and the context's tokens are cut off its front,
so the continuation tokens are those the model would really see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Score:
    """The log-likelihood (nats, <= 0) of a continuation and whether greedy decoding gives it."""

    logprob: float
    is_greedy: bool


def context_length_of(model: nn.Module) -> int:
    """The longest sequence ``model`` accepts (``model.config.context_length``)."""
    return int(model.config.context_length)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text``; special-token text (``<|endoftext|>``) in it is treated as plain text."""
    return tokenizer.encode(text, disallowed_special=())


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(context ids, continuation ids)`` as lm-evaluation-harness splits them (see the module).

    An empty context becomes the end-of-text token, so the first continuation token is still
    predicted from something; a tokenizer without one cannot score a continuation from nothing.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not context:
        eot = getattr(tokenizer, "eot_token", None)
        if eot is None:
            raise ValueError(
                "the context is empty and the tokenizer has no <|endoftext|> token to start "
                "from; give every item a non-empty context"
            )
        return [eot], encode_text(tokenizer, continuation)
    whole = encode_text(tokenizer, context + continuation)
    context_ids = encode_text(tokenizer, context)
    return context_ids, whole[len(context_ids) :]


def hidden_and_head(model: nn.Module, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The model's final hidden states and a function from them to logits.

    Applying the LM head only at the positions that are scored saves (most of) the
    ``T x vocab_size`` logits a full forward pass would build, the largest tensor by far.
    """
    if hasattr(model, "hidden_states") and hasattr(model, "head"):
        return model.hidden_states(idx), model.head
    return model(idx), lambda x: x  # any model mapping ids -> logits


@torch.inference_mode()
def score_continuations(
    model: nn.Module,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int = 8,
) -> list[Score]:
    """`Score` of each ``(context ids, continuation ids)`` pair, in order.

    A sequence longer than the model's context keeps its last ``context_length + 1`` tokens (the
    context is cut from the left; the continuation alone must fit).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limit = context_length_of(model)
    device = next(model.parameters()).device
    rows: list[tuple[list[int], int]] = []  # (model input, number of continuation tokens)
    for i, (ctx, cont) in enumerate(pairs):
        if not cont:
            raise ValueError(f"pair {i}: the continuation has no tokens; nothing to score")
        if not ctx:
            raise ValueError(f"pair {i}: the context has no tokens; start it with a token")
        if len(cont) > limit:
            raise ValueError(
                f"pair {i}: the continuation has {len(cont)} tokens, more than the model's "
                f"context_length={limit}"
            )
        whole = (list(ctx) + list(cont))[-(limit + 1) :]
        rows.append((whole[:-1], len(cont)))
    # Longest first: rows of similar length share a batch, so little is spent on padding.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    scores: list[Score | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = len(rows[chunk[0]][0])
        idx = torch.zeros(len(chunk), width, dtype=torch.long)  # right-padded with id 0
        for b, i in enumerate(chunk):
            ids = rows[i][0]
            idx[b, : len(ids)] = torch.tensor(ids)
        hidden, head = hidden_and_head(model, idx.to(device))  # (B, T, d_model) or logits
        for b, i in enumerate(chunk):
            ids, n = rows[i]
            full = list(pairs[i][0]) + list(pairs[i][1])
            targets = torch.tensor(full[-n:], device=device)  # (n,)
            # Logits at position t predict token t + 1: the last n inputs predict the n targets.
            logits = head(hidden[b, len(ids) - n : len(ids)]).float()  # (n, vocab)
            logprobs = F.log_softmax(logits, dim=-1)
            picked = logprobs.gather(1, targets[:, None]).squeeze(1)  # (n,)
            greedy = bool((logits.argmax(-1) == targets).all())
            scores[i] = Score(float(picked.sum()), greedy)
    return [s for s in scores if s is not None]
