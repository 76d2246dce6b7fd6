"""Turning a stream of token ids back into text, piece by piece, without breaking characters.

A byte-level BPE token is a run of *bytes*, not of characters: an emoji (4 bytes in UTF-8) may
be split over two or three tokens. Decoding each token on its own would print replacement
characters in the middle of a stream. `IncrementalDetokenizer` keeps the bytes of an unfinished
character back until the token that completes it arrives (Python's incremental UTF-8 decoder
does exactly that), so streamed text is always the prefix of the final text.

A SentencePiece-style token (Llama 2, Mistral, Gemma) reads the same, its ``"▁"`` a space and its
``<0xNN>`` the byte NN, except as the *first* token of a text, where a decoder may drop the space
a prepended ``"▁"`` became (``"▁Hello"`` -> ``"Hello"``): ``first_token_bytes`` gives those.

Stop strings (``stop=["\\n\\n"]``) are matched on the text, not on tokens: one stop string can
span several tokens, and one token can hold a stop string plus more text. While streaming, the
last few characters that could still be the start of a stop string are held back too.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


class IncrementalDetokenizer:
    """Feed token ids one at a time; get back the text they complete, cut at any stop string.

    ``token_bytes(id)`` gives a token's bytes (``Tokenizer.token_bytes``);
    ``first_token_bytes(id)``, if given, those of the first token pushed
    (``SentencePieceBPE.first_token_bytes``). After ``push``, ``stopped`` tells whether a stop
    string was found; the text then ends just before it.
    """

    def __init__(
        self,
        token_bytes: Callable[[int], bytes],
        stop: Sequence[str] = (),
        first_token_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self._token_bytes = token_bytes
        self._first_token_bytes = first_token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""  # all text decoded so far (cut at a stop string once one is found)
        self._emitted = 0  # how much of self.text has been handed out by push/flush
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to show (possibly empty)."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self._hold)  # a stop string may straddle the old tail
        read = self._first_token_bytes or self._token_bytes
        self._first_token_bytes = None
        self.text += self._decoder.decode(read(token_id))
        cut = self._find_stop(start)
        if cut is not None:
            self.text = self.text[:cut]
            self.stopped = True
            return self._emit(len(self.text))
        return self._emit(len(self.text) - self._hold)

    def flush(self) -> str:
        """The held-back rest, once no more tokens will come."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._emit(len(self.text))

    def _find_stop(self, start: int) -> int | None:
        hits = [i for s in self.stop if (i := self.text.find(s, start)) != -1]
        return min(hits) if hits else None

    def _emit(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        out = self.text[self._emitted : upto]
        self._emitted = upto
        return out
