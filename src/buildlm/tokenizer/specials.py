"""Which special tokens a text may contain: tiktoken's ``allowed_special`` / ``disallowed_special``.

Special-token text in the input (``"<|endoftext|>"``) is a risk: a user could inject a document
boundary or a chat turn. So every buildlm tokenizer takes the same two arguments:

- ``allowed_special``: the special tokens whose text becomes the special id (``"all"`` for all);
- ``disallowed_special``: the special tokens whose text raises ``ValueError`` (default
  ``"all"``: every special token not allowed). ``()`` encodes such text as ordinary text.

Both the byte-level BPE (``bpe.py``) and the SentencePiece-style BPE (``sentencepiece_bpe.py``)
call :func:`allowed_specials` first and then cut the text at :func:`special_regex`'s matches.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Literal

Specials = Literal["all"] | Collection[str]


def allowed_specials(
    special_tokens: Mapping[str, int],
    text: str,
    allowed_special: Specials,
    disallowed_special: Specials,
) -> frozenset[str]:
    """The special tokens to match in ``text``; raises ``ValueError`` for a disallowed one in it
    (or for an allowed one the tokenizer does not have)."""
    allowed = special_tokens.keys() if allowed_special == "all" else allowed_special
    unknown = [t for t in allowed if t not in special_tokens]
    if unknown:
        raise ValueError(
            f"allowed_special contains {unknown[0]!r}, which is not a special token "
            f"of this tokenizer; its special tokens are {sorted(special_tokens)}"
        )
    if disallowed_special == "all":
        disallowed = special_tokens.keys() - set(allowed)
    else:
        disallowed = disallowed_special
    # One regex pass, not one scan per token: Gemma has thousands of special tokens.
    found = special_regex(frozenset(disallowed)).search(text) if disallowed else None
    if found is not None:
        token = found.group()
        raise ValueError(
            f"the text contains the special token {token!r}. To encode it as the special "
            f"token, pass allowed_special={{{token!r}}} (or 'all'); to encode it as plain "
            "text, pass disallowed_special=()"
        )
    return frozenset(allowed)


@lru_cache(maxsize=64)
def special_regex(tokens: frozenset[str]) -> re.Pattern:
    """A regex matching any of ``tokens``; longest first, so a token that is a prefix of another
    cannot shadow it (Hugging Face's "leftmost longest" rule)."""
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t))))
