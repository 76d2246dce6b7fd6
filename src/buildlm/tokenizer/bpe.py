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

Why it is fast here. Real text repeats the same chunks (``" the"``, ``","``) over and over, so
each distinct chunk is encoded once and remembered in a bounded cache; a chunk that is itself a
token needs one dictionary lookup. Encoding a whole text is then one regex ``findall`` plus one
C-level pass of cache lookups (``_lookup_chunks``). New chunks that need merging are collected
during that pass and then merged all together with numpy (``merge.BatchMerger``).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from importlib import resources
from typing import Literal

import regex

from buildlm.tokenizer import formats
from buildlm.tokenizer.merge import LARGE_CHUNK, BatchMerger, merge_large
from buildlm.tokenizer.patterns import Splitter, pattern_name, resolve_pattern

# Chunks longer than this many characters are encoded but not remembered (a 1 MB run of spaces
# would otherwise sit in the cache).
_CACHE_MAX_CHUNK = 256
# Passes over at least this many chunks pause the garbage collector (see `_encode_chunks`).
_GC_PAUSE_MIN_CHUNKS = 4096
# Texts shorter than this in total are encoded in this process; starting workers costs more.
_PARALLEL_MIN_CHARS = 1_000_000

Specials = Literal["all"] | Collection[str]


class _NeedsMerging(Exception):
    """A pass met a new chunk that needs merging (see ``Tokenizer._lookup_chunks``)."""

    def __init__(self, chunk: str) -> None:
        super().__init__(chunk)
        self.chunk = chunk


class _ChunkCache(dict):
    """``chunk -> ids``, filling itself on a miss (``__missing__``) and clearing when full.

    Being a ``dict`` subclass, lookups through ``cache.__getitem__`` stay in C; only a miss runs
    Python code. Clearing everything when full is cruder than LRU but costs nothing per lookup.

    A miss is answered at once when the chunk is a token by itself (the common case) or long.
    Any other chunk needs merging, and merging many chunks together is far faster than one by
    one (``merge.BatchMerger``). So a miss on such a chunk either stops the pass
    (:class:`_NeedsMerging`), or, while ``collecting`` is on, stores an empty list, a
    *placeholder*, and notes the chunk. After the pass, :meth:`fill` merges all noted chunks
    and fills their placeholders in place, which completes the pass's results and the cache.
    """

    def __init__(self, ranks: dict[bytes, int], max_entries: int) -> None:
        super().__init__()
        self.ranks = ranks
        self.max_entries = max_entries
        self.merger = BatchMerger(ranks)
        self.collecting = False
        # The chunks waiting for fill(), their bytes and their placeholders.
        self.pending: list[str] = []
        self.pending_pieces: list[bytes] = []
        self.placeholders: list[list[int]] = []

    def __missing__(self, chunk: str) -> Sequence[int]:
        piece = chunk.encode("utf-8")
        token = self.ranks.get(piece)
        if token is not None:
            ids: Sequence[int] = (token,)
        elif len(piece) > LARGE_CHUNK:
            ids = merge_large(piece, self.ranks)
        elif not self.collecting:
            raise _NeedsMerging(chunk)
        else:
            ids = []  # filled by fill() once the pass has met every new chunk
            self.pending.append(chunk)
            self.pending_pieces.append(piece)
            self.placeholders.append(ids)
        if len(chunk) <= _CACHE_MAX_CHUNK:
            if len(self) >= self.max_entries:
                self.clear()
            self[chunk] = ids
        return ids

    def fill(self) -> None:
        """Merge the chunks noted since the last call and fill their placeholders."""
        self.merger.merge_into(self.pending_pieces, self.placeholders)
        self._forget_pending()

    def discard_pending(self) -> None:
        """Forget the placeholders of a pass that failed, so no empty entry stays cached."""
        for chunk, ids in zip(self.pending, self.placeholders, strict=True):
            if self.get(chunk) is ids:
                del self[chunk]
        self._forget_pending()

    def _forget_pending(self) -> None:
        self.pending.clear()
        self.pending_pieces.clear()
        self.placeholders.clear()


