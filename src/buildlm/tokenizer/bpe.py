"""The byte-level BPE tokenizer: text <-> token ids, the way GPT-2, GPT-4 and tiktoken do it.

What BPE is. A language model reads integers, so text must become a sequence of ids from a fixed
vocabulary. Characters make sequences long; whole words leave no room for new words. Byte-pair
encoding (BPE) sits in between: start from small units and repeatedly *merge* the most frequent
adjacent pair into a new unit, until the vocabulary has the size you want. Frequent words end up
as one token (``" the"``), rare words as a few pieces (``" token" "ization"``).

Why bytes. If the starting units are the 256 possible bytes of UTF-8, every string, in any
language, with any emoji, can be encoded: nothing is ever "unknown". (A word tokenizer, see
``simple.py``, needs an ``<|unk|>`` token instead.)

Why pre-tokenize. Before merging, a regex (``patterns.py``) cuts the text into chunks such as
words with their leading space, numbers and punctuation runs. Merges never cross a chunk
boundary, so no token glues the end of one word to the start of the next.

Why the merge order matters when encoding. The tokenizer stores each token's rank (its id: the
order in which training created it). Encoding a chunk replays training: merge the adjacent pair
with the lowest rank first, repeatedly (``merge.py``). That reproduces the segmentations the
model saw during training, and the exact ids tiktoken produces.

Reading order. The class below starts with the algorithm: encode one chunk
(:meth:`Tokenizer._encode_chunk`), a text (:meth:`~Tokenizer.encode_ordinary`), special tokens
(:meth:`~Tokenizer.encode`), then decoding, the vocabulary, training and files. Encoding is
made fast without changing a single id by ``fast_encode.py`` (a chunk cache, batched merging, a
process pool); the tests check that both paths give the same ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from importlib import resources

from buildlm.tokenizer import buildlm_json, hf_json, openai_files
from buildlm.tokenizer.fast_encode import FastEncoder, encode_batch
from buildlm.tokenizer.files import read_json
from buildlm.tokenizer.merge import LARGE_CHUNK, merge_large, merge_small, merges_from_ranks
from buildlm.tokenizer.patterns import Splitter, pattern_name, resolve_pattern
from buildlm.tokenizer.sentencepiece_bpe import SentencePieceBPE
from buildlm.tokenizer.specials import Specials, allowed_specials, special_regex


class Tokenizer:
    """A byte-level BPE tokenizer with tiktoken-compatible encoding.

    Args:
        vocab: id -> token bytes for the ordinary (mergeable) tokens. Must contain all 256 single
            bytes. Two ids may hold the same bytes (training can create a token twice); encoding
            then uses the lower id.
        pattern: pre-tokenization regex or a name from ``patterns.PATTERNS`` (``"gpt2"``, ...).
        special_tokens: special token text -> id (ids distinct from ``vocab``'s).
        merges: the ordered merges if known; otherwise derived from the ranks when first asked.
        cache_size: how many distinct chunks to remember before the cache is cleared
            (``fast_encode.py``). ``0`` turns the speed machinery off: every chunk is then merged
            by itself, the plain way (the same ids, much slower; the reference the tests use).

    Build one with :meth:`train`, :meth:`load`, :meth:`pretrained`, :meth:`from_gpt2`,
    :meth:`from_tiktoken` or :meth:`from_merges`.
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        pattern: str = "gpt2",
        special_tokens: Mapping[str, int] | None = None,
        merges: Sequence[tuple[bytes, bytes]] | None = None,
        cache_size: int = 100_000,
    ) -> None:
        self.pattern = resolve_pattern(pattern)
        self._splitter = Splitter(self.pattern)
        self._vocab = dict(vocab)
        ranks: dict[bytes, int] = {}
        for i in sorted(self._vocab):
            ranks.setdefault(self._vocab[i], i)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(
                f"the vocabulary lacks {len(missing)} single-byte tokens (e.g. byte {missing[0]}); "
                "a byte-level BPE needs all 256"
            )
        self._ranks = ranks
        specials = dict(special_tokens or {})
        clash = [t for t, i in specials.items() if i in self._vocab or not t]
        if clash:
            raise ValueError(
                f"special token {clash[0]!r} is empty or its id {specials[clash[0]]} "
                "is already an ordinary token's id; give special tokens unused ids"
            )
        if len(set(specials.values())) != len(specials):
            raise ValueError(f"two special tokens share an id: {specials}")
        self._special = specials
        self._decoder = {**self._vocab, **{i: t.encode("utf-8") for t, i in specials.items()}}
        self._vocab_size = max(self._decoder) + 1
        self._merges = [tuple(m) for m in merges] if merges is not None else None
        self._cache_size = cache_size
        self._fast = FastEncoder(self._ranks, cache_size) if cache_size > 0 else None

    # --- encoding: the algorithm -----------------------------------------------------------

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Ids of one pre-tokenized chunk: BPE replayed on its bytes.

        Start from the chunk's single bytes and, again and again, merge the adjacent pair whose
        concatenation is the token of lowest rank (learned first), until no adjacent pair is a
        token (``merge.py``). A chunk that is a token by itself is that token, as in tiktoken.
        """
        piece = chunk.encode("utf-8")
        if piece in self._ranks:
            return [self._ranks[piece]]
        if len(piece) > LARGE_CHUNK:
            return merge_large(piece, self._ranks)  # the same rule, O(n log n) for long chunks
        return merge_small(piece, self._ranks)

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text``, treating special-token text like any other text."""
        try:
            return self._encode_chunks(self._splitter.findall(text))
        except UnicodeEncodeError:
            # Lone surrogates (e.g. from a broken UTF-16 source) cannot be UTF-8 encoded; like
            # tiktoken, replace them with U+FFFD and encode that.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_chunks(self._splitter.findall(text))

    def _encode_chunks(self, chunks: list[str]) -> list[int]:
        if self._fast is not None:
            return self._fast.encode(chunks)  # the same ids, fast (``fast_encode.py``)
        ids: list[int] = []
        for chunk in chunks:
            ids.extend(self._encode_chunk(chunk))
        return ids

    def encode(
        self,
        text: str,
        allowed_special: Specials = frozenset(),
        disallowed_special: Specials = "all",
    ) -> list[int]:
        """Ids of ``text``, with tiktoken's rules for special tokens.

        Special-token text in the input (``"<|endoftext|>"``) is a risk: a user could inject a
        document boundary. So by default (``disallowed_special="all"``) it raises ``ValueError``.
        Pass ``allowed_special={"<|endoftext|>"}`` (or ``"all"``) to encode it as the special id,
        or ``disallowed_special=()`` to encode it as ordinary text.
        """
        allowed = allowed_specials(self._special, text, allowed_special, disallowed_special)
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for m in special_regex(allowed).finditer(text):
            ids += self.encode_ordinary(text[start : m.start()])
            ids.append(self._special[m.group()])
            start = m.end()
        ids += self.encode_ordinary(text[start:])
        return ids

    def encode_batch(
        self,
        texts: Sequence[str],
        num_workers: int | None = None,
        allowed_special: Specials = frozenset(),
        disallowed_special: Specials = "all",
    ) -> list[list[int]]:
        """:meth:`encode` each text; large batches are split over a pool of worker processes.

        ``num_workers`` defaults to the number of CPUs. The result is the same as encoding the
        texts one by one (each worker runs this same code); batches under about a megabyte stay
        in this process, where starting workers would cost more than it saves.
        """
        encode = partial(
            self.encode, allowed_special=allowed_special, disallowed_special=disallowed_special
        )
        return encode_batch(encode, texts, num_workers)

    # --- decoding --------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of a sequence of ids (exact, even when cut inside a UTF-8 character)."""
        if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
            ids = ids.tolist()
        elif not isinstance(ids, (list, tuple)):
            ids = list(ids)
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in self._decoder)
            raise ValueError(
                f"token id {bad!r} is not in the vocabulary "
                f"(ids run from 0 to {self.vocab_size - 1})"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids. Bytes that are not valid UTF-8 (a sequence cut inside a
        character) become U+FFFD, as in tiktoken's ``decode(errors="replace")``."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # --- vocabulary ------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ordinary or special): the model's embedding rows."""
        return self._vocab_size

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        """The merges in order (first = learned first = highest priority), as byte pairs."""
        if self._merges is None:
            self._merges = merges_from_ranks(self._ranks)
        return list(self._merges)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id (e.g. ``{"<|endoftext|>": 50256}``)."""
        return dict(self._special)

    @property
    def eot_token(self) -> int | None:
        """The id of ``<|endoftext|>`` if this tokenizer has it."""
        return self._special.get("<|endoftext|>")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (a special token's bytes are its UTF-8 text)."""
        try:
            return self._decoder[token_id]
        except (KeyError, TypeError):
            raise ValueError(
                f"token id {token_id!r} is not in the vocabulary "
                f"(ids run from 0 to {self.vocab_size - 1})"
            ) from None

    # --- training and the standard layout --------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: str | os.PathLike | Iterable[str | os.PathLike],
        vocab_size: int,
        pattern: str = "gpt2",
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        progress: bool = True,
        strict: bool = False,
    ) -> Tokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from text (see ``training.py``).

        ``texts`` is a string, an iterable of strings, or file paths (``pathlib.Path``; a
        ``str`` is always text). ``strict`` refuses a ``vocab_size`` the text cannot reach.
        """
        from buildlm.tokenizer.training import train_bpe

        special_tokens = tuple(special_tokens)
        merges = train_bpe(
            texts,
            vocab_size,
            pattern=pattern,
            special_tokens=special_tokens,
            progress=progress,
            strict=strict,
        )
        return cls.from_merges(merges, pattern, special_tokens)

    @classmethod
    def from_merges(
        cls,
        merges: Sequence[tuple[bytes, bytes]],
        pattern: str = "gpt2",
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        byte_tokens: Sequence[bytes] | None = None,
    ) -> Tokenizer:
        """The standard layout: ids 0..255 the single bytes (in byte order unless ``byte_tokens``
        gives another order), then one id per merge in order, then the special tokens."""
        byte_tokens = (
            list(byte_tokens) if byte_tokens is not None else [bytes([b]) for b in range(256)]
        )
        vocab = dict(enumerate(byte_tokens))
        known = set(byte_tokens)
        for i, (left, right) in enumerate(merges):
            for part in (left, right):
                if part not in known:
                    raise ValueError(
                        f"merge {i} ({left!r}, {right!r}) uses {part!r}, which no earlier "
                        "merge created; merges must be in training order"
                    )
            vocab[256 + i] = left + right
            known.add(left + right)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"duplicate special tokens in {list(special_tokens)}")
        specials = {t: 256 + len(merges) + k for k, t in enumerate(special_tokens)}
        return cls(vocab, pattern, specials, merges=merges)

    # --- files -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write one human-readable JSON file (``buildlm_json.py``) atomically."""
        merges = self.merges
        byte_tokens = [self._vocab.get(i) for i in range(256)]
        standard = (
            all(b is not None and len(b) == 1 for b in byte_tokens)
            and all(self._vocab.get(256 + i) == a + b for i, (a, b) in enumerate(merges))
            and len(self._vocab) == 256 + len(merges)
        )
        if not standard:
            raise ValueError(
                "cannot save this tokenizer: its ids are not 256 byte tokens followed by "
                "one token per merge in order"
            )
        buildlm_json.write_json_tokenizer(
            path, self.pattern, pattern_name(self.pattern), byte_tokens, merges, self._special
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer | SentencePieceBPE:
        """Read a file written by :meth:`save` (or a Hugging Face ``tokenizer.json``, see
        :meth:`from_hf`).

        A corrupted file raises ``ValueError`` naming it and the problem.
        """
        data = read_json(path)
        if hf_json.is_hf_tokenizer(data):
            return cls.from_hf(path, data)
        pattern, byte_tokens, merges, specials = buildlm_json.read_json_tokenizer(path, data)
        try:
            return cls._from_layout(pattern, byte_tokens, merges, specials)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def _from_layout(cls, pattern, byte_tokens, merges, specials) -> Tokenizer:
        by_order = cls.from_merges(merges, pattern, (), byte_tokens=byte_tokens)
        return cls(by_order._vocab, pattern, specials, merges=merges)

    @classmethod
    def from_gpt2(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> Tokenizer:
        """GPT-2's tokenizer from its ``encoder.json`` and ``vocab.bpe`` (plain or ``.gz``)."""
        vocab, merges, specials = openai_files.read_gpt2(encoder_json, vocab_bpe)
        return cls(vocab, "gpt2", specials, merges=merges)

    @classmethod
    def pretrained(cls, name: str = "gpt2") -> Tokenizer:
        """A tokenizer shipped with buildlm; only ``"gpt2"`` (the files are in ``assets/gpt2``)."""
        if name != "gpt2":
            raise ValueError(
                f"unknown pretrained tokenizer {name!r}; available: ['gpt2'] "
                "(load others with Tokenizer.from_tiktoken or Tokenizer.load)"
            )
        folder = resources.files("buildlm.tokenizer") / "assets" / "gpt2"
        with resources.as_file(folder) as path:
            return cls.from_gpt2(path / "encoder.json.gz", path / "vocab.bpe.gz")

    @classmethod
    def from_tiktoken(
        cls,
        path: str | os.PathLike,
        pattern: str,
        special_tokens: Mapping[str, int] | None = None,
    ) -> Tokenizer:
        """A tokenizer from a tiktoken rank file (e.g. ``cl100k_base.tiktoken``, ``.gz`` accepted).

        The file holds no pattern or special tokens, so pass them: for cl100k_base,
        ``pattern="cl100k"`` and ``{"<|endoftext|>": 100257, ...}``.
        """
        return cls(openai_files.read_tiktoken(path), pattern, special_tokens)

    @classmethod
    def from_hf(
        cls, tokenizer_json: str | os.PathLike, data: object = None
    ) -> Tokenizer | SentencePieceBPE:
        """A Hugging Face ``tokenizer.json``: a byte-level BPE (GPT-2, Llama 3, Qwen) as a
        `Tokenizer`; a SentencePiece-style one with byte fallback (Llama 2, Mistral, Gemma) as a
        `SentencePieceBPE` (``sentencepiece_bpe.py``), which has the same interface."""
        if data is None:
            data = read_json(tokenizer_json)
        if isinstance(data, dict) and hf_json.is_sentencepiece_style(data):
            return SentencePieceBPE.from_hf(tokenizer_json, data)
        vocab, merges, specials, pattern = hf_json.read_hf_tokenizer(tokenizer_json, data)
        try:
            return cls(vocab, pattern, specials, merges=merges)
        except ValueError as err:
            raise ValueError(f"{tokenizer_json}: {err}") from None

    def save_hf(self, path: str | os.PathLike) -> None:
        """Write a Hugging Face ``tokenizer.json`` (``tokenizers.Tokenizer.from_file`` reads it)."""
        hf_json.write_hf_tokenizer(
            path,
            self._vocab,
            self.merges,
            self._special,
            self.pattern,
            pattern_name(self.pattern) == "gpt2",
        )

    # --- pickling --------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        # Sent to encode_batch's worker processes: everything but the cache and compiled regexes.
        return {
            "vocab": self._vocab,
            "pattern": self.pattern,
            "special": self._special,
            "merges": self._merges,
            "cache_size": self._cache_size,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(
            state["vocab"], state["pattern"], state["special"], state["merges"], state["cache_size"]
        )

    def __repr__(self) -> str:
        name = pattern_name(self.pattern) or "custom"
        return f"Tokenizer(vocab_size={self.vocab_size}, pattern={name!r}, special_tokens={self._special})"
