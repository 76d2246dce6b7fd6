"""Two teaching tokenizers: one id per character, and one id per word.

They show the trade-off that byte-level BPE (``bpe.py``) resolves:

- :class:`CharTokenizer` has a tiny vocabulary (the characters of its training text) and never
  needs to guess, but makes long sequences, and a character it never saw cannot be encoded.
- :class:`WordTokenizer` (the "SimpleTokenizerV2" of *Build a Large Language Model (From
  Scratch)*) splits on whitespace and punctuation and gives each distinct word an id. Sequences
  are short, but every word missing from the training text collapses into one ``<|unk|>`` token,
  and the vocabulary grows with every new word form. ``<|endoftext|>`` marks document boundaries.

Both have the same interface as :class:`~buildlm.tokenizer.Tokenizer`: ``encode``, ``decode``,
``vocab_size``, ``save`` and ``load`` (a small JSON file).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

from buildlm.atomic import atomic_write_text
from buildlm.tokenizer.files import read_text

UNK = "<|unk|>"
EOT = "<|endoftext|>"


def _load_json(path: str | os.PathLike, kind: str) -> dict:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != kind
        or not isinstance(data.get("vocab"), list)
    ):
        raise ValueError(
            f'{path}: not a {kind} file (expected "format": "{kind}" and a "vocab" list)'
        )
    return data


def _check_ids(ids: Iterable[int], size: int) -> list[int]:
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    for i in ids:
        if not isinstance(i, int) or not 0 <= i < size:
            raise ValueError(
                f"token id {i!r} is not in the vocabulary (ids run from 0 to {size - 1})"
            )
    return ids


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of a text."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        if not self.chars or any(len(c) != 1 for c in self.chars):
            raise ValueError("CharTokenizer needs a non-empty set of single characters")
        self._id = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from the characters that occur in ``text``."""
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._id[c] for c in text]
        except KeyError as err:
            raise ValueError(
                f"character {err.args[0]!r} is not in the vocabulary; "
                "build the tokenizer from a text that contains it"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in _check_ids(ids, self.vocab_size))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(
            path, json.dumps({"format": "buildlm-char", "vocab": self.chars}, ensure_ascii=False)
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        return cls(_load_json(path, "buildlm-char")["vocab"])


class WordTokenizer:
    """One token per word or punctuation mark, with ``<|unk|>`` and ``<|endoftext|>``.

    Splitting: on whitespace and around punctuation (``,.:;?_!"()'`` and ``--``), dropping the
    whitespace. Decoding joins tokens with spaces and removes the space before punctuation, so
    ``decode(encode(s))`` is ``s`` with its whitespace normalized, as long as all words are known.
    """

    SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
    _SPACE_BEFORE_PUNCT = re.compile(r'\s+([,.?!"()\'])')

    def __init__(self, vocab: Iterable[str]) -> None:
        words = list(dict.fromkeys(vocab))
        for special in (EOT, UNK):
            if special not in words:
                words.append(special)
        self.vocab = words
        self._id = {w: i for i, w in enumerate(words)}
        self.unk_id = self._id[UNK]
        self.eot_id = self._id[EOT]

    @classmethod
    def split(cls, text: str) -> list[str]:
        """The word and punctuation pieces of ``text``."""
        return [piece for piece in (p.strip() for p in cls.SPLIT.split(text)) if piece]

    @classmethod
    def from_text(cls, text: str) -> WordTokenizer:
        """Vocabulary: the sorted distinct pieces of ``text``, then ``<|endoftext|>``, ``<|unk|>``."""
        return cls(sorted(set(cls.split(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of the pieces; unknown pieces become ``<|unk|>``."""
        return [self._id.get(piece, self.unk_id) for piece in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        text = " ".join(self.vocab[i] for i in _check_ids(ids, self.vocab_size))
        return self._SPACE_BEFORE_PUNCT.sub(r"\1", text)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(
            path, json.dumps({"format": "buildlm-word", "vocab": self.vocab}, ensure_ascii=False)
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        return cls(_load_json(path, "buildlm-word")["vocab"])
