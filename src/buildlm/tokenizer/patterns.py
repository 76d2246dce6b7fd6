"""Pre-tokenization: the regex that cuts text into chunks before byte-pair merging.

A byte-level BPE never merges across chunk boundaries, so this regex decides what a token can
be: GPT-2's keeps a leading space with the word that follows (``" world"``), splits off
contractions (``"'s"``) and never joins letters with digits. Later OpenAI tokenizers refine it:
``cl100k`` caps digit runs at three (numbers tokenize more regularly) and lets punctuation keep
its trailing newlines; ``o200k`` also splits CamelCase words.

The strings below are exactly the ones tiktoken uses, so the chunks, and therefore the token
ids, are identical. They need the third-party ``regex`` module for Unicode classes such as
``\\p{L}`` (any letter) and possessive quantifiers (``++``).

Speed: matching Unicode property classes costs time on every character. Most text is pure
ASCII, and for ASCII text each class has a small exact equivalent (``\\p{L}`` is ``[A-Za-z]``,
``\\s`` is the six ASCII whitespace characters), which the standard library's ``re`` matches
about twice as fast. :class:`Splitter` uses such a hand-written ASCII twin when the input is
ASCII and the pattern has one; the tests check that both give the same chunks.
"""

from __future__ import annotations

import re
import sys

import regex

GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

PATTERNS: dict[str, str] = {"gpt2": GPT2, "cl100k": CL100K, "o200k": O200K}

# ASCII twins. In ASCII text: \p{L} = [A-Za-z], \p{Lu} = [A-Z], \p{Ll} = [a-z], \p{Lt}, \p{Lm},
# \p{Lo} and \p{M} are empty, \p{N} = [0-9], and \s (Unicode White_Space, as in tiktoken's
# Rust regex and the `regex` module) is [\t\n\x0b\x0c\r ]: note that \x1c-\x1f are *not*
# White_Space although Python's str.isspace() says they are, hence the explicit class.
_WS = r"\t\n\x0b\x0c\r "
_CONTRACTION = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
_ASCII_TWINS: dict[str, str] = {
    GPT2: (
        rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]++| ?[0-9]++| ?[^{_WS}A-Za-z0-9]++"""
        rf"""|[{_WS}]++\Z|[{_WS}]+(?![^{_WS}])|[{_WS}]"""
    ),
    CL100K: (
        rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]++|[0-9]{{1,3}}+"""
        rf"""| ?[^{_WS}A-Za-z0-9]++[\r\n]*+|[{_WS}]++\Z|[{_WS}]*[\r\n]|[{_WS}]+(?![^{_WS}])|[{_WS}]"""
    ),
    O200K: (
        rf"""[^\r\nA-Za-z0-9]?[A-Z]*[a-z]+{_CONTRACTION}|[^\r\nA-Za-z0-9]?[A-Z]+[a-z]*{_CONTRACTION}"""
        rf"""|[0-9]{{1,3}}| ?[^{_WS}A-Za-z0-9]+[\r\n/]*|[{_WS}]*[\r\n]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
    ),
}


def resolve_pattern(pattern: str) -> str:
    """Return the regex for a pattern name (``gpt2``, ``cl100k``, ``o200k``) or a custom regex.

    A custom regex is checked by compiling it; a bad one raises ``ValueError`` naming the problem.
    """
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    if not pattern:
        raise ValueError(
            f"empty pre-tokenization pattern; use one of {sorted(PATTERNS)} or a regex"
        )
    try:
        regex.compile(pattern)
    except regex.error as err:
        raise ValueError(
            f"pre-tokenization pattern {pattern!r} is neither a known name {sorted(PATTERNS)} "
            f"nor a valid regex: {err}"
        ) from None
    return pattern


def pattern_name(pattern: str) -> str | None:
    """The short name of a built-in pattern string, or None for a custom regex."""
    return next((name for name, value in PATTERNS.items() if value == pattern), None)


class Splitter:
    """Cuts text into pre-tokenization chunks with ``findall``, taking the ASCII fast path when it can."""

    def __init__(self, pattern: str) -> None:
        self.pattern = resolve_pattern(pattern)
        self._unicode = regex.compile(self.pattern)
        twin = _ASCII_TWINS.get(self.pattern)
        self._ascii = None
        if twin is not None:
            # The standard library's `re` has possessive quantifiers from Python 3.11 on.
            self._ascii = re.compile(twin) if sys.version_info >= (3, 11) else regex.compile(twin)

    def findall(self, text: str) -> list[str]:
        """All chunks of ``text`` in order; their concatenation is ``text`` for the built-in patterns."""
        if self._ascii is not None and text.isascii():
            return self._ascii.findall(text)
        return self._unicode.findall(text)

    def findall_unicode(self, text: str):
        """The general path, always: for tests that compare it with the ASCII fast path."""
        return self._unicode.findall(text)
