"""Speculative decoding: guess several tokens cheaply, check them all in one pass of the model.

Decoding one token at a time reads every weight of the model once per token; on a CPU (and at
batch 1 on a GPU) that read, not the arithmetic, is the cost. A forward pass over ``k + 1``
tokens reads the weights once too, so if something cheap can *guess* the next ``k`` tokens, the
model can score all the guesses in one pass and keep the ones it agrees with: several tokens
for the price of one step whenever the guesses are good, one token (as before) when they are not.

The guesser is a *drafter* (`Drafter`): a small model with the same tokenizer
(`buildlm.infer.draft_model`), or the text itself, copying what followed the last place the
current ending appeared (`buildlm.infer.prompt_lookup`, no second model at all).

**The rule that keeps the output exact** (Leviathan et al. 2023, Chen et al. 2023). The target
gives ``p_i``, its next-token distribution after the prefix and drafts ``1..i``; the drafter drew
draft ``x_{i+1}`` from its own ``q_i``. Going left to right, accept ``x`` with probability
``min(1, p(x) / q(x))``; at the first rejection draw the replacement from the leftover mass
``norm(max(0, p - q))`` and stop; if all ``k`` were accepted, draw one more token from ``p_k``.
Each emitted token is then distributed exactly as ``p`` (accepted: ``min(q, p)``; replaced:
``max(0, p - q)``; the two add up to ``p``), whatever ``q`` is: a bad drafter costs speed, never
correctness. A drafter that copies (prompt lookup) is a point mass, ``q(x) = 1``: accept with
probability ``p(x)``, else draw from ``p`` without ``x``. Greedy decoding (``temperature=0``) is
the same rule with ``p`` the point mass on the argmax: keep drafts while they equal the
target's argmax, then take the argmax where they first differ, token for token what plain
greedy decoding gives. ``p`` and ``q`` both come out of the row's logits processors
(penalties, temperature, top-k/p, min-p), each with the history it would have had.

**Rolling back.** Verifying writes the keys and values of all ``k`` drafts into the cache; the
rejected ones are simply forgotten by moving the cache's offset back (`StaticKVCache.truncate`),
and the same for the draft model's cache. A ring of slots (a sliding-window layer) has already
overwritten older keys, so windowed models are refused.

**Batches.** Rows accept different numbers of tokens, so `speculative_decode` decodes a batch's
rows one after another, each at batch 1 (where the speed-up lives). A row's window slides
exactly as in `buildlm.infer.batch` (`Row.slide`), and a step never drafts past the context,
so every token is scored on the window plain decoding would use. Tool calls are refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from buildlm.infer.float32_matmuls import float32_matmuls
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.processors import (
    FrequencyPenalty,
    PresencePenalty,
    RepetitionPenalty,
    check_samplable,
)
from buildlm.infer.requests import EngineStats
from buildlm.infer.row import Row

# The processors that read the history (the tokens so far); the others only reshape scores.
PENALTIES = (RepetitionPenalty, FrequencyPenalty, PresencePenalty)


class Drafter(Protocol):
    """What proposes draft tokens for one row at a time (`buildlm.infer.prompt_lookup`,
    `buildlm.infer.draft_model`)."""

    num_tokens: int  # k: the most tokens proposed per step

    def start(self, row: Row, context_length: int) -> None:
        """A row's (new or slid) window begins: forget what was cached for the last one."""

    def propose(self, row: Row, n: int) -> tuple[list[int], torch.Tensor | None]:
        """Up to ``n`` tokens to follow ``row.sequence``, and the (len, V) probabilities each
        was drawn from (None: chosen deterministically, a point mass on each token)."""

    def keep(self, length: int) -> None:
        """Only the first ``length`` tokens of the row's window (drafts included) are valid."""


def check_speculable(model: nn.Module, what: str = "the model") -> None:
    """Refuse a model whose cache cannot be rolled back (sliding-window layers keep a ring)."""
    cfg = model.config
    windows = [cfg.layer_window(i) for i in range(cfg.n_layers)]
    if any(w is not None and w < cfg.context_length for w in windows):
        raise ValueError(
            f"{what} has sliding-window layers, whose cache cannot be rolled back; "
            "decode it without speculation (no draft model or prompt lookup)"
        )


def target_probs(row: Row, drafts: list[int], logits: torch.Tensor) -> torch.Tensor:
    """The row's processed next-token distributions (n + 1, V): position i after ``drafts[:i]``.

    Greedy rows get point masses on the processed argmax (ties: the first, as ``argmax``).
    """
    if row.params.temperature != 0 and not any(isinstance(p, PENALTIES) for p in row.processors):
        # Warpers alone never read the history: all positions in one call.
        history = torch.tensor([row.sequence], device=logits.device).expand(len(logits), -1)
        scores = row.processors(history, logits)
        check_samplable(scores)
        return torch.softmax(scores, dim=-1)
    rows = []
    for i in range(len(drafts) + 1):
        scores = logits[i : i + 1]
        if row.processors:
            history = torch.tensor([row.sequence + drafts[:i]], device=logits.device)
            scores = row.processors(history, scores)
        if row.params.temperature == 0:
            rows.append(nn.functional.one_hot(scores.argmax(dim=-1), scores.shape[-1]).float())
        else:
            check_samplable(scores)
            rows.append(torch.softmax(scores, dim=-1))
    return torch.cat(rows)  # (n + 1, V)


