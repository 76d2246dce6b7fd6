"""The SentencePiece-style BPE of Llama 2, Mistral, Mixtral and Gemma, read from a tokenizer.json.

How it differs from the byte-level BPE of ``bpe.py`` (GPT-2, Llama 3, Qwen):

- **Characters, not bytes.** A token is a string of characters and a space is written ``"▁"``
  (``hf_pipeline.py`` puts the mark in and takes it out). A character the vocabulary lacks is
  spelled with *byte tokens*, ``"🙂"`` as ``<0xF0><0x9F><0x99><0x82>`` ("byte fallback"), so
  nothing is unknown here either.
- **Pairs are ranked, not tokens** (``pair_merge.py``), and there is no regex pre-tokenizer:
  the whole text between two added tokens, spaces included, is one "word" (Llama 2, Gemma), or
  it is cut before each ``"▁"`` (a ``Metaspace`` pre-tokenizer with ``split``).

Encoding a text, in Hugging Face's order (:meth:`SentencePieceBPE._encode`):

1. cut it at the added tokens that apply (``added_tokens.py``; special ones only if allowed);
2. normalize each piece between them, and cut again at the added tokens matched normalized;
3. pre-tokenize each part into words;
4. BPE each word: one symbol per character (or its byte tokens), then ``merge_pairs``.

Speed without changing an id: a word may be a whole paragraph, but no merge can join the text
before a ``"▁"`` to the ``"▁"`` unless some merge ``(a, b)`` has ``a`` ending in that
character and ``b`` starting with ``"▁"``. Those characters are found once from the merges;
words are cut before every other ``"▁"`` (and newline, and around characters spelled in byte
tokens: ``_cut``) and each piece, typically a word with its leading ``"▁"``, is merged once and
remembered (``_WordCache``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import chain

from buildlm.atomic import atomic_write_text
from buildlm.tokenizer.added_tokens import AddedMatcher, read_added_tokens
from buildlm.tokenizer.fast_encode import encode_batch
from buildlm.tokenizer.files import read_json
from buildlm.tokenizer.hf_json import bpe_model
from buildlm.tokenizer.hf_pipeline import (
    SPACE_MARK,
    normalize,
    pre_tokenize,
    read_decoder,
    read_normalizer,
    read_pre_tokenizer,
)
from buildlm.tokenizer.pair_merge import merge_pairs
from buildlm.tokenizer.specials import Specials, allowed_specials

CACHE_MAX_WORD = 256  # longer words are merged every time, not remembered
BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>")  # tried in order when no bos is given
EOS_NAMES = ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>")


class _WordCache(dict):
    """``word -> ids``, computed on a miss (``__missing__``), cleared when full."""

    def __init__(self, compute, limit: int) -> None:
        super().__init__()
        self._compute, self._limit = compute, limit

    def __missing__(self, word: str) -> list[int]:
        ids = self._compute(word)
        if len(word) <= CACHE_MAX_WORD and self._limit > 0:
            if len(self) >= self._limit:
                self.clear()
            self[word] = ids
        return ids


class SentencePieceBPE:
    """A byte-fallback BPE ``tokenizer.json`` (Llama 2, Mistral, Mixtral, Gemma 1/2/3).

    It has the interface of `buildlm.tokenizer.Tokenizer` (``encode`` with the same special-token
    rules, ``decode``, ``token_bytes``, ``special_tokens``, ``eot_token``, ``vocab_size``,
    ``save``), and ``Tokenizer.load`` / ``Tokenizer.from_hf`` return one for such a file. Build
    it with :meth:`from_hf`. ``bos`` / ``eos`` name the beginning / end-of-sequence tokens
    (``tokenizer_config.json`` says which; by default the first of `BOS_NAMES` / `EOS_NAMES`
    that is a token here).
    """

    def __init__(
        self,
        data: dict,
        path: str | os.PathLike = "tokenizer.json",
        bos: str | None = None,
        eos: str | None = None,
        cache_size: int = 100_000,
    ) -> None:
        model = data["model"]
        self._json = {k: v for k, v in data.items() if k != "model"}  # kept for save_hf
        self._model_json = {k: v for k, v in model.items() if k not in ("vocab", "merges")}
        self._vocab: dict[str, int] = dict(model["vocab"])
        self._added = read_added_tokens(data.get("added_tokens"), path)
        self._normalizer = read_normalizer(data.get("normalizer"), path)
        self._pre_tokenizer = read_pre_tokenizer(data.get("pre_tokenizer"), path)
        self._decoder = read_decoder(data.get("decoder"), path)
        self._special = {t.content: t.id for t in self._added if t.special}
        self._pieces = {i: t for t, i in self._vocab.items()}
        # id -> the text the decoder reads: an added token's content (normalized, for one that
        # is matched normalized: Hugging Face decodes it so), else the vocabulary's token
        self._shown = self._pieces | {
            t.id: normalize(self._normalizer, t.content) if t.normalized else t.content
            for t in self._added
        }
        self._vocab_size = max(self._shown) + 1 if self._shown else 0
        self._merges, self._merges_as_strings = _read_merges(
            model.get("merges") or [], self._vocab, path
        )
        unk = model.get("unk_token")
        if unk is not None and unk not in self._vocab:
            raise ValueError(f"{path}: unk_token {unk!r} is not in the vocabulary")
        self._unk = self._vocab.get(unk) if unk is not None else None
        self._fuse_unk = bool(model.get("fuse_unk"))
        self._ignore_merges = bool(model.get("ignore_merges"))
        byte_ids = [self._vocab.get(f"<0x{b:02X}>") for b in range(256)]
        self._byte_ids = byte_ids if model.get("byte_fallback") else [None] * 256
        # The bytes each id stands for, in the middle of a text and as its first token.
        decoded = [
            self._decoder.token_bytes(self._shown.get(i, ""), False)
            for i in range(self._vocab_size)
        ]
        self._bytes = [b for b, _ in decoded]
        self._is_byte = [is_byte for _, is_byte in decoded]
        self.bos = (
            bos if bos is not None else next((t for t in BOS_NAMES if t in self._special), None)
        )
        self.eos = (
            eos if eos is not None else next((t for t in EOS_NAMES if t in self._special), None)
        )
        self._cut = self._cut_regex()
        self._cache = _WordCache(self._word_ids, cache_size)
        self._cache_size = cache_size
        self._matchers: dict[tuple[frozenset[str], bool], AddedMatcher | None] = {}

    # --- encoding: the algorithm -----------------------------------------------------------

    def _word_ids(self, word: str) -> list[int]:
        """Ids of one word: its characters as symbols (byte tokens for an unknown one, else
        the unknown token), then every merge that applies, lowest rank first."""
        if self._ignore_merges and word in self._vocab:
            return [self._vocab[word]]
        symbols: list[int] = []
        last_unknown = False
        for ch in word:
            i = self._vocab.get(ch)
            if i is not None:
                symbols.append(i)
                last_unknown = False
                continue
            spelled = [self._byte_ids[b] for b in ch.encode("utf-8")]
            if None not in spelled:
                symbols += spelled
                last_unknown = False
            elif self._unk is not None:
                if not (self._fuse_unk and last_unknown):
                    symbols.append(self._unk)
                last_unknown = True
        return merge_pairs(symbols, self._merges)

    def _words_ids(self, words: list[str]) -> list[int]:
        if self._cut is not None:
            words = [piece for word in words for piece in self._cut.split(word) if piece]
        return list(chain.from_iterable(map(self._cache.__getitem__, words)))

    def _encode(self, text: str, allowed: frozenset[str], at_start: bool) -> list[int]:
        """Steps 1-4 of the module docstring; ``at_start``: ``text`` begins the sequence."""
        text = _valid_text(text)
        ids: list[int] = []
        for piece, start in self._split(text, allowed, normalized=False):
            if isinstance(piece, int):
                ids.append(piece)
                continue
            normal = normalize(self._normalizer, piece)
            for part, offset in self._split(normal, allowed, normalized=True):
                if isinstance(part, int):
                    ids.append(part)
                else:
                    first = at_start and start == 0 and offset == 0
                    ids += self._words_ids(pre_tokenize(self._pre_tokenizer, part, first))
        return ids

    def _split(self, text: str, allowed: frozenset[str], normalized: bool) -> list:
        """``text`` cut at the added tokens that apply (see ``added_tokens.py``)."""
        key = (allowed, normalized)
        if key not in self._matchers:
            usable = [
                t
                for t in self._added
                if t.normalized == normalized and (not t.special or t.content in allowed)
            ]
            patterns = {normalize(self._normalizer, t.content) if normalized else t.content: t
                        for t in usable}  # fmt: skip
            self._matchers[key] = AddedMatcher(patterns) if patterns else None
        matcher = self._matchers[key]
        if matcher is not None:
            return matcher.split(text)
        return [(text, 0)] if text else []

    def encode(
        self,
        text: str,
        allowed_special: Specials = frozenset(),
        disallowed_special: Specials = "all",
    ) -> list[int]:
        """Ids of ``text``, with `Tokenizer.encode`'s rules for special tokens (``specials.py``).

        Like Hugging Face's ``encode(text, add_special_tokens=False)``: no ``<bos>`` is added.
        """
        allowed = allowed_specials(self._special, text, allowed_special, disallowed_special)
        return self._encode(text, allowed, at_start=True)

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text``, treating special-token text like any other text."""
        return self._encode(text, frozenset(), at_start=True)

    def encode_continuation(self, text: str) -> list[int]:
        """Ids of ordinary text that follows a special token in the same sequence.

        A ``Metaspace`` pre-tokenizer with ``prepend_scheme="first"`` puts a ``"▁"`` only at the
        start of a sequence, so text after ``[INST]`` gets none (as when Hugging Face encodes the
        whole rendered chat); every other tokenizer encodes it as `encode_ordinary` does.
        """
        return self._encode(text, frozenset(), at_start=False)

    def encode_batch(
        self,
        texts: Sequence[str],
        num_workers: int | None = None,
        allowed_special: Specials = frozenset(),
        disallowed_special: Specials = "all",
    ) -> list[list[int]]:
        """:meth:`encode` each text (large batches over worker processes, as `Tokenizer` does)."""
        encode = partial(
            self.encode, allowed_special=allowed_special, disallowed_special=disallowed_special
        )
        return encode_batch(encode, texts, num_workers)

    # --- decoding --------------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id inside a text: ``"▁"`` a space, ``<0xNN>`` the byte NN."""
        self._check_id(token_id)
        return self._bytes[token_id]

    def first_token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id as the first token of a text: a decoder's ``Strip`` removes the
        space a prepended ``"▁"`` became (``"▁Hello"`` -> ``b"Hello"``)."""
        self._check_id(token_id)
        return self._decoder.token_bytes(self._shown[token_id], True)[0]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of a sequence of ids (exact, even when cut inside a UTF-8 character)."""
        ids = self._id_list(ids)
        if not ids:
            return b""
        return self.first_token_bytes(ids[0]) + b"".join(map(self._bytes.__getitem__, ids[1:]))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids, as Hugging Face decodes it (special tokens included).

        A run of byte tokens that is not valid UTF-8 becomes one U+FFFD per token, as
        ``ByteFallback`` does.
        """
        ids = self._id_list(ids)
        out: list[str] = []
        run, run_tokens = bytearray(), 0
        for k, i in enumerate(ids):
            data = self.first_token_bytes(i) if k == 0 else self._bytes[i]
            if self._is_byte[i]:
                run += data
                run_tokens += 1
                continue
            if run_tokens:
                out.append(_run_text(run, run_tokens))
                run, run_tokens = bytearray(), 0
            out.append(data.decode("utf-8"))
        if run_tokens:
            out.append(_run_text(run, run_tokens))
        return "".join(out)

    def _id_list(self, ids: Iterable[int]) -> list[int]:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        for i in ids:
            self._check_id(i)
        return ids

    def _check_id(self, token_id: int) -> None:
        if not isinstance(token_id, int) or token_id not in self._shown:
            raise ValueError(
                f"token id {token_id!r} is not in the vocabulary "
                f"(ids run from 0 to {self.vocab_size - 1})"
            )

    # --- vocabulary ------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ordinary or added): the model's embedding rows."""
        return self._vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id (``{"<s>": 1, "</s>": 2, ...}``)."""
        return dict(self._special)

    @property
    def eot_token(self) -> int | None:
        """The id of the end-of-sequence token (``</s>``, ``<eos>``), where generation stops."""
        return self._special.get(self.eos) if self.eos is not None else None

    # --- files -----------------------------------------------------------------------------

    @classmethod
    def from_hf(
        cls, path: str | os.PathLike, data: object = None, bos: str | None = None,
        eos: str | None = None,
    ) -> SentencePieceBPE:  # fmt: skip
        """Read a byte-fallback BPE ``tokenizer.json``; any problem is a one-line ``ValueError``
        naming the file and what is not supported."""
        if data is None:
            data = read_json(path)
        model = bpe_model(path, data)
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise ValueError(f"{path}: BPE {key}={model[key]!r} is not supported")
        if model.get("dropout"):
            raise ValueError(
                f"{path}: BPE dropout={model['dropout']} (random merges) is not supported"
            )
        return cls(data, path, bos, eos)

    def to_hf_json(self) -> dict:
        """The tokenizer.json content: the file read, with the same vocabulary and merges."""
        merges = [(self._pieces[a], self._pieces[b]) for (a, b), _ in
                  sorted(self._merges.items(), key=lambda item: item[1][0])]  # fmt: skip
        return {
            **self._json,
            "added_tokens": [t.to_json() for t in self._added],
            "model": {
                **self._model_json,
                "vocab": self._vocab,
                "merges": [f"{a} {b}" if self._merges_as_strings else [a, b] for a, b in merges],
            },
        }

    def save_hf(self, path: str | os.PathLike) -> None:
        """Write the Hugging Face ``tokenizer.json`` (atomically); it gives the same ids."""
        import json

        atomic_write_text(path, json.dumps(self.to_hf_json(), ensure_ascii=False))

    save = save_hf  # buildlm's own format is byte-level only: a checkpoint keeps tokenizer.json

    # --- speed: where words may be cut ----------------------------------------------------

    def _cut_regex(self) -> re.Pattern | None:
        """A regex that cuts a word where no merge can join the two sides, or ``None``.

        Between characters ``x`` and ``y`` a cut is safe when no merge ``(a, b)`` has ``a``
        ending in ``x`` and ``b`` starting with ``y``: the two sides are then merged
        independently, in the same order, to the same ids. Cuts are made before ``"▁"`` and
        ``"\\n"`` where that holds, and around characters the vocabulary lacks (spelled in byte
        tokens, which no merge touches). Not used with ``ignore_merges`` (which looks at whole
        words), or where merges involve byte tokens or the unknown token.
        """
        odd = {i for i in self._byte_ids if i is not None} | {self._unk}
        if self._ignore_merges:
            return None
        joined: dict[str, set[str]] = {SPACE_MARK: set(), "\n": set()}  # y -> the x of its merges
        for a, b in self._merges:
            if a in odd or b in odd:
                return None
            ends = joined.get(self._pieces[b][:1])
            if ends is not None:
                ends.add(self._pieces[a][-1])
        cuts = []
        for c, ends in joined.items():
            if c in self._vocab:
                behind = f"(?<![{_char_class(ends)}])" if ends else ""
                cuts.append(f"{behind}(?={re.escape(c)})")
        known = _char_class({t for t in self._vocab if len(t) == 1})
        if None not in self._byte_ids and known:  # every unknown character is spelled in bytes
            cuts += [f"(?=[^{known}])", f"(?<=[^{known}])"]
        return re.compile("|".join(cuts)) if cuts else None

    # --- pickling --------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        # Sent to encode_batch's worker processes: the file's content, not the caches.
        return {"data": self.to_hf_json(), "bos": self.bos, "eos": self.eos,
                "cache_size": self._cache_size}  # fmt: skip

    def __setstate__(self, state: dict) -> None:
        self.__init__(
            state["data"], "tokenizer.json", state["bos"], state["eos"], state["cache_size"]
        )

    def __repr__(self) -> str:
        return (
            f"SentencePieceBPE(vocab_size={self.vocab_size}, bos={self.bos!r}, eos={self.eos!r}, "
            f"{len(self._special)} special tokens)"
        )


def _read_merges(entries: list, vocab: dict[str, int], path) -> tuple[dict, bool]:
    """``(left id, right id) -> (rank, merged id)``, and whether the file wrote ``"a b"``."""
    merges: dict[tuple[int, int], tuple[int, int]] = {}
    as_strings = bool(entries) and isinstance(entries[0], str)
    for rank, entry in enumerate(entries):
        try:
            left, right = entry.split(" ") if isinstance(entry, str) else entry
            merges[vocab[left], vocab[right]] = (rank, vocab[left + right])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}: merge {rank} {entry!r} is not two tokens of the vocabulary whose "
                "concatenation is a token too"
            ) from None
    return merges, as_strings


def _char_class(chars: set[str]) -> str:
    """The inside of a regex character class matching exactly ``chars``."""
    return "".join(re.escape(c) for c in sorted(chars))


def _run_text(run: bytes, tokens: int) -> str:
    """A run of byte tokens as text: its UTF-8, or one U+FFFD per token if invalid."""
    try:
        return bytes(run).decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd" * tokens


def _valid_text(text: str) -> str:
    """``text``, with lone surrogates (not encodable as UTF-8) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
