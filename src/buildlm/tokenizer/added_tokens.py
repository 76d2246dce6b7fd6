"""Added tokens: text matched whole before the BPE model sees it (Hugging Face's added vocabulary).

A ``tokenizer.json`` lists ``added_tokens``: the special ones (``<s>``, ``<start_of_turn>``,
Mistral v0.3's ``[INST]``) and sometimes ordinary ones (Gemma's HTML tags). Hugging Face looks
for them in the text first, leftmost and longest first, and encodes only the text between them
with the model, each piece on its own. The rules kept here:

- a token with ``normalized: false`` is looked for in the raw text; one with ``normalized: true``
  in the normalized text, by its normalized content (a ``Prepend("▁")`` normalizer turns
  ``"</s>"`` into ``"▁</s>"``, and that is what must appear);
- ``lstrip`` / ``rstrip``: the match swallows the whitespace on its left / right;
- an ordinary added token always matches; a special one only when the caller allows it
  (``specials.py``), otherwise its text is ordinary text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from buildlm.tokenizer.specials import special_regex


@dataclass(frozen=True)
class AddedToken:
    """One entry of ``added_tokens`` (``single_word`` is not supported)."""

    content: str
    id: int
    special: bool = True
    normalized: bool = False
    lstrip: bool = False
    rstrip: bool = False

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "content": self.content,
            "single_word": False,
            "lstrip": self.lstrip,
            "rstrip": self.rstrip,
            "normalized": self.normalized,
            "special": self.special,
        }


def read_added_tokens(entries: object, path: str | os.PathLike) -> list[AddedToken]:
    """The ``added_tokens`` of a tokenizer.json, checked."""
    tokens = []
    for entry in entries or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise ValueError(
                f"{path}: an added token is not {{'id': ..., 'content': ...}}: {entry!r}"
            )
        if entry.get("single_word"):
            raise ValueError(
                f"{path}: added token {entry['content']!r} has single_word=true, which is not supported"
            )
        special = bool(entry.get("special", False))
        tokens.append(
            AddedToken(
                entry["content"],
                int(entry["id"]),
                special,
                bool(entry.get("normalized", not special)),
                bool(entry.get("lstrip", False)),
                bool(entry.get("rstrip", False)),
            )
        )
    return tokens


class AddedMatcher:
    """Cuts a text at the occurrences of some added tokens.

    ``patterns`` maps the text to look for (the content, or the normalized content) to its token.
    """

    def __init__(self, patterns: dict[str, AddedToken]) -> None:
        self._tokens = patterns
        self._regex = special_regex(frozenset(patterns))

    def split(self, text: str) -> list[tuple[str | int, int]]:
        """``text`` as pieces in order: ``(text piece, start offset)`` for the text between
        matches and ``(token id, start offset)`` for each match; no empty text pieces."""
        pieces: list[tuple[str | int, int]] = []
        done = 0  # end of the last match
        m = self._regex.search(text)
        while m is not None:
            token = self._tokens[m.group()]
            start, end = m.span()
            if token.lstrip:  # swallow the whitespace before (not into the previous match)
                start = max(done, len(text[:start].rstrip()))
            if token.rstrip:
                end = len(text) - len(text[end:].lstrip())
            if done < start:
                pieces.append((text[done:start], done))
            pieces.append((token.id, start))
            done = end
            m = self._regex.search(text, end)
        if done < len(text):
            pieces.append((text[done:], done))
        return pieces
