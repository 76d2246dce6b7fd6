"""A small draft model for speculative decoding: the guesses of a cheaper model, same tokenizer.

A model a few times smaller than the target agrees with it on most easy tokens (function words,
the rest of a word, a closing bracket). `DraftModel` runs it ahead of the target for ``k``
tokens, each drawn with the row's own logits processors and seed (greedy rows: its argmax), and
returns the distributions it drew them from, so that `buildlm.infer.speculative` can accept or
reject each draft by the exact rule. It keeps a KV cache of its own over the row's window: each
step it first catches up on the tokens the target accepted (and the one it added), and after
the verification its cache is rolled back to the part of its guesses that was kept.
"""

from __future__ import annotations

import torch
from torch import nn

from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.processors import check_samplable
from buildlm.infer.row import Row
from buildlm.infer.speculative import check_speculable, forward_tokens


class DraftModel:
    """``model`` (a `buildlm.model.GPT` with the target's vocabulary) drafting ``num_tokens``
    tokens a step."""

    def __init__(self, model: nn.Module, num_tokens: int = 4) -> None:
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        check_speculable(model, "the draft model")
        self.model = model.eval()
        self.num_tokens = num_tokens
        self.cache: StaticKVCache | None = None
        self.cached = 0  # how many tokens of the row's window the cache holds

    def check_target(self, target: nn.Module) -> None:
        """Refuse a target this model cannot draft for: another vocabulary, a longer context."""
        mine, theirs = self.model.config, target.config
        if mine.vocab_size != theirs.vocab_size:
            raise ValueError(
                f"the draft model's vocabulary ({mine.vocab_size} tokens) is not the target's "
                f"({theirs.vocab_size}); draft with a model of the same tokenizer"
            )
        if mine.context_length < theirs.context_length:
            raise ValueError(
                f"the draft model's context ({mine.context_length}) is shorter than the target's "
                f"({theirs.context_length}); draft with a model of at least the same context"
            )

    def start(self, row: Row, context_length: int) -> None:
        if self.cache is None or self.cache.max_len < context_length:
            self.cache = StaticKVCache.for_model(self.model, 1, max_len=context_length)
        self.cache.reset()
        self.cached = 0

    def propose(self, row: Row, n: int) -> tuple[list[int], torch.Tensor | None]:
        window = row.window
        logits = forward_tokens(self.model, window[self.cached :], self.cache)[-1:]  # (1, V)
        drafts: list[int] = []
        probs = []
        for i in range(n):
            if i:
                logits = forward_tokens(self.model, drafts[-1:], self.cache)  # (1, V)
            scores = logits
            if row.processors:
                history = torch.tensor([row.sequence + drafts], device=logits.device)
                scores = row.processors(history, logits)
            if row.params.temperature == 0:
                drafts.append(int(scores.argmax()))
                continue
            check_samplable(scores)
            q = torch.softmax(scores[0], dim=-1)  # (V,)
            drafts.append(int(torch.multinomial(q, 1, generator=row.generator)))
            probs.append(q)
        self.cached = len(window) + n - 1  # the last draft was never fed
        return drafts, torch.stack(probs) if probs else None

    def keep(self, length: int) -> None:
        if self.cached > length:
            self.cache.truncate(length)
            self.cached = length