def accept_drafts(
    p: torch.Tensor,
    drafts: list[int],
    q: torch.Tensor | None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The tokens one verification step emits: the accepted drafts and one more.

    ``p`` (n + 1, V): the target's distributions; ``drafts``: n proposed ids; ``q`` (n, V): the
    distributions they were drawn from, or None for point masses. Every emitted token is
    distributed as the target's ``p`` (see the module docstring).
    """
    out = []
    for i, x in enumerate(drafts):
        q_x = 1.0 if q is None else float(q[i, x])
        p_x = float(p[i, x])
        if p_x >= q_x or (p_x > 0 and _uniform(generator) * q_x < p_x):  # min(1, p/q)
            out.append(x)
            continue
        if q is None:
            residual = p[i].clone()
            residual[x] = 0.0
        else:
            residual = (p[i] - q[i]).clamp(min=0.0)
        if float(residual.sum()) <= 0.0:  # p == q up to rounding: nothing left over
            residual = p[i]
        out.append(_draw(residual, generator))
        return out
    out.append(_draw(p[len(drafts)], generator))
    return out


def accept_greedy(best: list[int], drafts: list[int]) -> list[int]:
    """`accept_drafts` for a greedy target: keep the drafts while they equal the target's
    argmax ``best`` (n + 1 ids), then add the argmax after the last one kept."""
    out = []
    for x, b in zip(drafts, best, strict=False):
        if x != b:
            break
        out.append(x)
    return [*out, best[len(out)]]


def _uniform(generator: torch.Generator | None) -> float:
    device = generator.device if generator is not None else "cpu"
    return float(torch.rand((), generator=generator, device=device))


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One id drawn in proportion to ``weights`` (V,); a point mass needs no random draw."""
    if int((weights > 0).sum()) == 1:
        return int(weights.argmax())
    return int(torch.multinomial(weights / weights.sum(), 1, generator=generator))


def speculative_decode(
    model: nn.Module, drafter: Drafter, rows: list[Row], stats: EngineStats
) -> Iterator[list[str]]:
    """Decode ``rows`` one after another with ``drafter``'s guesses; yields the rows' new text
    per step (in ``rows`` order, "" for the rows not being decoded)."""
    for i, row in enumerate(rows):
        if row.tools is not None:
            raise ValueError("tool calls and speculative decoding cannot be combined; drop one")
        for text in _decode_row(model, drafter, row, stats):
            texts = [""] * len(rows)
            texts[i] = text
            yield texts


def _decode_row(model: nn.Module, drafter: Drafter, row: Row, stats: EngineStats) -> Iterator[str]:
    """One row to the end: prefill its window, then draft, verify, keep, until it is done."""
    context = model.config.context_length
    cache = StaticKVCache.for_model(model, 1, max_len=context)
    _start(model, drafter, row, cache, stats)
    while not row.done:
        t0 = time.perf_counter()
        window = row.window  # the cache holds all of it but its last token
        # Never past the context (the window plain decoding would use) nor past the budget.
        n = max(0, min(drafter.num_tokens, context - len(window), row.remaining - 1))
        drafts, q = drafter.propose(row, n) if n else ([], None)
        logits = forward_tokens(model, [window[-1], *drafts], cache)  # (n + 1, V)
        if row.params.temperature == 0 and not row.processors:  # plain greedy: no distributions
            tokens = accept_greedy(logits.argmax(dim=-1).tolist(), drafts)
        else:
            tokens = accept_drafts(target_probs(row, drafts, logits), drafts, q, row.generator)
        accepted = len(tokens) - 1
        cache.truncate(len(window) + accepted)  # forget the rejected drafts
        drafter.keep(len(window) + accepted)
        stats.draft_tokens += len(drafts)
        stats.accepted_tokens += accepted
        text = ""
        for token in tokens:  # a stop token or string inside the block ends the row there
            text += row.push(token)
            stats.decode_tokens += 1
            if row.done:
                break
        stats.decode_steps += 1
        stats.decode_s += time.perf_counter() - t0
        yield text
        if row.outgrew(context):  # slide as plain decoding does, and prefill again
            _start(model, drafter, row, cache, stats)


def _start(
    model: nn.Module, drafter: Drafter, row: Row, cache: StaticKVCache, stats: EngineStats
) -> None:
    """Slide the row if its window outgrew the context; cache all of the window but its last
    token (each step feeds that one with the drafts)."""
    t0 = time.perf_counter()
    row.slide(model.config.context_length)
    cache.reset()
    window = row.window
    if len(window) > 1:
        forward_tokens(model, window[:-1], cache, logits=False)
    drafter.start(row, model.config.context_length)
    stats.prefill_tokens += len(window) - 1
    stats.prefill_s += time.perf_counter() - t0


def forward_tokens(
    model: nn.Module, ids: list[int], cache: StaticKVCache, logits: bool = True
) -> torch.Tensor | None:
    """``ids`` through ``model`` after what ``cache`` holds: float32 logits (len(ids), V)."""
    device = next(model.parameters()).device
    with float32_matmuls(model, len(ids)):
        hidden = model.hidden_states(torch.tensor([ids], device=device), cache)  # (1, T, d)
        return model.head(hidden[0]).float() if logits else None