class Tokenizer:
    """A byte-level BPE tokenizer with tiktoken-compatible encoding.

    Args:
        vocab: id -> token bytes for the ordinary (mergeable) tokens. Must contain all 256 single
            bytes. Two ids may hold the same bytes (training can create a token twice); encoding
            then uses the lower id.
        pattern: pre-tokenization regex or a name from ``patterns.PATTERNS`` (``"gpt2"``, ...).
        special_tokens: special token text -> id (ids distinct from ``vocab``'s).
        merges: the ordered merges if known; otherwise derived from the ranks when first asked.
        cache_size: how many distinct chunks to remember before the cache is cleared.

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
        self._cache = _ChunkCache(self._ranks, cache_size)
        self._lock = threading.Lock()

    # --- constructors ----------------------------------------------------------------------

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
            texts, vocab_size, pattern=pattern, special_tokens=special_tokens, progress=progress,
            strict=strict,
        )
        return cls.from_merges(merges, pattern, special_tokens)

    @classmethod
    def from_gpt2(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> Tokenizer:
        """GPT-2's tokenizer from its ``encoder.json`` and ``vocab.bpe`` (plain or ``.gz``)."""
        vocab, merges, specials = formats.read_gpt2(encoder_json, vocab_bpe)
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
        return cls(formats.read_tiktoken(path), pattern, special_tokens)

    @classmethod
    def from_hf(cls, tokenizer_json: str | os.PathLike, data: object = None) -> Tokenizer:
        """A byte-level BPE ``tokenizer.json`` from Hugging Face (GPT-2, Llama 3, Qwen, ...)."""
        vocab, merges, specials, pattern = formats.read_hf_tokenizer(tokenizer_json, data)
        try:
            return cls(vocab, pattern, specials, merges=merges)
        except ValueError as err:
            raise ValueError(f"{tokenizer_json}: {err}") from None

    def save_hf(self, path: str | os.PathLike) -> None:
        """Write a Hugging Face ``tokenizer.json`` (``tokenizers.Tokenizer.from_file`` reads it)."""
        formats.write_hf_tokenizer(
            path,
            self._vocab,
            self.merges,
            self._special,
            self.pattern,
            pattern_name(self.pattern) == "gpt2",
        )

    # --- saving and loading ----------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write one human-readable JSON file (see ``formats.py``) atomically."""
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
        formats.write_json_tokenizer(
            path, self.pattern, pattern_name(self.pattern), byte_tokens, merges, self._special
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by :meth:`save` (or a Hugging Face byte-level ``tokenizer.json``).

        A corrupted file raises ``ValueError`` naming it and the problem.
        """
        data = formats.read_json(path)
        if formats.is_hf_tokenizer(data):
            return cls.from_hf(path, data)
        pattern, byte_tokens, merges, specials = formats.read_json_tokenizer(path, data)
        try:
            return cls._from_layout(pattern, byte_tokens, merges, specials)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def _from_layout(cls, pattern, byte_tokens, merges, specials) -> Tokenizer:
        by_order = cls.from_merges(merges, pattern, (), byte_tokens=byte_tokens)
        return cls(by_order._vocab, pattern, specials, merges=merges)

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

    # --- vocabulary ------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ordinary or special): the model's embedding rows."""
        return self._vocab_size

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        """The merges in order (first = learned first = highest priority), as byte pairs."""
        if self._merges is None:
            self._merges = formats.merges_from_ranks(self._ranks)
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

    # --- encoding --------------------------------------------------------------------------

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
        if len(chunks) < _GC_PAUSE_MIN_CHUNKS or not gc.isenabled():
            return self._lookup_chunks(chunks)
        # Python's cyclic garbage collector runs after every 700 new container objects. A cold
        # pass creates tens of thousands (the cache's new entries), and the first runs walk
        # the young objects, which include the million-item lists of chunks and of results;
        # now and then a run walks every object of the process. That cost 5-10% of a cold
        # encode of Shakespeare. Nothing made here can form a reference cycle, so the collector
        # pauses for a long pass and resumes when it ends. (It is one switch for the whole
        # process: other threads' garbage waits, and a thread that turned the collector off
        # meanwhile would find it back on.)
        gc.disable()
        try:
            return self._lookup_chunks(chunks)
        finally:
            gc.enable()

    def _lookup_chunks(self, chunks: list[str]) -> list[int]:
        # The hot loop, kept in C: `map` looks every chunk up in the cache (a miss runs
        # `_ChunkCache.__missing__`), `map(ids.extend, ...)` appends each chunk's ids, and `any`
        # just drives the iteration (extend returns None, so `any` never stops early). It is
        # the same as `for chunk in chunks: ids.extend(cache[chunk])`, without a Python-level loop.
        # It stops at the first new chunk that needs merging (a warm cache meets none). The
        # chunks from there on are looked up while the cache is `collecting`: each new chunk
        # that needs merging gets a placeholder, and `fill` merges them all together and fills
        # the placeholders, which completes `results`. The lock keeps other threads from
        # reading placeholders before `fill`.
        cache = self._cache
        ids: list[int] = []
        rest = iter(chunks)
        with self._lock:
            try:
                any(map(ids.extend, map(cache.__getitem__, rest)))
                return ids
            except _NeedsMerging as stop:
                first = stop.chunk  # taken from `rest`, not looked up yet
            cache.collecting = True
            try:
                results = [cache[first]]
                results += map(cache.__getitem__, rest)
                cache.fill()
            except BaseException:
                cache.discard_pending()
                raise
            finally:
                cache.collecting = False
        any(map(ids.extend, results))
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
        allowed = self._special.keys() if allowed_special == "all" else allowed_special
        unknown = [t for t in allowed if t not in self._special]
        if unknown:
            raise ValueError(
                f"allowed_special contains {unknown[0]!r}, which is not a special token "
                f"of this tokenizer; its special tokens are {sorted(self._special)}"
            )
        if disallowed_special == "all":
            disallowed = [t for t in self._special if t not in allowed]
        else:
            disallowed = disallowed_special
        for token in disallowed:
            if token in text:
                raise ValueError(
                    f"the text contains the special token {token!r}. To encode it as the special "
                    f"token, pass allowed_special={{{token!r}}} (or 'all'); to encode it as plain "
                    "text, pass disallowed_special=()"
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for m in _special_regex(frozenset(allowed)).finditer(text):
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
        texts = list(texts)
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        workers = min(num_workers, len(texts))
        if workers <= 1 or sum(map(len, texts)) < _PARALLEL_MIN_CHARS:
            return [self.encode(t, allowed_special, disallowed_special) for t in texts]
        args = [(t, allowed_special, disallowed_special) for t in texts]
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(self,)) as pool:
            return list(
                pool.map(_encode_in_worker, args, chunksize=max(1, len(texts) // (4 * workers)))
            )

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

    def __repr__(self) -> str:
        name = pattern_name(self.pattern) or "custom"
        return f"Tokenizer(vocab_size={self.vocab_size}, pattern={name!r}, special_tokens={self._special})"


@lru_cache(maxsize=64)
def _special_regex(tokens: frozenset[str]) -> regex.Pattern:
    # Longest first, so a special token that is a prefix of another cannot shadow it.
    return regex.compile(
        "|".join(regex.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t)))
    )


_WORKER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER
    # Under the "fork" start method the worker gets a copy of this process's memory, which
    # another thread may have been encoding into (its lock held, placeholders pending).
    tokenizer._lock = threading.Lock()
    tokenizer._cache.discard_pending()
    tokenizer._cache.collecting = False
    _WORKER = tokenizer


def _encode_in_worker(args: tuple) -> list[int]:
    assert _WORKER is not None
    return _WORKER.encode(*args)
