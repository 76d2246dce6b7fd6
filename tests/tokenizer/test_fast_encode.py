"""The fast encoder (``fast_encode.py``) against the plain loop of ``bpe.py``: the same ids.

``Tokenizer(..., cache_size=0)`` encodes the plain way, every chunk merged by itself. The
default tokenizer goes through :class:`FastEncoder` (a chunk cache whose new chunks get
placeholders that one batched merge fills, a garbage-collector pause, a lock). Checked here:
both paths give the same ids on real text, special tokens included, and the cache's
placeholders never leak into results or stay behind after errors.
"""

from __future__ import annotations

import gc
import threading

import pytest

from buildlm.tokenizer import Tokenizer
from buildlm.tokenizer.fast_encode import FastEncoder
from buildlm.tokenizer.merge import BatchMerger
from buildlm.tokenizer.patterns import GPT2, Splitter


def _tokenizer(ranks: dict[bytes, int], pattern: str, specials=None, **kwargs) -> Tokenizer:
    return Tokenizer({i: token for token, i in ranks.items()}, pattern, specials, **kwargs)


def _real_text(shakespeare: str, specials: list[str]) -> str:
    """Shakespeare with special tokens, a lone surrogate and long chunks mixed in."""
    parts = [shakespeare[:150_000], " \ud83d ", "a" * 1000, "\n" * 300, shakespeare[150_000:300_000]]
    for k, token in enumerate(specials):
        parts.insert(2 * k + 1, f"{token}{token}x{token}")
    return "".join(parts)


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
def test_plain_loop_equals_fast_path_on_real_text(name, ranks, gpt2, cl100k, shakespeare):
    specials = {"gpt2": gpt2, "cl100k": cl100k}[name].special_tokens
    plain = _tokenizer(ranks[name], name, specials, cache_size=0)
    fast = _tokenizer(ranks[name], name, specials)  # a fresh, cold cache
    text = _real_text(shakespeare, list(specials))
    expected = plain.encode(text, allowed_special="all")
    assert fast.encode(text, allowed_special="all") == expected  # cold: placeholders, one merge
    assert fast.encode(text, allowed_special="all") == expected  # warm: from the cache
    assert sum(i in specials.values() for i in expected) == 3 * len(specials)
    assert fast.encode_ordinary(text) == plain.encode_ordinary(text)  # specials as plain text
    assert plain.decode(expected) == text.replace("\ud83d", "\ufffd")


def _no_placeholders_left(encoder: FastEncoder) -> bool:
    cache = encoder.cache
    return not cache.pending and all(cache.values())  # no chunk of these texts has no ids


class FailsOnce(BatchMerger):
    """A merger whose first batch fails (as a ``MemoryError`` or Ctrl-C part-way would)."""

    failed = False

    def merge_into(self, pieces: list[bytes], targets: list[list[int]]) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("merge failed")
        super().merge_into(pieces, targets)


@pytest.fixture(scope="module")
def plain_gpt2(ranks, gpt2) -> Tokenizer:
    return _tokenizer(ranks["gpt2"], "gpt2", gpt2.special_tokens, cache_size=0)


def test_cold_encode_equals_chunk_by_chunk(ranks, plain_gpt2, shakespeare):
    text = shakespeare[:400_000]
    encoder = FastEncoder(ranks["gpt2"], 100_000)
    chunks = Splitter(GPT2).findall(text)
    expected = plain_gpt2.encode_ordinary(text)
    assert encoder.encode(chunks) == expected  # cold: new chunks are merged together
    assert encoder.encode(chunks) == expected  # warm: from the cache
    assert _no_placeholders_left(encoder)


def test_small_cache_with_batches(ranks, ref_gpt2, shakespeare):
    # The cache clears itself many times during one pass; placeholders must survive that.
    encoder = FastEncoder(ranks["gpt2"], 500)
    text = shakespeare[:200_000]
    chunks = Splitter(GPT2).findall(text)
    assert encoder.encode(chunks) == ref_gpt2.encode_ordinary(text)
    assert encoder.encode(chunks) == ref_gpt2.encode_ordinary(text)
    assert len(encoder.cache) <= 500


