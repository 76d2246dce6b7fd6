"""Prompt lookup: drafts for speculative decoding copied from the text itself, no second model.

Much of what a model writes repeats its context: a name, a line of code being edited, a phrase
of the question in the answer. Prompt lookup decoding (Saxena 2023) guesses that the text will
go on as it did the last time it read the same few tokens: it finds the most recent earlier
place where the sequence's last ``n`` tokens occur (longest ``n`` first, from ``max_ngram``
down to ``min_ngram``) and proposes the tokens that followed there. Costless to draft, right
often on repetitive text, and when nothing matches it proposes nothing, so the step is an
ordinary one-token step. The drafts are chosen, not sampled: to the accept/reject rule of
`buildlm.infer.speculative` each is a point mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from buildlm.infer.row import Row


@dataclass
class PromptLookup:
    """Draft up to ``num_tokens`` tokens by matching the last ``max_ngram``..``min_ngram``
    tokens earlier in the row's sequence (prompt and generated text)."""

    num_tokens: int = 4
    max_ngram: int = 3
    min_ngram: int = 1

    def __post_init__(self) -> None:
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {self.num_tokens}")
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(
                f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram} and {self.max_ngram}"
            )

    def start(self, row: Row, context_length: int) -> None:
        """Nothing is cached: the drafts come from the sequence alone."""

    def propose(self, row: Row, n: int) -> tuple[list[int], torch.Tensor | None]:
        return lookup(row.sequence, n, self.max_ngram, self.min_ngram), None

    def keep(self, length: int) -> None:
        """Nothing is cached."""


def lookup(sequence: list[int], n: int, max_ngram: int = 3, min_ngram: int = 1) -> list[int]:
    """Up to ``n`` tokens that followed the latest earlier occurrence of ``sequence``'s last
    ``size`` tokens, for the longest ``size`` in ``max_ngram..min_ngram`` that occurs ([] if none).

    >>> lookup([1, 2, 3, 4, 1, 2], 3)
    [3, 4, 1]
    """
    for size in range(min(max_ngram, len(sequence) - 1), min_ngram - 1, -1):
        tail = sequence[-size:]
        # Latest first; the match must end before the tail does, so something follows it.
        for begin in range(len(sequence) - size - 1, -1, -1):
            if sequence[begin] == tail[0] and sequence[begin : begin + size] == tail:
                return sequence[begin + size : begin + size + n]
    return []