def test_cache_is_bounded(ranks, ref_gpt2):
    encoder = FastEncoder(ranks["gpt2"], 100)
    words = " ".join(f"w{i}x" for i in range(1000)) + " " + "z" * 5000
    chunks = Splitter(GPT2).findall(words)
    assert encoder.encode(chunks) == ref_gpt2.encode(words)
    assert len(encoder.cache) <= 100
    assert encoder.encode(chunks) == ref_gpt2.encode(words)


def test_custom_pattern_with_empty_chunks(ranks):
    # r"\w*" matches the empty string between words: findall yields empty chunks, and the
    # numpy merger (min_batch=0) must give them no ids.
    plain = _tokenizer(ranks["gpt2"], r"\w*|\W", cache_size=0)
    text = " ".join(["abcab", "aaaaa", "cab", "b", "tokenization"] * 100)
    chunks = Splitter(r"\w*|\W").findall(text)
    assert "" in chunks and len(set(chunks)) >= 5
    encoder = FastEncoder(ranks["gpt2"], 100_000, BatchMerger(ranks["gpt2"], min_batch=0))
    assert encoder.encode(chunks) == plain.encode_ordinary(text)


def test_failed_pass_leaves_no_placeholder(ranks, gpt2, ref_gpt2, shakespeare):
    # A lone surrogate fails to encode part-way through the pass (the tokenizer then retries
    # with U+FFFD, as tiktoken does). The first attempt's placeholders must not stay cached.
    text = shakespeare[:20_000] + " \ud83d " + shakespeare[20_000:40_000]
    encoder = FastEncoder(ranks["gpt2"], 100_000)
    with pytest.raises(UnicodeEncodeError):
        encoder.encode(Splitter(GPT2).findall(text))
    assert _no_placeholders_left(encoder)
    assert _tokenizer(ranks["gpt2"], "gpt2").encode_ordinary(text) == ref_gpt2.encode_ordinary(text)

    encoder = FastEncoder(ranks["gpt2"], 100_000, FailsOnce(ranks["gpt2"]))
    chunks = Splitter(GPT2).findall(shakespeare[:20_000])
    with pytest.raises(RuntimeError, match="merge failed"):
        encoder.encode(chunks)
    assert _no_placeholders_left(encoder)
    assert encoder.encode(chunks) == ref_gpt2.encode_ordinary(shakespeare[:20_000])


def test_threads_share_one_encoder(ranks, ref_gpt2, shakespeare):
    encoder = FastEncoder(ranks["gpt2"], 100_000)
    texts = [shakespeare[i : i + 60_000] for i in range(0, 480_000, 60_000)]
    results: dict[int, list[int]] = {}

    def work(i: int) -> None:
        for _ in range(2):  # cold, then (partly) warm
            results[i] = encoder.encode(Splitter(GPT2).findall(texts[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(texts))] == [ref_gpt2.encode_ordinary(t) for t in texts]
    assert _no_placeholders_left(encoder)


def test_garbage_collector_is_left_as_found(ranks, shakespeare):
    chunks = Splitter(GPT2).findall(shakespeare[:100_000])  # enough chunks for the pause
    assert gc.isenabled()
    FastEncoder(ranks["gpt2"], 100_000).encode(chunks)
    assert gc.isenabled()
    gc.disable()
    try:
        FastEncoder(ranks["gpt2"], 100_000).encode(chunks)
        assert not gc.isenabled()
    finally:
        gc.enable()
    encoder = FastEncoder(ranks["gpt2"], 100_000, FailsOnce(ranks["gpt2"]))
    with pytest.raises(RuntimeError, match="merge failed"):
        encoder.encode(chunks)
    assert gc.isenabled()
